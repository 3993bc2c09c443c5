"""IcebergWriter: one stream into one Iceberg table, one snapshot per checkpoint, with the
Singer STATE that the snapshot makes durable in its summary (exactly-once resumption).

Invariants: a snapshot's state is keyed by the pipeline's state id and read back only by
that pipeline; an ``overwrite`` run publishes once, at its end, in one snapshot that
replaces every row; rows re-read at the committed bookmark whose key the table already
holds are not appended again; an ``upsert`` commit applies the last change per key
(deletes with ``hard_delete``) by rewriting only the data files that hold a changed key,
in one snapshot (see targets/target_dativo_iceberg/changes.py and cow.py); data files are
named so that a later run can prove a dead writer left them (see
targets/target_dativo_iceberg/orphans.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    ValidationException,
)
from pyiceberg.expressions import EqualTo, Reference
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table, TableProperties

from dativo_bridge.conform import conform
from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.row_groups import ICEBERG_ROW_GROUP_ROWS as ROW_GROUP_ROWS
from dativo_bridge.row_groups import ROW_GROUP_BYTES, RowGroup
from dativo_bridge.settings import hard_delete_refusal, load_method, with_defaults
from dativo_bridge.state import RUN_KEY
from target_dativo_iceberg import cow
from target_dativo_iceberg.changes import DELETED_AT, Changes, collapse, is_truncate
from target_dativo_iceberg.cow import split_partitions
from target_dativo_iceberg.files import abort_dead_uploads
from target_dativo_iceberg.orphans import DataFileNames, remove_orphans
from target_dativo_iceberg.settings import CONFIG_JSONSCHEMA
from target_dativo_iceberg.tables import (
    STATE_ID_PROPERTY,
    STATE_PROPERTY,
    STREAM_PROPERTY,
    check_layout,
    check_writable_spec,
    committed_bookmark,
    committed_state,
    committed_state_at,
    create_table,
    refuse_other_stream,
    table_stream,
)
from target_dativo_iceberg.types import iceberg_schema, to_iceberg

logger = logging.getLogger("dativo.iceberg")

__all__ = ["STATE_ID_PROPERTY", "STATE_PROPERTY", "STREAM_PROPERTY", "IcebergWriter"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_CATALOGS: dict[str, Catalog] = {}
#: Tables open in this process: (catalog, table) -> (stream, number of open writers).
_OPEN_TABLES: dict[tuple[str, str], tuple[str, int]] = {}


def _keys_required(schema: pa.Schema, stream: StreamInfo) -> pa.Schema:
    """For a change stream (LOG_BASED, or one with ``_sdc_deleted_at``), ``schema`` with
    the key properties non-null: Iceberg identifier fields are required columns, and a
    change stream declares every column nullable because a delete carries only the key
    (:meth:`IcebergWriter.write` refuses a null key). Other streams keep their schema: a
    nullable key column there is refused when the table is created."""
    if stream.replication_method != "LOG_BASED" and DELETED_AT not in schema.names:
        return schema
    keys = set(stream.key_properties)
    return pa.schema([f.with_nullable(False) if f.name in keys else f for f in schema])


def table_name(stream: str, config: Mapping[str, Any]) -> str:
    """The table a stream lands in (``table_names`` override, else the stream name)."""
    names = config.get("table_names") or {}
    return str(names.get(stream) or _UNSAFE.sub("_", stream).strip("_").lower() or "stream")


def _catalog_props(config: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    config = with_defaults(CONFIG_JSONSCHEMA, config)
    props = {str(k): str(v) for k, v in (config.get("catalog") or {}).items()}
    name = str(config["catalog_name"])
    if not props:
        warehouse = Path(str(config["warehouse"])).resolve()
        warehouse.mkdir(parents=True, exist_ok=True)
        props = {
            "type": "sql",
            "uri": f"sqlite:///{warehouse / 'catalog.db'}",
            "warehouse": warehouse.as_uri(),
        }
    return name, props


def _catalog_key(config: Mapping[str, Any]) -> str:
    name, props = _catalog_props(config)
    return json.dumps([name, sorted(props.items())])


def open_catalog(config: Mapping[str, Any]) -> Catalog:
    """The configured catalog, or the embedded SQLite one under ``warehouse``."""
    name, props = _catalog_props(config)
    key = _catalog_key(config)
    if key not in _CATALOGS:
        _CATALOGS[key] = load_catalog(name, **props)
    return _CATALOGS[key]


def _namespace(config: Mapping[str, Any]) -> str:
    return str(with_defaults(CONFIG_JSONSCHEMA, config)["namespace"])


@dataclass(frozen=True)
class _Boundary:
    """The rows the table holds at the bookmark it committed: a resumed reader reads
    ``replication_key >= bookmark``, so these come again and must not be appended twice."""

    column: str
    value: pa.Scalar
    keys: tuple[str, ...]
    known: frozenset[tuple[Any, ...]]

    def drop_known(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without its rows at the bookmark whose key the table already has."""
        column = batch.column(self.column)
        mask = pc.fill_null(pc.equal(column, self.value.cast(column.type)), False)
        if not pc.any(mask).as_py():
            return batch
        indices = pc.indices_nonzero(mask)
        rows = batch.take(indices).select(list(self.keys)).to_pylist()
        drop = [tuple(row[k] for k in self.keys) in self.known for row in rows]
        if not any(drop):
            return batch
        keep = pc.invert(mask).to_pylist()
        for index, dropped in zip(indices.to_pylist(), drop, strict=True):
            keep[index] = not dropped
        return batch.filter(pa.array(keep, pa.bool_()))


class IcebergWriter(ArrowWriter):
    """Writes a stream as Parquet data files of an Iceberg table, committed per checkpoint.

    Batches are encoded once into Parquet files in the table's data directory as they
    arrive; ``commit`` registers the files in one snapshot (``add_files``) whose summary
    holds the Singer STATE staged for it and the pipeline's state id. With ``overwrite``
    the one commit of the run replaces the table's rows in one snapshot.
    """

    name = "target-dativo-iceberg"
    config_jsonschema = CONFIG_JSONSCHEMA

    def __init__(self) -> None:
        super().__init__()
        self._files: list[str] = []
        self._open: pq.ParquetWriter | None = None
        self._group = RowGroup()  # rows gathered for the open file's next row group
        self._sink: Any = None
        self._buffer: list[pa.RecordBatch] = []
        self._state: Any = None
        self._has_state = False
        self._overwritten = False
        self._rows = 0
        self._method = "append"
        self._names = DataFileNames()
        self._boundary: _Boundary | None = None
        self._registered: tuple[str, str] | None = None
        self._hard_delete = False

    @property
    def publishes_at_end(self) -> bool:
        """``overwrite``: the table is replaced once, when the input ends."""
        return self._method == "overwrite"

    # -- opening --------------------------------------------------------------------

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        config = with_defaults(self.config_jsonschema, config)
        super().open(config, stream)
        self._method = load_method(config, ("append", "upsert", "overwrite"), self.name)
        if self._method == "upsert" and not stream.key_properties:
            raise ConfigError(f"stream '{stream.name}': load_method upsert needs key properties")
        self._hard_delete = bool(config["hard_delete"])
        if self._hard_delete and self._method != "upsert":
            raise ConfigError(hard_delete_refusal(self.name, str(config["load_method"])))
        self._target_bytes = int(float(config["target_file_size_mb"]) * 2**20)
        self._compression = str(config["compression"])
        self._retries = int(config["commit_retries"])
        self._catalog = open_catalog(config)
        namespace = _namespace(config)
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self._catalog.create_namespace(namespace)
        self._identifier = f"{namespace}.{table_name(stream.name, config)}"
        slot = (_catalog_key(config), self._identifier)
        opened = _OPEN_TABLES.get(slot)
        refuse_other_stream(self._identifier, opened[0] if opened else None, stream.name)
        self._schema = _keys_required(iceberg_schema(stream.schema), stream)
        self._table = self._load_or_create(stream)
        # The run marker (dativo_bridge.runner.RUN_KEY) of the state this table holds for
        # this pipeline: a run that ends must say so here even if it adds no rows.
        self._committed_run = (committed_state(self._table, self.state_id)[1] or {}).get(RUN_KEY)
        self._boundary = self._boundary_rows(stream)
        _OPEN_TABLES[slot] = (stream.name, (opened[1] if opened else 0) + 1)
        self._registered = slot

    def _load_or_create(self, stream: StreamInfo) -> Table:
        """The stream's table, created complete in one step if missing, checked to belong
        to this stream and to match its keys and partitioning, without dead writers' files."""
        try:
            table = self._catalog.load_table(self._identifier)
        except NoSuchTableError:
            try:
                table = create_table(
                    self._catalog,
                    self._identifier,
                    self._schema,
                    list(stream.key_properties),
                    self.config.get("partition_by") or [],
                    {
                        "commit.retry.num-retries": str(self._retries),
                        "write.parquet.compression-codec": self._compression,
                        STREAM_PROPERTY: stream.name,
                    },
                )
            except TableAlreadyExistsError:  # created concurrently
                table = self._catalog.load_table(self._identifier)
            else:
                logger.info("created Iceberg table %s", self._identifier)
        owner = table_stream(table)
        refuse_other_stream(self._identifier, owner, stream.name)
        if table.properties.get(STREAM_PROPERTY) != stream.name:
            with table.transaction() as tx:  # an older table: claim it for this stream
                tx.set_properties({STREAM_PROPERTY: stream.name})
        if check_layout(
            table,
            self._identifier,
            stream.name,
            list(stream.key_properties),
            self.config.get("partition_by") or [],
        ):
            table = self._catalog.load_table(self._identifier)
        check_writable_spec(table, self._identifier, stream.name)
        remove_orphans(lambda: self._catalog.load_table(self._identifier))
        # On S3, a dead writer's file may be an unfinished multipart upload (not a file).
        abort_dead_uploads(table)
        self._evolve(table, self._schema)
        return table

    def _boundary_rows(self, stream: StreamInfo) -> _Boundary | None:
        """For append with keys: the table's rows at the bookmark this pipeline committed."""
        column = stream.replication_key
        keys = tuple(stream.key_properties)
        if self._method != "append" or not column or not keys:
            return None
        entry = committed_bookmark(self._table, stream.name, self.state_id)
        if not isinstance(entry, dict) or entry.get("replication_key") != column:
            return None
        value = entry.get("replication_key_value")
        if value is None:
            return None
        try:
            rows = self._table.scan(
                row_filter=EqualTo(term=Reference(column), value=value),
                selected_fields=(*keys, column),
            ).to_arrow()
        except Exception as exc:
            logger.warning(
                "stream '%s': cannot look up the rows of %s at %s = %r (%s); rows read again "
                "at the bookmark may be appended twice",
                stream.name,
                self._identifier,
                column,
                value,
                exc,
            )
            return None
        if rows.num_rows == 0:
            return None
        known = frozenset(zip(*(rows.column(k).to_pylist() for k in keys), strict=True))
        return _Boundary(column, rows.column(column)[0], keys, known)

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
        self._check_keys(batch)
        batch = to_iceberg(batch.select(self._schema.names), self._schema)
        if self._boundary is not None:
            batch = self._boundary.drop_known(batch)
            if batch.num_rows == 0:
                return
        if self._method == "upsert":
            self._buffer.append(batch)
            return
        for part in self._partitions(batch):
            self._write_part(part)

    def _check_keys(self, batch: pa.RecordBatch) -> None:
        """A WriteError for a row with a null key, unless it is a TRUNCATE of an upsert
        change stream (every key null, ``_sdc_deleted_at`` set: changes.py)."""
        keys = list(self.stream.key_properties) if self.stream else []
        if not any(batch.column(k).null_count for k in keys):
            return
        null = pc.is_null(batch.column(keys[0]))
        for key in keys[1:]:
            null = pc.or_(null, pc.is_null(batch.column(key)))
        if self._method == "upsert":
            null = pc.and_(null, pc.invert(is_truncate(batch, keys)))
        row = pc.index(null, True).as_py()
        if row >= 0:
            key = next(k for k in keys if not batch.column(k)[row].is_valid)
            raise WriteError(
                f"stream '{self.stream.name if self.stream else '?'}': key property "
                f"'{key}' is null (row {row} of a batch); the table's identifier fields "
                "cannot be null (a TRUNCATE of a change stream, with load_method upsert, "
                "has every key null and _sdc_deleted_at set)"
            )

    def _partitions(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        """Split a batch so that each data file holds a single partition value."""
        if not self._table.spec().fields:
            return [batch]
        parts = split_partitions(self._table, pa.Table.from_batches([batch]))
        return [b for part in parts for b in part.combine_chunks().to_batches()]

    def _open_file(self) -> pq.ParquetWriter:
        if self._open is None:
            location = self._names.next(self._table)
            self._sink = self._table.io.new_output(location).create(overwrite=False)
            self._open = pq.ParquetWriter(self._sink, self._schema, compression=self._compression)
            self._files.append(location)
        return self._open

    def _write_part(self, batch: pa.RecordBatch) -> None:
        if self._table.spec().fields:
            self._finish_file()  # one file per partition value
            self._open_file().write_batch(batch)
            self._rows += batch.num_rows
            self._finish_file()
            return
        # Rows are gathered into row groups (dativo_bridge.row_groups): pyarrow writes
        # every call as a row group of its own, and a reader's batches are small.
        self._open_file()
        while batch.num_rows:
            room = ROW_GROUP_ROWS - self._group.rows
            part, batch = batch.slice(0, room), batch.slice(room)
            self._group.add(part)
            self._rows += part.num_rows
            if (
                self._group.rows >= ROW_GROUP_ROWS
                or self._group.bytes >= ROW_GROUP_BYTES
                or self._group.fills(self._sink.tell(), self._target_bytes)
            ):
                self._write_group()
                if self._sink.tell() >= self._target_bytes:
                    self._finish_file()
                    if batch.num_rows:
                        self._open_file()

    def _write_group(self) -> None:
        table = self._group.take()
        if table is not None and self._open is not None:
            self._open.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def _finish_file(self, *, discard: bool = False) -> None:
        if discard:
            self._group = RowGroup()
        else:
            self._write_group()
        self._group.flushed_bytes = 0
        if self._open is not None:
            self._open.close()
            self._sink.close()
            self._open = None
            self._sink = None

    def update_schema(self, schema: pa.Schema) -> None:
        """A new SCHEMA: finish the open file, evolve the table (union by name)."""
        self._finish_file()
        self._schema = iceberg_schema(schema)
        if self.stream is not None:
            self._schema = _keys_required(self._schema, self.stream)
        # Buffered batches: new columns null, types widened.
        self._buffer = [conform(b, self._schema, fill_missing=True) for b in self._buffer]
        self._evolve(self._table, self._schema)
        self._table = self._catalog.load_table(self._identifier)
        self.adopt_schema(schema)

    # -- committing -----------------------------------------------------------------

    def stage_state(self, state: Any) -> None:
        self._state = state
        self._has_state = True

    def _properties(self) -> dict[str, str]:
        props = {STREAM_PROPERTY: self.stream.name if self.stream else ""}
        if self.state_id is not None:
            props[STATE_ID_PROPERTY] = self.state_id
        if self._has_state:
            props[STATE_PROPERTY] = json.dumps(self._state, default=str, sort_keys=True)
        return props

    def commit(self) -> CommitResult:
        self._finish_file()
        if self._method == "upsert":
            return self._commit_upsert()
        files, self._files = self._files, []
        rows, self._rows = self._rows, 0
        replace = self._method == "overwrite" and not self._overwritten
        # No new rows: no snapshot. The previous snapshot's state stays a valid resume
        # point for this table, since nothing was added after it. An overwrite replaces
        # even with no rows: the run read an empty source.
        if not files and not replace:
            self._commit_run_end()
            return CommitResult()
        props = self._properties()
        self._committed_run = self._staged_run()
        if replace:
            self._retrying(lambda table: _replace(table, files, props), files)
            self._overwritten = True  # never twice in one run: later commits append
        else:
            self._retrying(
                lambda table: table.add_files(
                    list(files), snapshot_properties=props, check_duplicate_files=False
                ),
                files,
            )
        self._has_state = False
        logger.info(
            "committed %d rows in %d file(s) to %s%s",
            rows,
            len(files),
            self._identifier,
            " (replacing its rows)" if replace else "",
        )
        return CommitResult(paths=files, rows=rows)

    def _commit_upsert(self) -> CommitResult:
        """Apply the checkpoint's changes by copy-on-write (targets/.../cow.py): the last
        change per key (targets/.../changes.py) replaces the key's row, or removes it
        (``hard_delete``), in one snapshot that rewrites only the files holding those keys."""
        batches, self._buffer = self._buffer, []
        if not batches and not self._has_state:
            return CommitResult()
        keys = list(self.stream.key_properties) if self.stream else []
        data = pa.Table.from_batches(batches, schema=self._schema)
        changes = collapse(data, keys, soft=not self._hard_delete)
        if not changes.rows.num_rows and changes.truncate is None:
            self._commit_run_end()
            return CommitResult()
        props = self._properties()
        self._committed_run = self._staged_run()
        applied: list[cow.Applied] = []

        def apply(table: Table) -> None:
            applied.append(self._apply_changes(table, changes, keys, props))

        self._retrying(apply, [])
        self._has_state = False
        done = applied[-1]
        logger.info(
            "applied %d change(s)%s to %s: %d of %d data file(s) rewritten (%d by bounds), "
            "%d row(s) written in %d file(s), %d delete(s)%s",
            changes.rows.num_rows,
            " after a TRUNCATE" if changes.truncate is not None else "",
            self._identifier,
            done.rewritten,
            done.scanned,
            done.by_bounds,
            done.rows,
            len(done.files),
            done.deletes,
            "" if self._hard_delete else " kept as soft-deleted rows",
        )
        return CommitResult(paths=done.files, rows=changes.rows.num_rows)

    def _apply_changes(
        self, table: Table, changes: Changes, keys: list[str], props: dict[str, str]
    ) -> cow.Applied:
        """One attempt: plan, rewrite, commit; its own files deleted if it fails."""
        files: list[str] = []
        try:
            return cow.apply(
                table,
                changes,
                keys,
                hard_delete=self._hard_delete,
                new_location=lambda: self._names.next(table),
                written=files,
                compression=self._compression,
                target_bytes=self._target_bytes,
                props=props,
            )
        except BaseException:
            self._delete(files)
            raise

    def _staged_run(self) -> Any:
        return (
            self._state.get(RUN_KEY) if self._has_state and isinstance(self._state, dict) else None
        )

    def _commit_run_end(self) -> None:
        """A STATE with no new rows: no snapshot, unless it ends the run this table's
        state is still marked with (``dativo_run``). Then one snapshot without data files
        records it, so the next run is not taken for a resumption of a finished one."""
        if self._has_state and self._committed_run is not None and self._staged_run() is None:
            props = self._properties()

            def mark(table: Table) -> None:
                with (
                    table.transaction() as tx,
                    tx.update_snapshot(snapshot_properties=props).fast_append(),
                ):
                    pass

            self._retrying(mark, [])
            self._committed_run = None
        self._has_state = False

    def _retrying(self, action: Any, files: Sequence[str]) -> None:
        delay = 0.1
        for attempt in range(self._retries + 1):
            try:
                action(self._table)
                return
            except (CommitFailedException, ValidationException) as exc:
                # ValidationException: pyiceberg's own retry found that a concurrent commit
                # added files an overwrite (replace, upsert) planned without: plan again.
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
        self._finish_file(discard=True)
        self._delete(self._files)  # written but never committed
        self._files = []
        self._buffer = []
        slot, self._registered = self._registered, None
        if slot is not None:
            stream, count = _OPEN_TABLES.pop(slot, ("", 1))
            if count > 1:
                _OPEN_TABLES[slot] = (stream, count - 1)

    @classmethod
    def recover_state(
        cls, config: Mapping[str, Any], state_id: str | None = None
    ) -> dict[str, Any] | None:
        """The bookmarks pipeline ``state_id`` committed with the data, each stream's from
        the table it maps to (snapshots of other pipelines are skipped).

        With ``load_method: overwrite`` an empty state: an overwrite run replaces the table
        with the whole source, so it reads from the start, whatever an earlier run stored.
        """
        if with_defaults(CONFIG_JSONSCHEMA, config)["load_method"] == "overwrite":  # no alias
            return {"bookmarks": {}}
        catalog = open_catalog(config)
        namespace = _namespace(config)
        try:
            identifiers = catalog.list_tables(namespace)
        except Exception:
            return None
        merged: dict[str, Any] = {"bookmarks": {}}
        found = False
        newest = -1
        for identifier in identifiers:
            stream, state, at = committed_state_at(catalog.load_table(identifier), state_id)
            if state is None or stream is None or table_name(stream, config) != identifier[-1]:
                continue
            found = True
            bookmark = (state.get("bookmarks") or {}).get(stream) if stream else None
            if bookmark is not None:
                merged["bookmarks"][stream] = bookmark
            if at > newest:
                # Which streams the last run finished: from the newest state of all.
                newest = at
                merged.pop(RUN_KEY, None)
                if state.get(RUN_KEY) is not None:
                    merged[RUN_KEY] = state[RUN_KEY]
        return merged if found else None


def _replace(table: Table, files: Sequence[str], props: dict[str, str]) -> None:
    """One OVERWRITE snapshot: every data file of the current snapshot out, ``files`` in."""
    with table.transaction() as tx:
        if tx.table_metadata.name_mapping() is None:
            mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
        current = table.current_snapshot()
        with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
            if current is not None:
                for manifest in current.manifests(table.io):
                    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                        if entry.data_file.content == DataFileContent.DATA:
                            overwrite.delete_data_file(entry.data_file)
            for location in files:
                overwrite.append_data_file(
                    parquet_file_to_data_file(table.io, tx.table_metadata, location)
                )
