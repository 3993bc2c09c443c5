"""The batches the writer checks write: a small stream, its evolved schema, and one batch
holding every Arrow type of the core mapping (docs/type-mapping.md) with edge values."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa

from dativo_bridge.schema import JSON_TYPE

SIMPLE = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)

#: SIMPLE plus one nullable column: the schema change the suite asks a writer to take.
EVOLVED = SIMPLE.append(pa.field("note", pa.string()))


def simple_batches(first_id: int, count: int, rows: int = 4) -> list[pa.RecordBatch]:
    """``count`` batches of ``rows`` rows of SIMPLE, ids from ``first_id`` on."""
    out = []
    for b in range(count):
        ids = list(range(first_id + b * rows, first_id + (b + 1) * rows))
        out.append(
            pa.record_batch(
                [
                    pa.array(ids, pa.int64()),
                    pa.array([None if i % 3 == 0 else f"row {i} é" for i in ids]),
                    pa.array([i * 1.25 if i % 4 else None for i in ids], pa.float64()),
                    pa.array(
                        [
                            dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i)
                            for i in ids
                        ],
                        pa.timestamp("us", tz="UTC"),
                    ),
                ],
                schema=SIMPLE,
            )
        )
    return out


def evolved_batch(first_id: int, rows: int = 3) -> pa.RecordBatch:
    """One batch of EVOLVED with a value in the new column on every row."""
    [base] = simple_batches(first_id, 1, rows)
    notes = pa.array([f"note {i}" for i in range(first_id, first_id + rows)])
    return pa.RecordBatch.from_arrays([*base.columns, notes], schema=EVOLVED)


def all_types() -> pa.RecordBatch:
    """Every Arrow type the mapping produces, nulls in every column but the key ``id``."""
    columns = {
        "id": pa.array([1, 2, 3], pa.int64()),
        "i8": pa.array([-128, None, 127], pa.int8()),
        "i16": pa.array([-32768, 0, None], pa.int16()),
        "i32": pa.array([2**31 - 1, None, 0], pa.int32()),
        "u16": pa.array([65535, 0, None], pa.uint16()),
        "f32": pa.array([1.5, None, float("inf")], pa.float32()),
        "f64": pa.array([float("nan"), -0.0, 1e308]),
        "b": pa.array([True, False, None]),
        "s": pa.array(['quote " \\ \n é 😀', "", None]),
        "bin": pa.array([b"\x00\xff", b"", None]),
        "dec": pa.array(
            [
                decimal.Decimal("12345678901234567890.12345678"),
                None,
                decimal.Decimal("-0.00000001"),
            ],
            pa.decimal128(28, 8),
        ),
        "d": pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31), None]),
        "t": pa.array([dt.time(0, 0), dt.time(23, 59, 59, 999999), None]),
        "ts": pa.array(
            [
                dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                dt.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=dt.UTC),
                None,
            ],
            pa.timestamp("us", tz="UTC"),
        ),
        "naive": pa.array(
            [dt.datetime(2000, 1, 1), None, dt.datetime(1900, 6, 1, 1, 2, 3)], pa.timestamp("us")
        ),
        "j": pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(['{"a": [1, null]}', "3", None])),
        "st": pa.array(
            [{"x": 1, "y": "a"}, None, {"x": None, "y": None}],
            pa.struct([("x", pa.int64()), ("y", pa.string())]),
        ),
        "l": pa.array([[1, None], [], None], pa.list_(pa.int64())),
        "ls": pa.array([["a"], None, []], pa.list_(pa.string())),
    }
    schema = pa.schema([pa.field(n, c.type, nullable=n != "id") for n, c in columns.items()])
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=schema)
