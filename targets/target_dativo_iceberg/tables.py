"""What an Iceberg table says about the stream and pipeline that write it.

Invariants:

* A table belongs to one stream: its ``dativo.stream`` table property (set when the table
  is created, in the same step as its schema, identifier fields and partition spec), or
  for tables created before that property existed, the ``dativo.stream`` of its newest
  Dativo snapshot. Another stream opening it is refused before it writes anything.
* A snapshot's ``dativo.state`` belongs to the pipeline named by its ``dativo.state-id``
  (absent: a run that had no state id, e.g. a plain Singer target). A pipeline only ever
  resumes from its own snapshots, walking back past other pipelines' snapshots.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NotInstalledError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table
from pyiceberg.transforms import Transform, parse_transform

from dativo_bridge.errors import ConfigError

logger = logging.getLogger("dativo.iceberg")

STATE_PROPERTY = "dativo.state"
STATE_ID_PROPERTY = "dativo.state-id"
STREAM_PROPERTY = "dativo.stream"


def _summary(snapshot: Any) -> Mapping[str, str]:
    summary = snapshot.summary
    return summary.additional_properties if summary is not None else {}


def _lineage(table: Table) -> Any:
    """The current snapshot and its ancestors, newest first."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None


def committed_state(table: Table, state_id: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """(stream, state) of the newest snapshot in the table's lineage that carries a
    Dativo state written by pipeline ``state_id`` (None: by a run without a state id)."""
    stream, state, _ = committed_state_at(table, state_id)
    return stream, state


def committed_state_at(
    table: Table, state_id: str | None
) -> tuple[str | None, dict[str, Any] | None, int]:
    """:func:`committed_state` and the snapshot's commit time (ms since the epoch; 0
    when there is none), to find the newest state over several tables."""
    for snapshot in _lineage(table):
        props = _summary(snapshot)
        if STATE_PROPERTY in props and props.get(STATE_ID_PROPERTY) == state_id:
            state = json.loads(props[STATE_PROPERTY])
            return props.get(STREAM_PROPERTY), state, int(snapshot.timestamp_ms)
    return None, None, 0


def committed_bookmark(table: Table, stream: str, state_id: str | None) -> Any:
    """The bookmark entry (``replication_key``, ``replication_key_value``) that pipeline
    ``state_id`` committed for ``stream`` in ``table``, or None."""
    owner, state = committed_state(table, state_id)
    if state is None or owner != stream:
        return None
    return (state.get("bookmarks") or {}).get(stream)


def table_stream(table: Table) -> str | None:
    """The stream the table belongs to (its property, else its newest Dativo snapshot)."""
    owner = table.properties.get(STREAM_PROPERTY)
    if owner:
        return owner
    for snapshot in _lineage(table):
        stream = _summary(snapshot).get(STREAM_PROPERTY)
        if stream:
            return stream
    return None


def refuse_other_stream(identifier: str, owner: str | None, stream: str) -> None:
    """A ConfigError when ``identifier`` belongs to a stream other than ``stream``."""
    if owner is not None and owner != stream:
        raise ConfigError(
            f"streams '{owner}' and '{stream}' both map to Iceberg table {identifier}: "
            f"the table belongs to stream '{owner}', and two streams in one table would "
            f"re-append each other's rows. Give stream '{stream}' a table of its own with "
            f'the setting table_names (e.g. {{"{stream}": "<table>"}})'
        )


def wanted_spec(partition_by: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(column, transform) pairs of the ``partition_by`` setting, transforms normalised."""
    return [
        (str(item["column"]), str(parse_transform(str(item.get("transform") or "identity"))))
        for item in partition_by
    ]


def _spec_of(table: Table) -> list[tuple[str, str]]:
    schema = table.schema()
    return [
        (schema.find_column_name(f.source_id) or "?", str(f.transform)) for f in table.spec().fields
    ]


def _transform_name(transform: Transform[Any, Any]) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(transform).lower()).strip("_")


def create_table(
    catalog: Catalog,
    identifier: str,
    schema: pa.Schema,
    keys: Sequence[str],
    partition_by: Sequence[Mapping[str, Any]],
    properties: Mapping[str, str],
) -> Table:
    """Create the table complete in one catalog commit: schema with identifier fields,
    partition spec and properties (``dativo.stream`` among them)."""
    converted = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(schema))
    missing = [k for k in keys if k not in converted.column_names]
    if missing:
        raise ConfigError(f"table {identifier}: key properties not in the schema: {missing}")
    try:
        iceberg = Schema(
            *converted.fields,
            identifier_field_ids=[converted.find_field(k).field_id for k in keys],
        )
    except ValueError as exc:
        raise ConfigError(
            f"table {identifier}: key properties {list(keys)} must be non-null columns to be "
            f"identifier fields: {exc}"
        ) from exc
    fields = []
    for number, (column, transform) in enumerate(wanted_spec(partition_by)):
        try:
            source = iceberg.find_field(column)
        except ValueError as exc:
            raise ConfigError(
                f"table {identifier}: partition_by column '{column}' is not in the stream"
            ) from exc
        parsed = parse_transform(transform)
        fields.append(
            PartitionField(
                source_id=source.field_id,
                field_id=1000 + number,
                transform=parsed,
                name=f"{column}_{_transform_name(parsed)}",
            )
        )
    return catalog.create_table(
        identifier,
        schema=iceberg,
        partition_spec=PartitionSpec(*fields),
        properties=dict(properties),
    )


def check_layout(
    table: Table,
    identifier: str,
    stream: str,
    keys: Sequence[str],
    partition_by: Sequence[Mapping[str, Any]],
) -> bool:
    """Check an existing table's identifier fields and partition spec against the stream's
    keys and the ``partition_by`` setting (each only when given).

    A table with no snapshot that lacks them (its creation was interrupted by a crash in
    an older version, which created it in two steps) is repaired. A table with data whose
    layout differs is a ConfigError: Dativo does not silently write into it.

    Returns:
        True when the table was changed (reload it).
    """
    have_keys = sorted(table.schema().identifier_field_names())
    keys_differ = bool(keys) and have_keys != sorted(keys)
    wanted = wanted_spec(partition_by)
    spec_differs = bool(wanted) and _spec_of(table) != wanted
    if not keys_differ and not spec_differs:
        return False
    if table.current_snapshot() is not None:
        what = []
        if keys_differ:
            what.append(f"identifier fields {have_keys}, the stream's keys are {sorted(keys)}")
        if spec_differs:
            what.append(f"partition spec {_spec_of(table)}, partition_by asks {wanted}")
        raise ConfigError(
            f"stream '{stream}': Iceberg table {identifier} has " + "; ".join(what) + ". "
            "Dativo does not change the layout of a table that holds data: change the "
            "settings to match the table, or give the stream a new table (table_names)"
        )
    logger.warning(
        "table %s has no data and lacks its identifier fields or partition spec "
        "(an interrupted creation): setting them now",
        identifier,
    )
    with table.transaction() as tx:
        if keys_differ:
            with tx.update_schema() as update:
                update.set_identifier_fields(*keys)
        if spec_differs:
            with tx.update_spec() as spec:
                for field in table.spec().fields:
                    spec.remove_field(field.name)
                for column, transform in wanted:
                    parsed = parse_transform(transform)
                    spec.add_field(column, parsed, f"{column}_{_transform_name(parsed)}")
    return True


def check_writable_spec(table: Table, identifier: str, stream: str) -> None:
    """A ConfigError when the table's partition spec has a transform pyiceberg cannot
    compute on Arrow here (all but ``identity`` need the ``pyiceberg-core`` package):
    said when the stream opens, not as an import error at its first batch."""
    schema = table.schema()
    for field in table.spec().fields:
        source = schema.find_field(field.source_id)
        try:
            field.transform.pyarrow_transform(source.field_type)
        except NotInstalledError as exc:
            raise ConfigError(
                f"stream '{stream}': Iceberg table {identifier} is partitioned by "
                f"{field.transform} of '{source.name}', which pyiceberg computes only with "
                "the pyiceberg-core package: pip install 'pyiceberg[pyiceberg-core]', or "
                "partition by identity"
            ) from exc
