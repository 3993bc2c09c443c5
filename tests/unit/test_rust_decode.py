"""The Rust Singer decoder (dativo_accel.RecordDecoder) against the Python one.

The rule under test: on any input, the Rust decoder either declines the batch or produces
exactly the batch the Python decoder produces (same schema, same values bit for bit, JSON
text byte for byte). It must decline whatever Python rejects, so that the errors a user
sees are always the Python decoder's (line, stream, property, expected type).
"""

from __future__ import annotations

import base64
import decimal
import json
import string
from collections.abc import Sequence

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import encode_records_python
from dativo_bridge.errors import DecodeError
from dativo_bridge.schema import JSON_TYPE
from tests.cases import ALL_TYPES
from tests.unit.test_codecs import SETTINGS, batches

accel = pytest.importorskip("dativo_accel")
if not hasattr(accel, "RecordDecoder"):
    pytest.skip("dativo_accel has no RecordDecoder", allow_module_level=True)


def _encoded(batch: pa.RecordBatch) -> bytes:
    """A faithful text of every value: shortest float digits (so -0.0 and NaN show),
    JSON text verbatim, nanoseconds, exact decimals, base64 bytes, nulls."""
    return encode_records_python(batch, "s")


def compare(
    schema: pa.Schema, lines: Sequence[bytes], keys: Sequence[str] = ()
) -> tuple[pa.RecordBatch | None, str | None]:
    """Decode ``lines`` both ways and check the rule; returns (Rust batch, decline reason)."""
    python = RecordDecoder("s", schema, keys, accelerate=False)
    rust = RecordDecoder("s", schema, keys)
    assert rust.uses_rust, "the Rust decoder should support this schema"
    numbers = list(range(1, len(lines) + 1))
    want: pa.RecordBatch | None = None
    error: DecodeError | None = None
    try:
        want = python.decode(lines, numbers)
    except DecodeError as exc:
        error = exc
    assert rust._rust is not None
    decoded, _extra, reason = rust._rust.decode(list(lines))
    if decoded is None:
        assert reason
        # The public path falls back to Python: the same batch or the same error.
        if error is None:
            assert _encoded(rust.decode(lines, numbers)) == _encoded(want)  # type: ignore[arg-type]
        else:
            with pytest.raises(DecodeError) as caught:
                rust.decode(lines, numbers)
            assert str(caught.value) == str(error)
        return None, reason
    assert error is None, f"Rust accepted what Python rejects: {error}"
    assert want is not None
    exported = pa.record_batch(decoded)
    assert exported.schema.equals(want.schema, check_metadata=False)
    got = pa.RecordBatch.from_arrays(exported.columns, schema=rust.schema)
    got.validate(full=True)
    assert got.schema.equals(want.schema, check_metadata=True)
    assert _encoded(got) == _encoded(want)
    return got, None


# ---------------------------------------------------------------------------
# Valid input: what our encoder writes (hypothesis-generated Arrow batches)
# ---------------------------------------------------------------------------


def _rust_supported(dtype: pa.DataType) -> bool:
    if pa.types.is_timestamp(dtype):
        return dtype.unit in ("us", "ns")
    if pa.types.is_struct(dtype):
        return all(_rust_supported(f.type) for f in dtype)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _rust_supported(dtype.value_type)
    return not (pa.types.is_date64(dtype) or pa.types.is_time32(dtype))


@SETTINGS
@given(batches())
def test_encoded_batches_decode_identically(batch: pa.RecordBatch) -> None:
    if not all(_rust_supported(f.type) for f in batch.schema):
        assert not RecordDecoder("s", batch.schema).uses_rust
        return
    lines = _encoded(batch).splitlines(keepends=True)
    _got, reason = compare(batch.schema, lines)
    # What our own encoder writes is read by Rust, except what Python itself reads in two
    # ways: date-times beyond years 1-9999 after UTC conversion, and integers beyond
    # i64..u64 in JSON text (orjson makes them floats, Python's json ints).
    if reason is not None:
        assert "range" in reason or "64 bits" in reason, reason


def test_every_type_decodes_identically() -> None:
    lines = _encoded(ALL_TYPES).splitlines(keepends=True)
    got, reason = compare(ALL_TYPES.schema, lines)
    assert got is not None, reason


def test_wide_batch_takes_the_rust_path() -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("f", pa.float64()),
            ("s", pa.string()),
            ("b", pa.bool_()),
            ("t", pa.timestamp("us", tz="UTC")),
            ("d", pa.date32()),
            ("n", pa.decimal128(12, 2)),
        ]
    )
    lines = [
        b'{"type":"RECORD","stream":"s","record":{"id":%d,"f":%d.5,"s":"x%d","b":true,'
        b'"t":"2020-01-01T00:00:%02d+00:00","d":"2020-01-%02d","n":"%d.25"},'
        b'"time_extracted":"2020-01-01T00:00:00+00:00"}\n' % (i, i, i, i % 60, i % 28 + 1, i)
        for i in range(2000)
    ]
    got, reason = compare(schema, lines, ["id"])
    assert got is not None, reason
    assert got.column("n").to_pylist()[3] == decimal.Decimal("3.25")


# ---------------------------------------------------------------------------
# Arbitrary input: JSON texts, valid or not, for each type
# ---------------------------------------------------------------------------

digits = st.text(string.digits, min_size=1, max_size=25)
number_texts = st.one_of(
    st.integers().map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(lambda f: json.dumps(f)),
    st.builds(
        lambda sign, i, f, e: f"{sign}{i}{f}{e}",
        st.sampled_from(["", "-"]),
        st.sampled_from(["0", "1", "12", "007", "123456789012345678901"]),
        st.sampled_from(["", ".", ".5", ".25", ".000", ".1234567890123456789"]),
        st.sampled_from(["", "e2", "E-3", "e+400", "e-400", "e"]),
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "1E2", "+1", ".5", "01"]),
    # orjson reads integers outside i64..u64 as floats.
    st.sampled_from(["18446744073709551615", "18446744073709551616", "-9223372036854775809"]),
    st.sampled_from(["123456789012345678901", "-9223372036854775808", "1" + "0" * 40]),
)


def _q(s: str) -> str:
    return json.dumps(s)


def _ts(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str, sep: str, zone: str) -> str:
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"


timestamp_texts = st.builds(
    _ts,
    st.sampled_from([1, 2, 1677, 1970, 2000, 2020, 2262, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", ".", ".1", ".123456", ".1234567", ".123456789", ".1234567891234", ",5"]),
    st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["", "Z", "z", "+00:00", "+05:30", "-23:59", "+24:00", "+0530", "-00:00"]),
).map(_q)
date_texts = st.builds(
    lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}",
    st.sampled_from([0, 1, 1900, 2000, 2001, 2004, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
).map(_q) | st.sampled_from(['"20200101"', '"2020-W01-1"', '"2020-01-01T00:00:00"'])
time_texts = st.builds(
    lambda h, m, s, f: f"{h:02d}:{m:02d}:{s:02d}{f}",
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", ".1", ".123456", ".1234567", "+01:00", ",5"]),
).map(_q) | st.sampled_from(['"10:00"', '"10"', '"1:00:00"'])
decimal_texts = (
    number_texts
    | number_texts.map(_q)
    | st.sampled_from(
        ['" 1.5"', '"1_0"', '"+1.5"', '"1."', '".5"', '"nan"', '"Infinity"', '"1e2"', '"-0.00"']
    )
)
base64_texts = st.binary(max_size=10).map(lambda b: _q(base64.b64encode(b).decode())) | (
    st.sampled_from(['"aGVsbG8"', '"aGVsbG9="', '"a==="', '"aGVs bG8="', '"QR=="', '""'])
)
string_texts = st.text(max_size=8).map(lambda s: json.dumps(s, ensure_ascii=False)) | (
    st.text(max_size=8).map(json.dumps)
    | st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\u00e9\\/"'])
)
json_leaf = st.one_of(number_texts, string_texts, st.sampled_from(["true", "false", "null"]))
json_texts = st.recursive(
    json_leaf,
    lambda c: (
        st.lists(c, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
        | st.lists(
            st.tuples(st.sampled_from(['"a"', '"b"', '"\\u0061"', '"é"']), c), max_size=3
        ).map(lambda kv: "{" + ",".join(f"{k}: {v}" for k, v in kv) + "}")
    ),
    max_leaves=8,
)
others = st.sampled_from(["null", "true", "1", "1.5", '"x"', "[]", "{}", '"1"'])

CASES: dict[str, tuple[pa.DataType, st.SearchStrategy[str]]] = {
    "int8": (pa.int8(), number_texts),
    "int64": (pa.int64(), number_texts),
    "uint64": (pa.uint64(), number_texts),
    "float64": (pa.float64(), number_texts),
    "float32": (pa.float32(), number_texts),
    "bool": (pa.bool_(), others),
    "string": (pa.string(), string_texts),
    "large_string": (pa.large_string(), string_texts),
    "binary": (pa.binary(), base64_texts),
    "decimal(12,2)": (pa.decimal128(12, 2), decimal_texts),
    "decimal(38,10)": (pa.decimal128(38, 10), decimal_texts),
    "decimal256(50,5)": (pa.decimal256(50, 5), decimal_texts),
    "timestamp[us,UTC]": (pa.timestamp("us", tz="UTC"), timestamp_texts),
    "timestamp[us]": (pa.timestamp("us"), timestamp_texts),
    "timestamp[ns,UTC]": (pa.timestamp("ns", tz="UTC"), timestamp_texts),
    "date32": (pa.date32(), date_texts),
    "time64[us]": (pa.time64("us"), time_texts),
    "json": (JSON_TYPE, json_texts),
    "struct": (pa.struct([("a", pa.int32()), ("b", pa.string())]), json_texts),
    "list<int32>": (pa.list_(pa.int32()), json_texts),
}


@pytest.mark.parametrize("name", list(CASES))
@SETTINGS
@given(data=st.data())
def test_arbitrary_values_agree(name: str, data: st.DataObject) -> None:
    dtype, texts = CASES[name]
    values = data.draw(st.lists(texts | others, min_size=1, max_size=4))
    schema = pa.schema([("id", pa.int64(), False), ("v", dtype)])
    spaces = data.draw(st.sampled_from(["", " ", "\t", "\r"]))
    lines = []
    for i, v in enumerate(values):
        members = [f'"id":{i}', f'"v":{spaces}{v}']
        if data.draw(st.booleans()):
            members.reverse()
        lines.append(('{"type":"RECORD","record":{' + ",".join(members) + "}}\n").encode())
    compare(schema, lines, ["id"])


# ---------------------------------------------------------------------------
# Message shape: members, keys, whitespace, malformed JSON
# ---------------------------------------------------------------------------

SHAPES = [
    b'{"type":"RECORD","stream":"s","record":{"id":1,"x":"a"}}',
    b'  {"record" : {"x" : "a" , "id" : 1} , "stream" : "s"}  \r\n',
    b'{"record":{"id":1},"time_extracted":"2020","version":3,"extra":{"a":[1,{"b":NaN}]}}',
    b'{"rec\\u006frd":{"id":1}}',
    b'{"record":{"id":1,"other":1,"more":[1,2]}}',
    b'{"record":{"id":1,"x":"a"},"record":{"id":2}}',
    b'{"record":{"id":1,"x":"a","x":"b"}}',
    b'{"record":{"id":null}}',
    b'{"record":{"x":"a"}}',
    b'{"record":{"id":1}',
    b'{"record":{"id":1}}}',
    b'{"record":{"id":1},}',
    b'{"record":{"id":1,}}',
    b'{"record":{"id":01}}',
    b'{"record":{"id":1}} {"record":{"id":2}}',
    b'["record",{"id":1}]',
    b'{"record":null}',
    b'{"record":"x"}',
    b"{}",
    b"",
    b'{"record":{"id":1,"x":"\xff"}}',
    b'{"record":{"id":1,"x":"a\x01"}}',
    b'{"record":{"id":1,"x":"\\x"}}',
    b'{"record":{"id":1},"y":tru}',
    b'{"record":{"id":1},"y":"\\ud800"}',
    b'{"record":{"id":1,"x":1}}',
    b"{'record':{\"id\":1}}",
]


@pytest.mark.parametrize("line", SHAPES, ids=range(len(SHAPES)))
def test_message_shapes_agree(line: bytes) -> None:
    schema = pa.schema([("id", pa.int64(), False), ("x", pa.string())])
    compare(schema, [line], ["id"])


def test_unsupported_types_leave_the_python_path() -> None:
    for dtype in (
        pa.date64(),
        pa.time32("s"),
        pa.timestamp("ms"),
        pa.dictionary(pa.int8(), pa.string()),
    ):
        schema = pa.schema([("v", dtype)])
        try:
            decoder = RecordDecoder("s", schema)
        except TypeError:
            continue  # no Singer decoding at all
        assert not decoder.uses_rust


def test_extra_properties_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    decoder = RecordDecoder("s", pa.schema([("id", pa.int64())]))
    assert decoder.uses_rust
    with caplog.at_level("WARNING", logger="dativo.decode"):
        batch = decoder.decode([b'{"record":{"id":1,"zz":2,"aa":[3]}}'], [1])
    assert batch.column("id").to_pylist() == [1]
    assert "aa, zz" in caplog.text


def test_json_text_is_kept_as_written() -> None:
    floats = [0.1, 1e16, 1e15, 1e-5, 1e-4, 1.5e-7, 123.456, 5e-324, 1.7976931348623157e308, 2.0**60]
    floats += [m * 10.0**e for e in range(-25, 25) for m in (1, 1.5, 9.87654321)]
    text = "[ " + ", ".join(repr(f) for f in floats) + ", 12345678901234567.89, 1e400, -0]"
    got, reason = compare(pa.schema([("j", JSON_TYPE)]), [b'{"record":{"j":%s }}' % text.encode()])
    assert got is not None, reason
    assert got.column("j").storage.to_pylist() == [text]


# Dativo's own SCHEMA for a JSON-text property: `null` is JSON null, SQL NULL is omitted.
_ANNOTATED = {b"x-sql-null": b"omitted"}


@SETTINGS
@given(data=st.data())
def test_annotated_json_values_agree(data: st.DataObject) -> None:
    values = data.draw(st.lists(json_texts | others | st.just("OMIT"), min_size=1, max_size=4))
    child = pa.field("j", JSON_TYPE, metadata=_ANNOTATED)
    schema = pa.schema(
        [("id", pa.int64(), False), child, ("s", pa.struct([child])), ("l", pa.list_(child))]
    )
    lines = []
    for i, v in enumerate(values):
        member = "" if v == "OMIT" else f',"j":{v}'
        record = f'{{"id":{i}{member},"s":{{{member[1:]}}},"l":[{"" if v == "OMIT" else v}]}}'
        lines.append(('{"type":"RECORD","record":' + record + "}\n").encode())
    compare(schema, lines, ["id"])
