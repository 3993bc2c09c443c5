"""What the reader does to the batches a COPY gives: key groups kept whole across batch
boundaries (so a bookmark after any batch covers every row at or below it), and
PostgreSQL's infinities made finite (or null) for engines that cannot read them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from tap_dativo_postgres.catalog import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN


def whole_key_groups(batches: Iterator[pa.RecordBatch], key: str) -> Iterator[pa.RecordBatch]:
    """Re-cut key-ordered batches (NULL keys first) so that no value of ``key`` spans two
    batches.

    The rows sharing the last key value of a batch are held back and lead the next one, so
    a bookmark taken after any batch covers every row at or below it. (A group of equal
    keys is held in memory whole.) Rows with a NULL key come first and pass straight
    through: they do not move the bookmark, so no STATE is released while they go by.
    """
    import pyarrow.compute as pc  # here: --discover does not need it

    carry: pa.RecordBatch | None = None
    for batch in batches:
        if carry is not None and carry.num_rows:
            batch = pa.Table.from_batches([carry, batch]).combine_chunks().to_batches()[0]
        carry = None
        if batch.num_rows == 0:
            continue
        column = batch.column(key)
        last = column[batch.num_rows - 1]
        if not last.is_valid:
            yield batch  # all NULL keys
            continue
        tail = pc.sum(pc.equal(column, last)).as_py() or 0
        cut = batch.num_rows - tail
        if cut:
            yield batch.slice(0, cut)
        carry = batch.slice(cut)
    if carry is not None and carry.num_rows:
        yield carry


_CLAMP_TIMESTAMP = 253402300799999999  # 9999-12-31 23:59:59.999999 in microseconds
_CLAMP_TIMESTAMP_LOW = -62135596800000000  # 0001-01-01 00:00:00
_CLAMP_DATE = 2932896  # 9999-12-31 in days since the epoch
_CLAMP_DATE_LOW = -719162  # 0001-01-01
_DAY_US = 86_400_000_000


def finite_values(schema: pa.Schema, mode: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """A function that replaces PostgreSQL's infinities (the extreme integers of date and
    timestamp columns) and time 24:00:00 by the nearest value engines can read, or by
    null (``mode``), in the top-level columns of a batch. Batches without them are
    returned unchanged (one min/max per such column)."""
    import pyarrow.compute as pc  # here: --discover does not need it

    plans: list[tuple[int, int, int, int, int, pa.DataType]] = []
    for i, f in enumerate(schema):
        if pa.types.is_timestamp(f.type) and f.type.unit == "us":
            plans.append(
                (i, INT64_MIN, INT64_MAX, _CLAMP_TIMESTAMP_LOW, _CLAMP_TIMESTAMP, pa.int64())
            )
        elif pa.types.is_date32(f.type):
            plans.append((i, INT32_MIN, INT32_MAX, _CLAMP_DATE_LOW, _CLAMP_DATE, pa.int32()))
        elif pa.types.is_time64(f.type) and f.type.unit == "us":
            plans.append((i, -1, _DAY_US, 0, _DAY_US - 1, pa.int64()))

    def finite(batch: pa.RecordBatch) -> pa.RecordBatch:
        if not plans or batch.num_rows == 0:
            return batch
        columns = list(batch.columns)
        changed = False
        for i, low, high, clamp_low, clamp_high, storage in plans:
            column = columns[i]
            ticks = column.view(storage)
            bounds = pc.min_max(ticks)
            top, bottom = bounds["max"].as_py(), bounds["min"].as_py()
            if top is None or (top < high and bottom > low):
                continue
            is_high = pc.greater_equal(ticks, pa.scalar(high, storage))
            is_low = pc.less_equal(ticks, pa.scalar(low, storage))
            if mode == "null":
                fixed = pc.if_else(pc.or_(is_high, is_low), pa.scalar(None, storage), ticks)
            else:
                fixed = pc.if_else(is_high, pa.scalar(clamp_high, storage), ticks)
                fixed = pc.if_else(is_low, pa.scalar(clamp_low, storage), fixed)
            columns[i] = fixed.view(column.type)
            changed = True
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema) if changed else batch

    return finite
