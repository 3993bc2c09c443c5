"""Singer codecs: encode_records -> RecordDecoder round trips, output format, both decode paths."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk.singerlib.encoding.simple import RecordMessage, SimpleSingerReader

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.schema import JSON_TYPE, relax_nullability

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# Strategies: Arrow types, and values of each type
# ---------------------------------------------------------------------------

INTS = [getattr(pa, f"{sign}int{bits}")() for sign in ("", "u") for bits in (8, 16, 32, 64)]
SCALARS = [*INTS, pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.large_string()]
TIMESTAMPS = [
    pa.timestamp(u, tz=tz) for u in ("s", "ms", "us", "ns") for tz in (None, "UTC", "Europe/Paris")
]
DECIMALS = [pa.decimal128(p, s) for p, s in ((38, 0), (38, 10), (38, 38), (12, 2), (1, 0), (5, 5))]
decimal_types = st.one_of(
    st.sampled_from(DECIMALS),
    st.integers(1, 38).flatmap(lambda p: st.integers(0, p).map(lambda s: pa.decimal128(p, s))),
)

TRICKY = list('"\\/\n\r\t\b\f\x00\x01\x1b\x1f\x7f\u2028\u2029\ufeff\U0001f600é')
text = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=12)
names = st.text(st.sampled_from('ab_é" \\.€'), min_size=1, max_size=4)
json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
    max_leaves=8,
)


def _ts_values(dtype: pa.TimestampType) -> st.SearchStrategy[dt.datetime]:
    lo, hi = dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    if dtype.unit == "ns":  # int64 nanoseconds since the epoch
        lo, hi = dt.datetime(1678, 1, 1), dt.datetime(2262, 1, 1)
    elif dtype.tz not in (None, "UTC"):  # stay clear of year 0 / 10000 in local time
        lo, hi = dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31)
    zone = st.just(dt.UTC) if dtype.tz else st.none()
    step = {"s": 1_000_000, "ms": 1000}.get(dtype.unit, 1)
    return st.datetimes(lo, hi, timezones=zone).map(
        lambda v: v.replace(microsecond=v.microsecond // step * step)
    )


def values_for(dtype: pa.DataType) -> st.SearchStrategy[Any]:
    if pa.types.is_integer(dtype):
        bits = dtype.bit_width
        if pa.types.is_unsigned_integer(dtype):
            return st.integers(0, 2**bits - 1)
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if pa.types.is_floating(dtype):
        return st.floats(width=dtype.bit_width)  # NaN, +/-inf, -0.0 included
    if pa.types.is_boolean(dtype):
        return st.booleans()
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return text
    if pa.types.is_binary(dtype):
        return st.binary(max_size=16)
    if pa.types.is_decimal(dtype):
        limit = 10**dtype.precision - 1
        return st.integers(-limit, limit).map(lambda u: decimal.Decimal(f"{u}E-{dtype.scale}"))
    if pa.types.is_date32(dtype):
        return st.dates()
    if pa.types.is_time64(dtype):
        return st.times()
    if pa.types.is_timestamp(dtype):
        return _ts_values(dtype)
    if dtype == JSON_TYPE:
        return json_docs.map(json.dumps)
    if pa.types.is_struct(dtype):
        return st.fixed_dictionaries({f.name: _maybe_null(f) for f in dtype})
    if pa.types.is_list(dtype):
        return st.lists(_maybe_null(dtype.value_field), max_size=3)
    raise AssertionError(f"no strategy for {dtype}")


def _maybe_null(field: pa.Field) -> st.SearchStrategy[Any]:
    values = values_for(field.type)
    return st.one_of(st.none(), values) if field.nullable else values


def _fields(types: st.SearchStrategy[pa.DataType], name: st.SearchStrategy[str] = names):
    return st.tuples(name, types, st.booleans()).map(
        lambda t: pa.field(t[0], t[1], nullable=t[2] or t[1] == JSON_TYPE)
    )


def _nest(children: st.SearchStrategy[pa.DataType]) -> st.SearchStrategy[pa.DataType]:
    structs = st.lists(_fields(children), min_size=1, max_size=3, unique_by=lambda f: f.name).map(
        pa.struct
    )
    return st.one_of(children, structs, _fields(children, st.just("item")).map(pa.list_))


# Everything the decoder supports, nested to depth 2. JSON text is only generated at the
# top level: nested JSON columns cannot be decoded (see test_nested_json_columns_decode).
nested_leaves = st.one_of(
    st.sampled_from([*SCALARS, pa.binary(), pa.date32(), pa.time64("us"), *TIMESTAMPS]),
    decimal_types,
)
all_types = st.one_of(_nest(_nest(nested_leaves)), st.just(JSON_TYPE))
# Only what Arrow's JSON reader parses (dates and times only at the top level).
fast_leaves = st.one_of(st.sampled_from([*SCALARS, *TIMESTAMPS]), decimal_types)
fast_types = st.one_of(_nest(_nest(fast_leaves)), st.sampled_from([pa.date32(), pa.time64("us")]))


@st.composite
def batches(
    draw: st.DrawFn, types: st.SearchStrategy[pa.DataType] = all_types, max_rows: int = 6
) -> pa.RecordBatch:
    fields = draw(st.lists(_fields(types), min_size=1, max_size=5, unique_by=lambda f: f.name))
    rows = draw(st.integers(1, max_rows))
    arrays = []
    for f in fields:
        values = draw(st.lists(_maybe_null(f), min_size=rows, max_size=rows))
        if f.type == JSON_TYPE:
            arrays.append(pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(values, pa.string())))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# ---------------------------------------------------------------------------
# Comparison: NaN-aware, JSON text compared as parsed JSON
# ---------------------------------------------------------------------------


def canon(dtype: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    if dtype == JSON_TYPE:
        return json.loads(value)  # JSON text "null" decodes to a null value
    if pa.types.is_floating(dtype) and math.isnan(value):
        return "NaN"
    if pa.types.is_struct(dtype):
        return {f.name: canon(f.type, value[f.name]) for f in dtype}
    if pa.types.is_list(dtype):
        return [canon(dtype.value_type, v) for v in value]
    return value


def rows_of(batch: pa.RecordBatch) -> list[list[Any]]:
    return [
        [canon(f.type, v) for v in batch.column(i).to_pylist()] for i, f in enumerate(batch.schema)
    ]


def _decode(decoder: RecordDecoder, data: bytes) -> pa.RecordBatch:
    lines = data.splitlines(keepends=True)
    return decoder.decode(lines, list(range(1, len(lines) + 1)))


def _batch(columns: dict[str, tuple[pa.DataType, list[Any]]]) -> pa.RecordBatch:
    schema = pa.schema([(name, t) for name, (t, _) in columns.items()])
    return pa.RecordBatch.from_pydict({n: v for n, (_, v) in columns.items()}, schema=schema)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@SETTINGS
@given(batches())
def test_encode_decode_round_trip(batch: pa.RecordBatch) -> None:
    keys = [f.name for f in batch.schema if not f.nullable]
    decoder = RecordDecoder("s", batch.schema, keys)
    data = encode_records(batch, "s")
    assert data.count(b"\n") == batch.num_rows
    decoded = _decode(decoder, data)
    assert decoded.schema.equals(relax_nullability(batch.schema, keep=keys))
    assert rows_of(decoded) == rows_of(batch)


@SETTINGS
@given(batches(), st.data())
def test_round_trip_of_a_slice_and_a_table(batch: pa.RecordBatch, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, batch.num_rows - 1))
    part = batch.slice(start, data.draw(st.integers(1, batch.num_rows - start)))
    decoder = RecordDecoder("s", batch.schema)
    assert rows_of(_decode(decoder, encode_records(part, "s"))) == rows_of(part)
    table = pa.Table.from_batches([batch, part])
    assert encode_records(table, "s") == encode_records(batch, "s") + encode_records(part, "s")


@SETTINGS
@given(batches(), st.text(min_size=1, max_size=10), st.none() | st.integers(0, 2**53))
def test_every_line_is_a_valid_singer_record(
    batch: pa.RecordBatch, stream: str, version: int | None
) -> None:
    lines = encode_records(batch, stream, version=version).split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == batch.num_rows
    sdk = SimpleSingerReader()
    for row, line in enumerate(lines):
        message = json.loads(line)
        assert (
            sdk.deserialize_json(line.decode("utf-8"))["record"].keys() == message["record"].keys()
        )
        assert message["type"] == "RECORD"
        # Every column, except a JSON-text SQL NULL (left out: `null` is JSON's null).
        written = [
            f.name
            for f, column in zip(batch.schema, batch.columns, strict=True)
            if f.type != JSON_TYPE or column[row].is_valid
        ]
        assert list(message["record"]) == written
        assert message.get("version") == version
        record = RecordMessage.from_dict(message)
        assert record.stream == stream
        assert record.version == version


@SETTINGS
@given(batches(fast_types, max_rows=8))
def test_fast_and_exact_paths_agree(batch: pa.RecordBatch) -> None:
    decoder = RecordDecoder("s", batch.schema)
    assert decoder.uses_fast_path
    lines = encode_records(batch, "s").splitlines(keepends=True)
    fast = decoder._decode_fast(lines)
    exact = decoder._decode_exact(lines, list(range(1, len(lines) + 1)))
    assert fast is not None, "the fast path refused valid input"
    assert fast.schema.equals(exact.schema)
    assert rows_of(fast) == rows_of(exact) == rows_of(batch)


@pytest.mark.parametrize(
    ("dtype", "fast"),
    [
        (pa.binary(), False),
        (JSON_TYPE, False),
        (pa.struct([("d", pa.date32())]), False),
        (pa.list_(pa.time64("us")), False),
        (pa.date32(), True),
        (pa.time64("us"), True),
        (pa.struct([("a", pa.list_(pa.decimal128(5, 2)))]), True),
    ],
)
def test_uses_fast_path(dtype: pa.DataType, fast: bool) -> None:
    assert RecordDecoder("s", pa.schema([("id", pa.int64()), ("x", dtype)])).uses_fast_path is fast


# ---------------------------------------------------------------------------
# Output format
# ---------------------------------------------------------------------------


def test_float_tokens() -> None:
    batch = _batch(
        {
            "f": (pa.float64(), [math.nan, math.inf, -math.inf, 1.5, None]),
            "g": (pa.float32(), [math.nan, math.inf, -math.inf, 0.1, 2.0]),
        }
    )
    lines = encode_records(batch, "s").decode().splitlines()
    assert lines[0] == '{"type":"RECORD","stream":"s","record":{"f":NaN,"g":NaN}}'
    assert lines[1].endswith('{"f":Infinity,"g":Infinity}}')
    assert lines[2].endswith('{"f":-Infinity,"g":-Infinity}}')
    assert json.loads(lines[3])["record"] == {"f": 1.5, "g": 0.1}
    assert json.loads(lines[4])["record"] == {"f": None, "g": 2.0}


def test_timestamp_format() -> None:
    moment = dt.datetime(2021, 3, 4, 5, 6, 7, 8, tzinfo=dt.UTC)
    batch = _batch(
        {
            "utc": (pa.timestamp("us", tz="UTC"), [moment, moment.replace(microsecond=0)]),
            "paris": (pa.timestamp("us", tz="Europe/Paris"), [moment, moment]),
            "naive": (pa.timestamp("us"), [moment.replace(tzinfo=None), None]),
        }
    )
    records = [json.loads(x)["record"] for x in encode_records(batch, "s").splitlines()]
    assert records[0] == {
        "utc": "2021-03-04T05:06:07.000008+00:00",
        "paris": "2021-03-04T05:06:07.000008+00:00",
        "naive": "2021-03-04T05:06:07.000008",
    }
    assert records[1] == {
        "utc": "2021-03-04T05:06:07.000000+00:00",
        "paris": "2021-03-04T05:06:07.000008+00:00",
        "naive": None,
    }


def test_decimal_binary_date_time_and_json_format() -> None:
    batch = _batch(
        {
            "d": (pa.decimal128(10, 2), [decimal.Decimal("12.30"), decimal.Decimal("-0.05")]),
            "big": (pa.decimal128(38, 0), [decimal.Decimal("9" * 38), decimal.Decimal(0)]),
            "b": (pa.binary(), [b"\x00\xff", b""]),
            "day": (pa.date32(), [dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
            "at": (pa.time64("us"), [dt.time(3, 4, 5, 6), dt.time(23, 59, 59)]),
        }
    )
    text = encode_records(batch, "s", version=7).decode()
    assert text.splitlines()[0] == (
        '{"type":"RECORD","stream":"s","record":{"d":"12.30","big":"' + "9" * 38 + '",'
        '"b":"AP8=","day":"0001-01-01","at":"03:04:05.000006"},"version":7}'
    )
    second = json.loads(text.splitlines()[1])["record"]
    assert second == {
        "d": "-0.05",
        "big": "0",
        "b": "",
        "day": "9999-12-31",
        "at": "23:59:59.000000",
    }
    assert base64.b64decode(json.loads(text.splitlines()[0])["record"]["b"]) == b"\x00\xff"


def test_strings_are_escaped_and_json_text_is_inserted_raw() -> None:
    raw = 'q"b\\n\nr\rt\t\x00\x1f\u2028é'
    storage = pa.array(['{"k":[1,2.5,null]}', "null", None])
    batch = pa.RecordBatch.from_arrays(
        [pa.array([raw, None, ""]), pa.ExtensionArray.from_storage(JSON_TYPE, storage)],
        names=['s"1', "j"],
    )
    lines = encode_records(batch, 'str"eam').splitlines()
    assert all(b"\x00" not in ln and b"\x1f" not in ln for ln in lines)
    first = json.loads(lines[0])
    assert first["stream"] == 'str"eam'
    assert first["record"] == {'s"1': raw, "j": {"k": [1, 2.5, None]}}
    assert lines[0].endswith(b'"j":{"k":[1,2.5,null]}}}')
    assert json.loads(lines[1])["record"] == {'s"1': None, "j": None}
    # A SQL NULL of JSON text is left out; JSON's null (the text "null") is written.
    assert lines[1].endswith(b'"j":null}}')
    assert json.loads(lines[2])["record"] == {'s"1': ""}


def test_empty_batch_encodes_to_nothing() -> None:
    batch = pa.RecordBatch.from_pylist([], schema=pa.schema([("a", pa.int64())]))
    assert encode_records(batch, "s") == b""
    assert RecordDecoder("s", batch.schema).decode([], []).num_rows == 0
