"""IcebergWriter: one stream into one Iceberg table, one snapshot per checkpoint, with the
Singer STATE that the snapshot makes durable in its summary (exactly-once resumption)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table
from pyiceberg.transforms import Transform, parse_transform

from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from targets.iceberg.types import iceberg_schema, to_iceberg

logger = logging.getLogger("dativo.iceberg")

STATE_PROPERTY = "dativo.state"
STREAM_PROPERTY = "dativo.stream"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_CATALOGS: dict[str, Catalog] = {}

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "catalog": {
            "type": "object",
            "description": (
                "pyiceberg catalog properties (type: rest|sql|glue|hive|..., uri, warehouse, "
                "s3.endpoint, ...). Default: an embedded SQL catalog on SQLite in `warehouse`."
            ),
        },
        "catalog_name": {"type": "string", "default": "dativo"},
        "warehouse": {
            "type": "string",
            "default": "output/iceberg",
            "description": "Directory of the embedded catalog and its tables.",
        },
        "namespace": {"type": "string", "default": "singer"},
        "table_names": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Table name per stream (default: the stream name).",
        },
        "partition_by": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "column": {"type": "string"},
                    "transform": {
                        "type": "string",
                        "description": "identity, year, month, day, hour, bucket[N], truncate[N]",
                    },
                },
            },
        },
        "load_method": {
            "type": "string",
            "enum": ["append", "upsert", "overwrite"],
            "default": "append",
        },
        "target_file_size_mb": {"type": "number", "default": 256},
        "compression": {"type": "string", "default": "zstd"},
        "commit_retries": {"type": "integer", "default": 5},
    },
}


def table_name(stream: str, config: Mapping[str, Any]) -> str:
    """The table a stream lands in (``table_names`` override, else the stream name)."""
    names = config.get("table_names") or {}
    return str(names.get(stream) or _UNSAFE.sub("_", stream).strip("_").lower() or "stream")


def open_catalog(config: Mapping[str, Any]) -> Catalog:
    """The configured catalog, or the embedded SQLite one under ``warehouse``."""
    props = {str(k): str(v) for k, v in (config.get("catalog") or {}).items()}
    name = str(config.get("catalog_name") or "dativo")
    if not props:
        warehouse = Path(str(config.get("warehouse") or "output/iceberg")).resolve()
        warehouse.mkdir(parents=True, exist_ok=True)
        props = {
            "type": "sql",
            "uri": f"sqlite:///{warehouse / 'catalog.db'}",
            "warehouse": warehouse.as_uri(),
        }
    key = json.dumps([name, sorted(props.items())])
    if key not in _CATALOGS:
        _CATALOGS[key] = load_catalog(name, **props)
    return _CATALOGS[key]


def _namespace(config: Mapping[str, Any]) -> str:
    return str(config.get("namespace") or "singer")


def _committed_state(table: Table) -> tuple[str | None, dict[str, Any] | None]:
    """(stream, state) from the newest snapshot that carries a Dativo state."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        props = summary.additional_properties if summary is not None else {}
        if STATE_PROPERTY in props:
            return props.get(STREAM_PROPERTY), json.loads(props[STATE_PROPERTY])
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None, None


class IcebergWriter(ArrowWriter):
    """Writes a stream as Parquet data files of an Iceberg table, committed per checkpoint.

    Batches are encoded once into Parquet files in the table's data directory as they
    arrive; ``commit`` registers the files in one snapshot (``add_files``) whose summary
    holds the Singer STATE staged for it.
    """

    name = "target-dativo-iceberg"
    config_jsonschema = CONFIG_JSONSCHEMA

    def __init__(self) -> None:
        super().__init__()
        self._files: list[str] = []
        self._open: pq.ParquetWriter | None = None
        self._sink: Any = None
        self._buffer: list[pa.RecordBatch] = []
        self._state: Any = None
        self._has_state = False
        self._overwritten = False
        self._rows = 0

    # -- opening --------------------------------------------------------------------

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self._method = str(config.get("load_method") or "append")
        if self._method not in ("append", "upsert", "overwrite"):
            raise ConfigError(
                f"load_method must be append, upsert or overwrite, not {self._method!r}"
            )
        if self._method == "upsert" and not stream.key_properties:
            raise ConfigError(f"stream '{stream.name}': load_method upsert needs key properties")
        self._target_bytes = int(float(config.get("target_file_size_mb") or 256) * 2**20)
        self._compression = str(config.get("compression") or "zstd")
        self._retries = int(config.get("commit_retries") or 5)
        self._catalog = open_catalog(config)
        namespace = _namespace(config)
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self._catalog.create_namespace(namespace)
        self._identifier = f"{namespace}.{table_name(stream.name, config)}"
        self._schema = iceberg_schema(stream.schema)
        self._table = self._load_or_create(stream)

    def _load_or_create(self, stream: StreamInfo) -> Table:
        try:
            table = self._catalog.load_table(self._identifier)
        except NoSuchTableError:
            try:
                table = self._catalog.create_table(
                    self._identifier,
                    schema=self._schema,
                    properties={
                        "commit.retry.num-retries": str(self._retries),
                        "write.parquet.compression-codec": self._compression,
                    },
                )
            except TableAlreadyExistsError:  # created concurrently
                table = self._catalog.load_table(self._identifier)
            else:
                self._configure_new(table, stream)
                logger.info("created Iceberg table %s", self._identifier)
        self._evolve(table, self._schema)
        return table

    def _configure_new(self, table: Table, stream: StreamInfo) -> None:
        if stream.key_properties:
            with table.update_schema() as update:
                update.set_identifier_fields(*stream.key_properties)
        spec = self.config.get("partition_by") or []
        if spec:
            with table.update_spec() as update:
                for item in spec:
                    column = item["column"]
                    transform = parse_transform(str(item.get("transform") or "identity"))
                    update.add_field(column, transform, f"{column}_{_transform_name(transform)}")

    def _evolve(self, table: Table, schema: pa.Schema) -> None:
        try:
            with table.update_schema() as update:
                update.union_by_name(schema)
        except Exception as exc:
            raise WriteError(
                f"stream '{self.stream.name if self.stream else '?'}': table "
                f"{self._identifier} cannot take the new schema: {exc}"
            ) from exc

    # -- writing --------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        batch = to_iceberg(batch.select(self._schema.names), self._schema)
        if self._method == "upsert":
            self._buffer.append(batch)
            return
        for part in self._partitions(batch):
            self._write_part(part)

    def _partitions(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Split a batch so that each data file holds a single partition value."""
        spec = self._table.spec()
        if not spec.fields:
            return [batch]
        table = pa.Table.from_batches([batch])
        schema = self._table.schema()
        keys = []
        for field in spec.fields:
            source = schema.find_field(field.source_id)
            values = field.transform.pyarrow_transform(source.field_type)(table[source.name])
            keys.append(values)
        keyed = table.append_column(
            "__part",
            pc.cast(
                pc.binary_join_element_wise(
                    *[pc.fill_null(pc.cast(k, pa.string()), "\x00") for k in keys], "\x01"
                ),
                pa.string(),
            ),
        )
        parts = []
        for value in pc.unique(keyed["__part"]).to_pylist():
            chosen = keyed.filter(pc.equal(keyed["__part"], value)).drop(["__part"])
            parts.extend(chosen.combine_chunks().to_batches())
        return parts

    def _write_part(self, batch: pa.RecordBatch) -> None:
        if self._table.spec().fields:
            self._finish_file()  # one file per partition value
        if self._open is None:
            location = (
                f"{self._table.location()}/data/{uuid.uuid4().hex}-{len(self._files):05d}.parquet"
            )
            self._sink = self._table.io.new_output(location).create(overwrite=False)
            self._open = pq.ParquetWriter(self._sink, self._schema, compression=self._compression)
            self._files.append(location)
        self._open.write_batch(batch)
        self._rows += batch.num_rows
        if self._table.spec().fields or self._sink.tell() >= self._target_bytes:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._open is not None:
            self._open.close()
            self._sink.close()
            self._open = None
            self._sink = None

    def update_schema(self, schema: pa.Schema) -> None:
        """A new SCHEMA: finish the open file, evolve the table (union by name)."""
        self._finish_file()
        self._schema = iceberg_schema(schema)
        self._buffer = [_conform(b, self._schema) for b in self._buffer]
        self._evolve(self._table, self._schema)
        self._table = self._catalog.load_table(self._identifier)
        self.adopt_schema(schema)

    # -- committing -----------------------------------------------------------------

    def stage_state(self, state: Any) -> None:
        self._state = state
        self._has_state = True

    def _properties(self) -> dict[str, str]:
        props = {STREAM_PROPERTY: self.stream.name if self.stream else ""}
        if self._has_state:
            props[STATE_PROPERTY] = json.dumps(self._state, default=str, sort_keys=True)
        return props

    def commit(self) -> CommitResult:
        self._finish_file()
        if self._method == "upsert":
            return self._commit_upsert()
        files, self._files = self._files, []
        rows, self._rows = self._rows, 0
        # No new rows: no snapshot. The previous snapshot's state stays a valid resume
        # point for this table, since nothing was added after it.
        if not files and (self._method != "overwrite" or self._overwritten):
            self._has_state = False
            return CommitResult()
        props = self._properties()
        self._retrying(lambda table: self._add(table, files, props), files)
        self._has_state = False
        logger.info("committed %d rows in %d file(s) to %s", rows, len(files), self._identifier)
        return CommitResult(paths=files, rows=rows)

    def _add(self, table: Table, files: Sequence[str], props: dict[str, str]) -> None:
        if self._method == "overwrite" and not self._overwritten:
            with table.transaction() as tx:
                tx.delete(AlwaysTrue(), snapshot_properties=props)
                if files:
                    tx.add_files(
                        list(files), snapshot_properties=props, check_duplicate_files=False
                    )
            self._overwritten = True
        elif files:
            table.add_files(list(files), snapshot_properties=props, check_duplicate_files=False)

    def _commit_upsert(self) -> CommitResult:
        batches, self._buffer = self._buffer, []
        if not batches and not self._has_state:
            return CommitResult()
        keys = list(self.stream.key_properties) if self.stream else []
        data = pa.Table.from_batches(batches, schema=self._schema)
        data = _last_per_key(data, keys)
        if not data.num_rows:
            self._has_state = False
            return CommitResult()
        props = self._properties()

        def upsert(table: Table) -> None:
            table.upsert(data, join_cols=keys, snapshot_properties=props)

        self._retrying(upsert, [])
        self._has_state = False
        return CommitResult(rows=data.num_rows)

    def _retrying(self, action: Any, files: Sequence[str]) -> None:
        delay = 0.1
        for attempt in range(self._retries + 1):
            try:
                action(self._table)
                return
            except CommitFailedException as exc:
                if attempt == self._retries:
                    self._delete(files)
                    raise WriteError(
                        f"commit to {self._identifier} failed after "
                        f"{self._retries + 1} attempts: {exc}"
                    ) from exc
                logger.warning("commit to %s conflicted (%s); retrying", self._identifier, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._table = self._catalog.load_table(self._identifier)
            except Exception:
                self._delete(files)
                raise

    def _delete(self, files: Sequence[str]) -> None:
        for location in files:
            try:
                self._table.io.delete(location)
            except Exception:
                logger.warning("could not delete uncommitted data file %s", location)

    def close(self) -> None:
        self._finish_file()
        self._delete(self._files)  # written but never committed
        self._files = []
        self._buffer = []

    @classmethod
    def recover_state(
        cls, config: Mapping[str, Any], state_id: str | None = None
    ) -> dict[str, Any] | None:
        """The bookmarks committed with the data, each stream's from its own table."""
        catalog = open_catalog(config)
        namespace = _namespace(config)
        try:
            identifiers = catalog.list_tables(namespace)
        except Exception:
            return None
        merged: dict[str, Any] = {"bookmarks": {}}
        found = False
        for identifier in identifiers:
            stream, state = _committed_state(catalog.load_table(identifier))
            if state is None:
                continue
            found = True
            bookmark = (state.get("bookmarks") or {}).get(stream) if stream else None
            if bookmark is not None:
                merged["bookmarks"][stream] = bookmark
        return merged if found else None


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A buffered batch brought to a newer schema: new columns null, types widened."""
    arrays = [
        batch.column(f.name).cast(f.type)
        if f.name in batch.schema.names
        else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _transform_name(transform: Transform[Any, Any]) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(transform).lower()).strip("_")


def _last_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the last row of each key (upsert takes one row per key)."""
    if table.num_rows < 2:
        return table
    indexed = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    last = indexed.group_by(keys, use_threads=False).aggregate([("__row", "max")])
    rows = last["__row_max"]
    return table.take(pc.take(rows, pc.sort_indices(rows)))
