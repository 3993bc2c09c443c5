"""The Rust Singer encoder (dativo_accel.encode_records) against the Python one: same bytes."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dativo_bridge.codecs.encode import encode_records as encode_records_fast
from dativo_bridge.codecs.encode import encode_records_python as encode_records
from dativo_bridge.errors import EncodeError
from dativo_bridge.schema import JSON_TYPE
from tests.cases import ALL_TYPES
from tests.unit.test_codecs import SETTINGS, batches

accel = pytest.importorskip("dativo_accel")
if not hasattr(accel, "encode_records"):
    pytest.skip("dativo_accel has no encode_records", allow_module_level=True)
rust_encode = accel.encode_records


def _same(batch: pa.RecordBatch, stream: str = "s", version: int | None = None) -> bytes | None:
    got = rust_encode(batch, stream, version)
    want = encode_records(batch, stream, version=version)
    if got is not None:
        assert got == want
    assert encode_records_fast(batch, stream, version=version) == want
    return got


@SETTINGS
@given(batches(), st.sampled_from(["s", 'a"b\\é\n', "wide"]), st.none() | st.integers(0, 2**40))
def test_hypothesis_batches_encode_identically(
    batch: pa.RecordBatch, stream: str, version: int | None
) -> None:
    _same(batch, stream, version)


@SETTINGS
@given(batches(), st.data())
def test_slices_encode_identically(batch: pa.RecordBatch, data: st.DataObject) -> None:
    lo = data.draw(st.integers(0, batch.num_rows))
    _same(batch.slice(lo))


@SETTINGS
@given(
    st.lists(st.floats(width=64), min_size=1, max_size=20),
    st.lists(st.floats(width=32), min_size=1, max_size=20),
)
def test_floats_encode_identically(f64: list[float], f32: list[float]) -> None:
    assert _same(pa.record_batch({"x": pa.array(f64, pa.float64())})) is not None
    assert _same(pa.record_batch({"x": pa.array(f32, pa.float32())})) is not None


FLOAT_EDGES = [
    0.0, -0.0, 1.0, 0.5, 0.1, 100.0, 1e5, 1e9, 1e10, 1234567890.0, 12345678901.0, 1e15,
    2.0**53, 1e20, 1e21, 1e22, 1e-5, 1e-6, 1.25e-6, 9.99e-7, 1e-7, 5e-324, 2.2250738585072014e-308,
    1.7976931348623157e308, float("nan"), float("inf"), float("-inf"), -1.5, 123.456, 1 / 3,
]  # fmt: skip


@pytest.mark.parametrize("dtype", [pa.float32(), pa.float64()])
def test_float_edges_encode_identically(dtype: pa.DataType) -> None:
    values = [*FLOAT_EDGES, *(-v for v in FLOAT_EDGES)]
    values += [m * 10.0**e for e in range(-12, 25) for m in (1, 1.5, 9.87654321)]
    assert _same(pa.record_batch({"x": pa.array(values, dtype)})) is not None


def test_all_types_batch_encodes_identically() -> None:
    assert _same(ALL_TYPES) is not None
    assert _same(ALL_TYPES.slice(1), "types", 3) is not None


def test_control_characters_and_names() -> None:
    values = ["".join(chr(c) for c in range(0x20)), "\x7f\u2028\ufeff😀", 'a"b\\']
    batch = pa.record_batch({'"\x01é': pa.array(values), "k\n": pa.array([1, 2, 3])})
    assert _same(batch, '\x01"') is not None


def test_names_with_nul_fall_back_to_python() -> None:
    # The C data interface cuts names at a NUL: Rust declines such batches.
    batch = pa.record_batch({"a\x00b": pa.array([1]), "s": pa.array([{"c\x00": 1}])})
    assert rust_encode(batch, "s", None) is None
    assert encode_records_fast(batch, "s") == encode_records(batch, "s")


SUPPORTED: list[tuple[pa.DataType, list[Any]]] = [
    (pa.int64(), [1, None, -(2**63)]),
    (pa.uint64(), [2**64 - 1, 0, None]),
    (pa.float64(), [0.5, None, 1e20]),
    (pa.string(), ["a", None, "é\n"]),
    (pa.large_string(), ["a", None, ""]),
    (pa.timestamp("us", tz="UTC"), [dt.datetime(2020, 1, 1, tzinfo=dt.UTC), None, None]),
    (pa.timestamp("ns"), [0, -1, None]),
    (pa.timestamp("s"), [0, -86_401, None]),
    (pa.timestamp("ms", tz="Europe/Paris"), [1, 2, None]),
    (pa.decimal128(12, 2), [decimal.Decimal("-0.01"), None, decimal.Decimal("1234567890.12")]),
    (pa.decimal128(38, 38), [decimal.Decimal("1E-38"), None, decimal.Decimal("-1E-30")]),
    (pa.decimal256(50, 10), [decimal.Decimal("1E-10"), None, decimal.Decimal("-12345.5")]),
    (pa.bool_(), [True, False, None]),
    (pa.date32(), [dt.date(2023, 3, 4), None, dt.date(1, 1, 1)]),
    (pa.date64(), [dt.date(2023, 3, 4), None, dt.date(1969, 12, 31)]),
    (pa.time32("s"), [dt.time(1, 2, 3), None, dt.time(0)]),
    (pa.time32("ms"), [dt.time(1, 2, 3, 456000), None, dt.time(0)]),
    (pa.time64("us"), [dt.time(1, 2, 3, 456789), None, dt.time(23, 59, 59, 999999)]),
    (pa.time64("ns"), [1, None, 86_400 * 10**9 - 1]),
    (pa.binary(), [b"hi", None, b""]),
    (pa.large_binary(), [b"\x00\xff\xfe", None, b"abcd"]),
    (pa.null(), [None, None, None]),
    (pa.struct([("a", pa.int64()), ("b", pa.string())]), [{"a": 1, "b": None}, None, {}]),
    (pa.struct([]), [{}, None, {}]),
    (pa.list_(pa.int64()), [[1, None], [], None]),
    (pa.large_list(pa.string()), [["a"], None, []]),
    (pa.list_(pa.int32(), 2), [[1, 2], None, [None, 3]]),
    (pa.list_(pa.struct([("x", pa.list_(pa.float32()))])), [[{"x": [1.5, None]}], None, [None]]),
]


@pytest.mark.parametrize(("dtype", "values"), SUPPORTED, ids=lambda v: str(v)[:30])
def test_types_are_handled_by_rust(dtype: pa.DataType, values: list[Any]) -> None:
    batch = pa.record_batch({"x": pa.array(values, dtype)})
    assert _same(batch, "s", 7) is not None
    assert _same(batch.slice(1, 2)) is not None


def test_json_text_is_handled_by_rust() -> None:
    storage = pa.array(['{"a":\n[1,\r\n2]}', None, "3"])
    batch = pa.record_batch({"j": pa.ExtensionArray.from_storage(JSON_TYPE, storage)})
    assert _same(batch) is not None


def _json(values: list[str | None]) -> pa.Array:
    return pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(values, pa.string()))


@SETTINGS
@given(st.data())
def test_json_sql_nulls_are_left_out_identically(data: st.DataObject) -> None:
    """SQL NULL JSON members are omitted (top level and in structs, in any position, with
    the commas right); list items and JSON null are written `null`."""
    rows = data.draw(st.integers(1, 5))
    texts = st.lists(
        st.sampled_from([None, "null", "1", '{"a":[1]}']), min_size=rows, max_size=rows
    )
    columns: dict[str, pa.Array] = {}
    for name in data.draw(st.permutations(["a", "b", "c", "s", "l"])):
        if name in "ab":
            columns[name] = _json(data.draw(texts))
        elif name == "c":
            columns[name] = pa.array(
                data.draw(
                    st.lists(
                        st.none() | st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows
                    )
                ),
                pa.int64(),
            )
        elif name == "s":
            mask = pa.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
            children = [_json(data.draw(texts)), _json(data.draw(texts))]
            columns[name] = pa.StructArray.from_arrays(children, names=["x", "y"], mask=mask)
        elif name == "l":
            columns[name] = pa.ListArray.from_arrays(
                pa.array(range(rows + 1)), _json(data.draw(texts))
            )
    batch = pa.record_batch(columns)
    assert _same(batch, "s", 3) is not None
    assert _same(batch.slice(rows // 2)) is not None


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1.5, None], pa.float16()),
        pa.array(["a", "b", "a"]).dictionary_encode(),
        pa.array([1, None], pa.duration("s")),
        pa.array([dt.date(1, 1, 1)]).cast(pa.date32()).cast(pa.int32()).cast(pa.date32()),
    ],
    ids=["float16", "dictionary", "duration", "date"],
)
def test_unsupported_types_fall_back_to_python(array: pa.Array) -> None:
    batch = pa.record_batch({"x": array})
    try:
        want: bytes | BaseException = encode_records(batch, "s")
    except TypeError as e:
        want = e
    if isinstance(want, bytes):
        assert encode_records_fast(batch, "s") == want
        got = rust_encode(batch, "s", None)
        assert got is None or got == want


def test_out_of_range_values_fall_back_to_python() -> None:
    batch = pa.record_batch({"d": pa.array([-800_000], pa.int32()).cast(pa.date32())})
    assert rust_encode(batch, "s", None) is None
    with pytest.raises(EncodeError, match="column 'd', row 0"):  # Python names the value
        encode_records_fast(batch, "s")


def test_tables_and_empty_batches() -> None:
    table = pa.Table.from_batches([ALL_TYPES, ALL_TYPES.slice(2)])
    assert encode_records_fast(table, "t", version=1) == encode_records(table, "t", version=1)
    assert rust_encode(ALL_TYPES.slice(0, 0), "s", None) == b""
    no_columns = pa.RecordBatch.from_pylist([{}, {}])
    assert _same(no_columns, "s", 2) is not None


def test_output_memory_is_reused_only_when_nothing_else_holds_it() -> None:
    """The encoder writes into its last output once every other reference is gone; an
    output still held is never touched, and a reused one hashes by its new contents."""
    first = pa.record_batch({"a": pa.array(["x" * 10] * 50_000)})
    second = pa.record_batch({"a": pa.array(["y" * 10] * 50_000)})  # same size
    kept = accel.encode_records(first, "s")
    copy = bytes(bytearray(kept))
    hash(kept)  # caches the hash of the first contents
    again = accel.encode_records(second, "s")
    assert kept == copy and again != kept  # the held output is unchanged
    assert again == encode_records(second, "s")
    del kept, copy
    for batch in (first, second, first):
        cached = hash(again)
        del again
        again = accel.encode_records(batch, "s")  # may reuse the dropped output's memory
        assert again == encode_records(batch, "s")
        assert hash(again) == hash(bytes(bytearray(again))) and hash(again) != cached
    bigger = pa.record_batch({"a": pa.array(["z" * 30] * 50_000)})
    del again
    assert accel.encode_records(bigger, "s") == encode_records(bigger, "s")
