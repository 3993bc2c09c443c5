"""A checkpoint's change records reduced to one change per key, on Arrow.

A change stream (e.g. tap-dativo-postgres LOG_BASED) sends inserts and updates as whole
rows and deletes as the key with ``_sdc_deleted_at`` set (the other columns null), each
with its ``_sdc_lsn``. Invariants:

* Within one commit the last change of a key wins: rows are ordered by ``_sdc_lsn`` when
  the stream has that column (a null LSN sorts first: rows of the initial snapshot come
  before the log), ties and streams without it in arrival order.
* A soft delete keeps the row's last known values: those of the key's last earlier
  non-delete row of the same commit (marked :data:`KNOWN`, nulls included), else (see
  :func:`fill_from`) those of the row the table holds, for the columns the delete leaves
  null.
* A TRUNCATE is a record whose key properties are all null and whose ``_sdc_deleted_at``
  is set: every row before it (the table's and the commit's) is gone, and only the
  changes after the last one in change order apply, to an emptied table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DELETED_AT = "_sdc_deleted_at"
LSN = "_sdc_lsn"
#: Set by :func:`collapse` on a delete whose values were known in its commit.
KNOWN = "__dativo_known"
_SEQ = "__dativo_seq"
_AT = "__dativo_at"
_FROM = "__dativo_from"


def is_deleted(rows: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Per row: whether it is a delete (``_sdc_deleted_at`` set)."""
    if DELETED_AT not in rows.column_names:
        return pa.array([False] * rows.num_rows, pa.bool_())
    return pc.is_valid(rows[DELETED_AT])


def _with_seq(rows: pa.Table) -> pa.Table:
    return rows.append_column(_SEQ, pa.array(range(rows.num_rows), pa.int64()))


def in_change_order(rows: pa.Table) -> pa.Table:
    """``rows`` ordered as their changes happened: by ``_sdc_lsn`` (stable), else as given."""
    if LSN not in rows.column_names or rows.num_rows < 2:
        return rows
    order = _with_seq(rows).select([LSN, _SEQ])
    indices = pc.sort_indices(
        order, sort_keys=[(LSN, "ascending", "at_start"), (_SEQ, "ascending", "at_end")]
    )
    return rows.take(indices)


def _last_index(rows: pa.Table, keys: Sequence[str]) -> pa.Array:
    """Indices of the last row of each key, ascending."""
    numbered = _with_seq(rows.select(list(keys)))
    last = numbered.group_by(list(keys), use_threads=False).aggregate([(_SEQ, "max")])
    index = last[f"{_SEQ}_max"].combine_chunks()
    return pc.take(index, pc.sort_indices(index))


@dataclass(frozen=True)
class Truncate:
    """The last TRUNCATE of a commit: its ``_sdc_deleted_at`` and ``_sdc_lsn`` values."""

    deleted_at: pa.Scalar
    lsn: Any


@dataclass(frozen=True)
class Changes:
    """A commit's changes: one row per key, applied after ``truncate`` when there is one."""

    rows: pa.Table
    truncate: Truncate | None = None


def is_truncate(rows: pa.Table | pa.RecordBatch, keys: Sequence[str]) -> pa.Array:
    """Per row: whether it is a TRUNCATE (every key null, ``_sdc_deleted_at`` set)."""
    mask = pc.is_valid(rows.column(DELETED_AT)) if DELETED_AT in rows.schema.names else None
    if mask is None or not keys:
        return pa.array([False] * rows.num_rows, pa.bool_())
    for key in keys:
        mask = pc.and_(mask, pc.is_null(rows.column(key)))
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def collapse(rows: pa.Table, keys: Sequence[str], *, soft: bool) -> Changes:
    """The last change of each key, after the last TRUNCATE (see the module's invariants).

    Args:
        rows: The commit's change records, in arrival order.
        keys: The stream's key properties.
        soft: Fill a delete's null columns from the key's previous row in ``rows``.
    """
    ordered = in_change_order(rows)
    truncate = None
    marks = is_truncate(ordered, keys)
    if pc.any(marks).as_py():
        at = pc.indices_nonzero(marks)[-1].as_py()
        marker = ordered.slice(at, 1)
        truncate = Truncate(
            marker[DELETED_AT][0],
            marker[LSN][0].as_py() if LSN in marker.column_names else None,
        )
        ordered = ordered.slice(at + 1)
    return Changes(_collapse(ordered, keys, soft=soft), truncate)


def _collapse(ordered: pa.Table, keys: Sequence[str], *, soft: bool) -> pa.Table:
    if ordered.num_rows < 2:
        return ordered
    last = ordered.take(_last_index(ordered, keys))
    if not soft or DELETED_AT not in ordered.column_names:
        return last
    deleted = is_deleted(last)
    if not pc.any(deleted).as_py():
        return last
    values = ordered.filter(pc.invert(is_deleted(ordered)))
    if values.num_rows == 0:
        return last
    known = values.take(_last_index(values, keys))
    filled = fill_from(last, known, keys)
    # A delete filled here has its last known values, nulls included: not from the table.
    return filled.append_column(KNOWN, pc.and_(deleted, member(last, known, keys)))


def fill_from(rows: pa.Table, known: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``rows`` with each delete's null columns filled from the row of ``known`` with the
    same key (one row per key in ``known``); keys, ``_sdc_deleted_at`` and ``_sdc_lsn``
    stay the delete's. Columns of ``known`` that ``rows`` lacks are ignored."""
    deleted = is_deleted(rows)
    if KNOWN in rows.column_names:
        deleted = pc.and_(deleted, pc.invert(pc.fill_null(rows[KNOWN], False)))
    if known.num_rows == 0 or not pc.any(deleted).as_py():
        return rows
    at = rows.select(list(keys)).append_column(_AT, pa.array(range(rows.num_rows), pa.int64()))
    at = at.filter(deleted)
    source = known.select(list(keys))
    source = source.cast(pa.schema([at.schema.field(k) for k in keys]))
    source = source.append_column(_FROM, pa.array(range(known.num_rows), pa.int64()))
    pairs = at.join(source, list(keys), join_type="inner", use_threads=False)
    if pairs.num_rows == 0:
        return rows
    # For each row of ``rows``: the row of ``known`` to fill it from, or null.
    origin: list[int | None] = [None] * rows.num_rows
    for target, found in zip(pairs[_AT].to_pylist(), pairs[_FROM].to_pylist(), strict=True):
        origin[target] = found
    take = pa.array(origin, pa.int64())
    fixed = set(keys) | {DELETED_AT, LSN, KNOWN}
    columns = []
    for field in rows.schema:
        column = rows[field.name]
        if field.name not in fixed and field.name in known.column_names:
            filler = known[field.name].take(take)
            if filler.type != field.type:
                filler = filler.cast(field.type)
            column = pc.if_else(pc.is_null(column), filler, column)
        columns.append(column)
    return pa.table(columns, schema=rows.schema)


def member(rows: pa.Table, changed: pa.Table, keys: Sequence[str]) -> pa.Array:
    """Per row of ``rows``: whether its key is one of ``changed``'s keys."""
    if rows.num_rows == 0:
        return pa.array([], pa.bool_())
    if len(keys) == 1:
        key = keys[0]
        values = changed[key].combine_chunks()
        column = rows[key]
        if values.type != column.type:
            values = values.cast(column.type)
        found = pc.is_in(column, value_set=values)
        return found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    at = rows.select(list(keys)).append_column(_AT, pa.array(range(rows.num_rows), pa.int64()))
    wanted = changed.select(list(keys)).cast(pa.schema([at.schema.field(k) for k in keys]))
    hits = at.join(wanted, list(keys), join_type="left semi", use_threads=False)
    mask = [False] * rows.num_rows
    for index in hits[_AT].to_pylist():
        mask[index] = True
    return pa.array(mask, pa.bool_())


def truncated(rows: pa.Table, truncate: Truncate) -> pa.Table:
    """``rows`` (of the table) soft-deleted by ``truncate``: each live row gets its
    ``_sdc_deleted_at`` (and ``_sdc_lsn``); rows deleted before keep theirs."""
    live = pc.is_null(rows[DELETED_AT])
    columns = []
    for field in rows.schema:
        column = rows[field.name]
        if field.name == DELETED_AT or (field.name == LSN and truncate.lsn is not None):
            if field.name == DELETED_AT:
                scalar = truncate.deleted_at
                fill = pa.array([scalar.as_py()] * rows.num_rows, scalar.type).cast(field.type)
            else:
                fill = pa.array([truncate.lsn] * rows.num_rows, pa.int64()).cast(field.type)
            column = pc.if_else(live, fill, column)
        columns.append(column)
    return pa.table(columns, schema=rows.schema)
