"""Test data shared by unit and integration tests (so that unit tests import no
integration module)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa

from dativo_bridge.schema import JSON_TYPE

#: One batch holding every Arrow type the writers and codecs support, with edge values.
ALL_TYPES = pa.record_batch(
    {
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
)
