"""The catalog a Dativo tap prints for ``--discover``.

Invariant: a stream's catalog schema is exactly the JSON Schema of its SCHEMA message (with
every column selected): decimal ``precision``/``scale``, ``x-arrow-type`` and ``x-sql-null``
included. singer-sdk builds catalog entries through its ``Schema`` object, which keeps only
the keys it knows; here the stream's schema dict is carried whole.

The metadata is singer-sdk's standard metadata (``inclusion``, ``automatic`` for key
properties and the replication key, ``table-key-properties``, ``selected-by-default``), and
for a SQL source what singer-sdk's SQL taps and the Singer specification add:
``schema-name``, ``is-view`` and ``valid-replication-keys`` on the stream, ``sql-datatype``
on each property, and the entry's ``table_name`` and ``is_view``.

A discovered stream that is FULL_TABLE by default carries no ``replication_method`` in its
entry (as singer-sdk's SQL taps): the SDK reads an entry's ``replication_method`` as forced,
so a ``replication-key`` set later (Meltano's ``metadata:``) would otherwise be ignored and
every run would read the whole table.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

from singer_sdk.singerlib import Catalog, CatalogEntry, MetadataMapping, Schema
from singer_sdk.singerlib.catalog import Metadata, StreamMetadata

if TYPE_CHECKING:
    from singer_sdk import Stream

    from dativo_bridge.interfaces import ArrowReader, StreamInfo
    from dativo_bridge.sdk import ArrowTap


@dataclass(frozen=True)
class SqlDetails:
    """What a SQL source knows about one stream beyond its Arrow schema.

    Attributes:
        schema_name: The database schema (``public``).
        table_name: The table or view.
        is_view: True for views and materialized views.
        sql_datatypes: Column name -> its declared SQL type (``numeric(12,2)``).
        valid_replication_keys: Columns an incremental read can use as replication key.
    """

    schema_name: str
    table_name: str
    is_view: bool
    sql_datatypes: Mapping[str, str] = field(default_factory=dict)
    valid_replication_keys: Sequence[str] = ()


#: How a tap finds the SqlDetails of one of its reader's streams (None: not a SQL stream).
DetailsOf = Callable[["ArrowReader", "StreamInfo"], "SqlDetails | None"]


@dataclass(slots=True)
class PropertyMetadata(Metadata):
    """A property's metadata with the Singer specification's ``sql-datatype``."""

    sql_datatype: str | None = None


@dataclass(slots=True)
class SqlStreamMetadata(StreamMetadata):
    """A stream's metadata with the Singer specification's ``is-view``."""

    is_view: bool | None = None


class ExactSchema(Schema):
    """A singer-sdk Schema whose ``to_dict`` is the JSON Schema it was made from."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        parsed = Schema.from_dict(dict(raw))
        super().__init__(**_values(parsed))
        self._raw = copy.deepcopy(dict(raw))

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._raw)


def _values(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def stream_metadata(
    schema: Mapping[str, Any],
    key_properties: Sequence[str],
    replication_key: str | None,
    details: SqlDetails | None = None,
    *,
    selected_by_default: bool = True,
) -> MetadataMapping:
    """singer-sdk's standard metadata for a stream, with the SQL keys when ``details``."""
    standard = MetadataMapping.get_standard_metadata(
        schema=dict(schema),
        schema_name=details.schema_name if details else None,
        key_properties=list(key_properties),
        valid_replication_keys=[replication_key] if replication_key else None,
        selected_by_default=selected_by_default,
    )
    if details is None:
        return standard
    mapping = MetadataMapping()
    for breadcrumb, entry in standard.items():
        if not breadcrumb:
            root = SqlStreamMetadata(**_values(entry))
            root.is_view = details.is_view
            root.valid_replication_keys = list(details.valid_replication_keys) or None
            mapping[breadcrumb] = root
            continue
        prop = PropertyMetadata(**_values(entry))
        if len(breadcrumb) == 2:
            prop.sql_datatype = details.sql_datatypes.get(breadcrumb[1])
        mapping[breadcrumb] = prop
    return mapping


def catalog_entry(stream: Stream, details: SqlDetails | None = None) -> CatalogEntry:
    """The catalog entry of ``stream``: its exact schema and the metadata described above."""
    entry: CatalogEntry = stream._singer_catalog_entry
    has_input = stream._tap_input_catalog is not None and bool(
        stream._tap_input_catalog.get_stream(stream.tap_stream_id)
    )
    if not has_input:
        metadata = stream_metadata(
            stream.schema,
            stream.primary_keys or (),
            stream.replication_key,
            details,
            selected_by_default=stream.selected_by_default,
        )
        # singer-sdk selects every stream of a catalog it discovered itself.
        metadata.root.selected = stream.metadata.root.selected
        if stream.forced_replication_method:
            metadata.root.forced_replication_method = stream.forced_replication_method
        entry.metadata = metadata
    entry.schema = ExactSchema(stream.schema)
    if entry.replication_method == "FULL_TABLE" and not stream.forced_replication_method:
        entry.replication_method = None
    if details is not None:
        entry.table = details.table_name
        entry.is_view = details.is_view
    return entry


def with_catalog(tap_class: type[ArrowTap], details_of: DetailsOf | None = None) -> type[ArrowTap]:
    """``tap_class`` whose catalog (``--discover``, and the working catalog when none is
    given) is made by :func:`catalog_entry`; ``details_of`` gives a SQL stream's details."""

    def _singer_catalog(self: ArrowTap) -> Catalog:
        entries = []
        for stream in self.streams.values():
            info = getattr(stream, "info", None)
            details = details_of(self.reader, info) if details_of and info else None
            entries.append((stream.tap_stream_id, catalog_entry(stream, details)))
        return Catalog(entries)

    namespace = {
        "_singer_catalog": property(_singer_catalog),
        "__doc__": tap_class.__doc__,
        "__module__": tap_class.__module__,
        "__qualname__": tap_class.__qualname__,
    }
    return cast("type[ArrowTap]", type(tap_class.__name__, (tap_class,), namespace))
