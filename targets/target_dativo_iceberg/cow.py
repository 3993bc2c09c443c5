"""Copy-on-write of the data files a commit's changes touch, in one Iceberg snapshot.

pyiceberg cannot read equality deletes (and some engines refuse tables with them), and its
``Table.upsert`` scans the table with a filter of every changed key and then deletes by
that filter, file by file. Here the files that may hold a changed key are found from the
manifests' column bounds of the key columns (metadata only), then confirmed by reading
only their key columns; only the files that do hold one are read whole and rewritten
without the changed keys' rows, and the new rows are added, all in one snapshot.

Invariants: a data file none of whose rows has a changed key is never rewritten (a
TRUNCATE rewrites them all); the snapshot that removes a file adds every row of it whose
key did not change (soft-deleted, after a TRUNCATE, or none with ``hard_delete``); the files
are named by :class:`~target_dativo_iceberg.orphans.DataFileNames`, so a writer killed
before its commit leaves files the next run can prove orphaned.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, parquet_file_to_data_file, schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.types import DateType, PrimitiveType, TimestampType, TimestamptzType

from target_dativo_iceberg.changes import Changes, fill_from, is_deleted, member, truncated
from target_dativo_iceberg.types import iceberg_schema

logger = logging.getLogger("dativo.iceberg")

#: Rows per ``write_table`` call: the file size is checked between slices.
_SLICE_ROWS = 131_072


@dataclass(frozen=True)
class Applied:
    """What one commit of changes did to the table."""

    files: list[str]
    rows: int
    deletes: int
    rewritten: int
    scanned: int
    by_bounds: int


@dataclass
class Plan:
    """The data files a commit rewrites, found among ``scanned`` live data files."""

    tasks: list[FileScanTask] = field(default_factory=list)
    scanned: int = 0
    by_bounds: int = 0


def _bound_values(column: pa.ChunkedArray | pa.Array, kind: PrimitiveType) -> pa.Array:
    """A key column as the values Iceberg's bounds decode to (ints for dates/timestamps)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(kind, TimestampType | TimestamptzType):
        return array.cast(pa.timestamp("us", tz=array.type.tz)).cast(pa.int64())
    if isinstance(kind, DateType):
        return array.cast(pa.int32())
    return array


class _Bounds:
    """The changed keys, to test data files' key bounds against."""

    def __init__(self, table: Table, keys: Sequence[str], changed: pa.Table) -> None:
        schema = table.schema()
        self.columns: list[tuple[int, PrimitiveType, pa.Array]] = []
        for key in keys:
            column = schema.find_field(key)
            kind = column.field_type
            if isinstance(kind, PrimitiveType):
                self.columns.append((column.field_id, kind, _bound_values(changed[key], kind)))
        # One key column: its sorted values, for a binary search per file.
        self.sorted: list[Any] | None = None
        if len(keys) == 1 and len(self.columns) == 1:
            self.sorted = sorted(pc.unique(self.columns[0][2]).to_pylist())

    def lowest(self, task: FileScanTask) -> tuple[bool, Any]:
        """A sort key putting files in the order of their first key column's lower bound
        (files without one last), so that merged remainders stay in key ranges."""
        if not self.columns:
            return (True, 0)
        field_id, kind, _ = self.columns[0]
        low = (task.file.lower_bounds or {}).get(field_id)
        try:
            return (False, from_bytes(kind, low)) if low is not None else (True, 0)
        except (ValueError, TypeError):
            return (True, 0)

    def admit(self, task: FileScanTask) -> bool:
        """Whether a data file's bounds admit one of the changed keys (True when unsure)."""
        data = task.file
        lower, upper = data.lower_bounds or {}, data.upper_bounds or {}
        try:
            if self.sorted is not None:
                field_id, kind, _ = self.columns[0]
                low, high = lower.get(field_id), upper.get(field_id)
                if low is None or high is None:
                    return True
                at = bisect.bisect_left(self.sorted, from_bytes(kind, low))
                return at < len(self.sorted) and self.sorted[at] <= from_bytes(kind, high)
            mask: Any = None
            for field_id, kind, values in self.columns:
                low, high = lower.get(field_id), upper.get(field_id)
                if low is None or high is None:
                    continue
                lo = pa.scalar(from_bytes(kind, low), values.type)
                hi = pa.scalar(from_bytes(kind, high), values.type)
                inside = pc.and_(pc.greater_equal(values, lo), pc.less_equal(values, hi))
                mask = inside if mask is None else pc.and_(mask, inside)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            logger.debug("bounds of %s not comparable (%s): a candidate", data.file_path, exc)
            return True
        return mask is None or bool(pc.any(mask).as_py())


def plan(table: Table, keys: Sequence[str], changed: pa.Table) -> Plan:
    """The live data files of ``table`` holding a row whose key is in ``changed``."""
    result = Plan()
    if table.current_snapshot() is None or changed.num_rows == 0:
        return result
    bounds = _Bounds(table, keys, changed)
    candidates = []
    for task in table.scan().plan_files():
        result.scanned += 1
        if bounds.admit(task):
            candidates.append(task)
    result.by_bounds = len(candidates)
    with contextlib.suppress(TypeError):  # bounds of mixed kinds: the manifests' order
        candidates.sort(key=bounds.lowest)
    probe = ArrowScan(table.metadata, table.io, table.schema().select(*keys), AlwaysTrue())
    for task in candidates:
        rows = probe.to_table([task])
        if pc.any(member(rows, changed, keys)).as_py():
            result.tasks.append(task)
    return result


def apply(
    table: Table,
    collapsed: Changes,
    keys: Sequence[str],
    *,
    hard_delete: bool,
    new_location: Callable[[], str],
    written: list[str],
    compression: str,
    target_bytes: int,
    props: dict[str, str],
) -> Applied:
    """Apply ``changes`` (one row per key, :func:`~target_dativo_iceberg.changes.collapse`)
    to ``table`` in one snapshot carrying ``props``.

    Memory holds the changes, one rewritten file at a time, and the remainders of small
    files: a file of at least a quarter of ``target_bytes`` is written back on its own
    (without its changed keys' rows) as soon as it is read; the remainders of smaller
    files are merged, sorted by key, into files of about ``target_bytes`` (the last one
    with the new rows), so small files are merged rather than multiplied.

    After a TRUNCATE every data file is rewritten: without its rows (``hard_delete``,
    then not even read) or with its live rows soft-deleted by the TRUNCATE.

    Args:
        written: Filled with the location of every file as it is opened; the caller
            deletes them if this raises.
    """
    changes, cut = collapsed.rows, collapsed.truncate
    found = plan_all(table) if cut is not None else plan(table, keys, changes.select(list(keys)))
    schema = write_schema(table)
    order = [(k, "ascending") for k in keys]
    known: list[pa.Table] = []
    small: list[pa.Table] = []
    rows = 0

    def out(parts: pa.Table) -> None:
        write(
            table,
            split_partitions(table, parts),
            new_location,
            written,
            compression=compression,
            target_bytes=target_bytes,
        )

    def sort(rows: pa.Table) -> pa.Table:
        if rows.num_rows < 2:
            return rows
        return rows.take(pc.sort_indices(rows.select(list(keys)), order))

    def merged(parts: Sequence[pa.Table], size: float) -> pa.Table:
        """The parts in one table, sorted by key when they make more than one file (about
        ``size`` bytes), so that the files keep narrow key ranges; within one file the
        order of rows does not change its bounds, so it is not paid for."""
        rest = pa.concat_tables(parts)
        return sort(rest) if size >= target_bytes else rest

    pooled = 0  # bytes (on disk) of the small files whose remainders are held
    pooled_rows = 0
    for task in found.tasks:
        if cut is not None and hard_delete:
            continue  # truncated: none of its rows stays
        old = read(table, [task])
        if cut is not None:
            old = truncated(old, cut)
        hit = member(old, changes, keys)
        if not hard_delete:
            known.append(old.filter(hit))
        remainder = old.filter(pc.invert(hit))
        rows += remainder.num_rows
        size = task.file.file_size_in_bytes
        if size * 4 >= target_bytes:
            out(remainder)
            continue
        small.append(remainder)
        pooled += size
        pooled_rows += remainder.num_rows
        if pooled >= target_bytes:  # enough small remainders for one file: merge them
            out(merged(small, pooled))
            small, pooled, pooled_rows = [], 0, 0
    deleted = is_deleted(changes)
    if hard_delete:
        new = changes.filter(pc.invert(deleted))
    else:
        new = fill_from(changes, pa.concat_tables(known) if known else changes.slice(0, 0), keys)
    rows += new.num_rows
    per_row = pooled / pooled_rows if pooled_rows else 0.0
    out(merged([*small, sort(shaped(new, schema))], pooled + per_row * new.num_rows))
    commit(table, [task.file for task in found.tasks], written, props)
    return Applied(
        files=list(written),
        rows=rows,
        deletes=int(pc.sum(deleted).as_py() or 0),
        rewritten=len(found.tasks),
        scanned=found.scanned,
        by_bounds=found.by_bounds,
    )


def plan_all(table: Table) -> Plan:
    """Every live data file of ``table`` (a TRUNCATE rewrites them all)."""
    tasks = list(table.scan().plan_files()) if table.current_snapshot() is not None else []
    return Plan(tasks=tasks, scanned=len(tasks), by_bounds=len(tasks))


def write_schema(table: Table) -> pa.Schema:
    """The Arrow schema rewritten files have: every column of the table's current schema."""
    return iceberg_schema(schema_to_pyarrow(table.schema(), include_field_ids=False))


def read(table: Table, tasks: Sequence[FileScanTask]) -> pa.Table:
    """Every row of ``tasks``' files in the table's current schema (deletes applied)."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    return shaped(scan.to_table(tasks), write_schema(table))


def shaped(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns: taken by name and cast, missing ones null."""
    columns = []
    for target in schema:
        if target.name in rows.column_names:
            column = rows[target.name]
            columns.append(column if column.type == target.type else column.cast(target.type))
        else:
            columns.append(pa.nulls(rows.num_rows, target.type))
    return pa.table(columns, schema=schema)


def split_partitions(table: Table, rows: pa.Table) -> list[pa.Table]:
    """``rows`` split so that each part holds a single partition value of ``table``'s spec."""
    spec = table.spec()
    if not spec.fields or rows.num_rows == 0:
        return [rows]
    schema = table.schema()
    values = []
    for part_field in spec.fields:
        source = schema.find_field(part_field.source_id)
        transform = part_field.transform.pyarrow_transform(source.field_type)
        values.append(pc.fill_null(pc.cast(transform(rows[source.name]), pa.string()), "\x00"))
    keyed = pc.cast(pc.binary_join_element_wise(*values, "\x01"), pa.string())
    return [rows.filter(pc.equal(keyed, value)) for value in pc.unique(keyed).to_pylist()]


def write(
    table: Table,
    parts: Sequence[pa.Table],
    new_location: Callable[[], str],
    written: list[str],
    *,
    compression: str,
    target_bytes: int,
) -> None:
    """Write ``parts`` (each one partition value) as Parquet data files of ``table``,
    appending each file's location to ``written`` as it is opened (so that a caller can
    delete them when writing or committing fails part-way)."""
    for part in parts:
        if part.num_rows == 0:
            continue
        writer: pq.ParquetWriter | None = None
        sink: Any = None
        try:
            for offset in range(0, part.num_rows, _SLICE_ROWS):
                if writer is None:
                    location = new_location()
                    written.append(location)
                    sink = table.io.new_output(location).create(overwrite=False)
                    writer = pq.ParquetWriter(sink, part.schema, compression=compression)
                writer.write_table(part.slice(offset, _SLICE_ROWS))
                if sink.tell() >= target_bytes:
                    writer.close()
                    sink.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()
                sink.close()


def commit(
    table: Table, removed: Sequence[DataFile], added: Sequence[str], props: dict[str, str]
) -> None:
    """One snapshot: ``removed`` out and ``added`` in (OVERWRITE; APPEND when nothing goes
    out), ``props`` in its summary."""
    with table.transaction() as tx:
        if tx.table_metadata.name_mapping() is None:
            mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
        update = tx.update_snapshot(snapshot_properties=props)
        with update.overwrite() if removed else update.fast_append() as snapshot:
            for data_file in removed:
                snapshot.delete_data_file(data_file)
            for location in added:
                snapshot.append_data_file(
                    parquet_file_to_data_file(table.io, tx.table_metadata, location)
                )
