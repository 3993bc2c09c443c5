"""Regression tests for codec edge cases found by property testing: nested JSON text,
nanoseconds on the exact path, negative zero, decimal notation, newlines in JSON text,
and values beyond the range of Python's datetime and float."""

from __future__ import annotations

import decimal
import json
import math

import pyarrow as pa
import pytest

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.errors import DecodeError
from dativo_bridge.schema import JSON_TYPE


def _decode(decoder: RecordDecoder, data: bytes) -> pa.RecordBatch:
    lines = data.splitlines(keepends=True)
    return decoder.decode(lines, list(range(1, len(lines) + 1)))


@pytest.mark.parametrize(
    "dtype",
    [pa.struct([("meta", JSON_TYPE)]), pa.list_(JSON_TYPE)],
    ids=["struct<json>", "list<json>"],
)
def test_nested_json_columns_decode(dtype: pa.DataType) -> None:
    storage = pa.array(['{"x":[1,"a"]}', "2"])
    inner = pa.ExtensionArray.from_storage(JSON_TYPE, storage)
    column = (
        pa.StructArray.from_arrays([inner], fields=[dtype.field(0)])
        if pa.types.is_struct(dtype)
        else pa.ListArray.from_arrays([0, 1, 2], inner)
    )
    batch = pa.RecordBatch.from_arrays([pa.array([1, 2]), column], names=["id", "n"])
    decoded = _decode(RecordDecoder("s", batch.schema, ["id"]), encode_records(batch, "s"))
    assert decoded.column("id").to_pylist() == [1, 2]
    expected = (
        [{"meta": {"x": [1, "a"]}}, {"meta": 2}]
        if pa.types.is_struct(dtype)
        else [[{"x": [1, "a"]}], [2]]
    )
    rows = decoded.column("n").to_pylist()
    if pa.types.is_struct(dtype):
        assert [{"meta": json.loads(r["meta"])} for r in rows] == expected
    else:
        assert [[json.loads(v) for v in r] for r in rows] == expected


def test_exact_path_keeps_nanoseconds() -> None:
    ts = pa.array([1_577_836_800_123_456_789], pa.timestamp("ns", tz="UTC"))
    batch = pa.RecordBatch.from_arrays([ts, pa.array([b"x"])], names=["t", "b"])
    line = encode_records(batch, "s")
    assert b'"2020-01-01T00:00:00.123456789+00:00"' in line
    decoder = RecordDecoder("s", batch.schema)  # binary column: exact path only
    assert not decoder.uses_fast_path
    decoded = _decode(decoder, line)
    assert decoded.column("t").cast(pa.int64()).to_pylist() == [1_577_836_800_123_456_789]


def test_negative_zero_keeps_its_sign() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([-0.0]), pa.array([b""])], names=["f", "b"])
    decoded = _decode(RecordDecoder("s", batch.schema), encode_records(batch, "s"))
    assert math.copysign(1.0, decoded.column("f")[0].as_py()) == -1.0


def test_decimals_are_written_with_exactly_scale_fraction_digits() -> None:
    values = [decimal.Decimal(v) for v in ("0.00000001", "0E-8", "-0.00000005", "12.5")]
    batch = pa.RecordBatch.from_arrays([pa.array(values, pa.decimal128(10, 8))], names=["x"])
    written = [json.loads(ln)["record"]["x"] for ln in encode_records(batch, "s").splitlines()]
    assert written == ["0.00000001", "0.00000000", "-0.00000005", "12.50000000"]


def test_json_text_with_newlines_stays_on_one_line() -> None:
    storage = pa.array(['{\n  "a": 1\n}'])
    batch = pa.RecordBatch.from_arrays(
        [pa.ExtensionArray.from_storage(JSON_TYPE, storage)], names=["j"]
    )
    data = encode_records(batch, "s")
    assert data.count(b"\n") == 1
    assert json.loads(data)["record"] == {"j": {"a": 1}}


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (pa.timestamp("us", tz="UTC"), '"0001-01-01T00:00:00+05:00"'),
        (pa.timestamp("us", tz="UTC"), '"9999-12-31T23:00:00-05:00"'),
        (pa.float64(), "1" + "0" * 400),
    ],
    ids=["date-time-before-year-1-utc", "date-time-after-9999-utc", "integer-too-big-for-float"],
)
def test_out_of_range_values_never_escape_as_other_errors(dtype: pa.DataType, value: str) -> None:
    line = b'{"type":"RECORD","stream":"s","record":{"x":' + value.encode() + b"}}\n"
    fast = RecordDecoder("s", pa.schema([("x", dtype)]))
    exact = RecordDecoder("s", pa.schema([("x", dtype), ("b", pa.binary())]))
    try:
        batch = exact.decode([line], [9])
    except DecodeError as exc:  # refusing the value with a precise error is fine ...
        assert (exc.line_number, exc.field) == (9, "x")
    else:  # ... and so is accepting it, if both paths read the same value
        assert batch.column("x").equals(fast.decode([line], [9]).column("x"))
