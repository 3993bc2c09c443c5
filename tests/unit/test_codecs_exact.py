"""The Singer pipe keeps values exactly (issue 13, items 7, 8 and 15's codec side).

- JSON-text columns travel as the text written: no float round trip (big and precise
  numbers stay as they were), and JSON's ``null`` stays distinct from SQL NULL
  (``"x-sql-null": "omitted"``: a SQL NULL is an omitted property).
- ``1e400`` in a number column and ``NaN`` in a JSON-text column are DecodeErrors naming
  the line, stream and property; the NaN/Infinity tokens stay valid in number columns.
- A date, timestamp or time no Singer string can hold is an EncodeError naming the
  stream, column and row, never text such as ``"<value out of range: 2147483647>"``.

Each check runs on the Python paths and on the Rust ones (which must agree or decline).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pyarrow as pa
import pytest

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import encode_records, encode_records_python, encode_rows
from dativo_bridge.errors import DecodeError, EncodeError
from dativo_bridge.schema import (
    JSON_TYPE,
    SQL_NULL_KEY,
    arrow_to_jsonschema,
    jsonschema_to_arrow,
)

try:
    import dativo_accel as accel
except ImportError:  # pragma: no cover - the extension is optional
    accel = None

ENCODERS: list[tuple[str, Callable[[pa.RecordBatch, str], bytes | None]]] = [
    ("python", lambda batch, stream: encode_records_python(batch, stream))
]
if accel is not None:
    ENCODERS.append(("rust", lambda batch, stream: accel.encode_records(batch, stream, None)))
DECODERS = ["python"] + (["rust"] if accel is not None else [])


def _json(values: Sequence[str | None]) -> pa.Array:
    return pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(values, pa.string()))


def _through_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema a target maps from the SCHEMA message a tap writes for ``schema``."""
    return jsonschema_to_arrow(arrow_to_jsonschema(schema))


def _decode(schema: pa.Schema, data: bytes, how: str, keys: Sequence[str] = ()) -> pa.RecordBatch:
    lines = data.splitlines(keepends=True)
    decoder = RecordDecoder("s", schema, keys, accelerate=how == "rust")
    if how == "rust":
        assert decoder._rust is not None
        decoded, _extra, reason = decoder._rust.decode(lines)
        assert decoded is not None, f"the Rust decoder declined: {reason}"
        return pa.RecordBatch.from_arrays(pa.record_batch(decoded).columns, schema=decoder.schema)
    return decoder.decode(lines, list(range(1, len(lines) + 1)))


JSON_VALUES = [
    "null",  # JSON null
    None,  # SQL NULL
    "12345678901234567.89",
    "123456789012345678901234567890",
    '{"a": {"b": [12345678901234567890123, 1.000000000000000000001, -0, 1E2]}, "c": null}',
    '[0.1, 1e-400, 2.50, "\\u00e9", {"a": 1, "a": 2}]',
    '"text"',
    "-0",
]


def _json_batch() -> pa.RecordBatch:
    n = len(JSON_VALUES)
    struct = pa.StructArray.from_arrays(
        [_json(list(reversed(JSON_VALUES))), pa.array(range(n))], names=["meta", "n"]
    )
    return pa.RecordBatch.from_arrays(
        [_json(JSON_VALUES), pa.array(range(n)), struct, _json([None] * (n - 1) + ["1"])],
        names=["j", "id", "s", "k"],
    )


# ---------------------------------------------------------------------------
# Item 7: JSON text kept exactly; JSON null distinct from SQL NULL
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("encoder", "encode"), ENCODERS, ids=[e for e, _ in ENCODERS])
def test_json_values_survive_the_pipe_exactly(
    encoder: str, encode: Callable[[pa.RecordBatch, str], bytes | None], decoder: str
) -> None:
    batch = _json_batch()
    data = encode(batch, "s")
    assert data is not None, f"the {encoder} encoder declined"
    decoded = _decode(_through_schema(batch.schema), data, decoder)
    assert decoded.column("j").storage.to_pylist() == JSON_VALUES
    assert decoded.column("s").field("meta").storage.to_pylist() == list(reversed(JSON_VALUES))
    assert decoded.column("k").storage.to_pylist() == batch.column("k").storage.to_pylist()
    assert decoded.column("id").to_pylist() == batch.column("id").to_pylist()
    assert decoded.schema.field("j").metadata is None  # the annotation stays in the SCHEMA


def test_sql_null_is_an_omitted_property_and_json_null_is_null() -> None:
    batch = _json_batch()
    data = encode_records(batch, "s")
    assert data == encode_records_python(batch, "s")
    records = [json.loads(line)["record"] for line in data.splitlines()]
    assert records[0]["j"] is None and "j" in records[0]  # JSON null: written
    assert "j" not in records[1]  # SQL NULL: left out
    assert list(records[1]) == ["id", "s"]  # still valid JSON, commas right
    assert list(records[-1]) == ["j", "id", "s", "k"]
    assert "meta" not in records[-2]["s"] and records[-1]["s"]["meta"] is None
    line = data.splitlines()[2]
    assert b'"j":12345678901234567.89,' in line  # the text, not 1.2345678901234568e+16
    # The same rule in jsonl BATCH files; leading omitted members keep the JSON valid.
    first_null = pa.RecordBatch.from_arrays([_json([None, "1"]), pa.array([1, 2])], ["j", "x"])
    assert encode_rows(first_null) == b'{"x":1}\n{"j":1,"x":2}\n'
    assert encode_records(first_null, "s") == encode_records_python(first_null, "s")


def test_the_schema_declares_the_convention() -> None:
    schema = pa.schema(
        [
            ("j", JSON_TYPE),
            ("s", pa.struct([("meta", JSON_TYPE)])),
            ("l", pa.list_(JSON_TYPE)),
        ]
    )
    props = arrow_to_jsonschema(schema)["properties"]
    assert props["j"][SQL_NULL_KEY] == "omitted"
    assert props["s"]["properties"]["meta"][SQL_NULL_KEY] == "omitted"
    assert SQL_NULL_KEY not in props["l"]["items"]  # a list item cannot be left out
    assert arrow_to_jsonschema(_through_schema(schema))["properties"] == props


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_foreign_schema_reads_null_as_sql_null(decoder: str) -> None:
    """Without the annotation (a non-Dativo tap), null and a missing property are both SQL
    NULL, as before; numbers in JSON text are still kept as written."""
    schema = pa.schema([("j", JSON_TYPE), ("l", pa.list_(JSON_TYPE))])
    data = (
        b'{"type":"RECORD","stream":"s","record":{"j":null,"l":[null,1]}}\n'
        b'{"type":"RECORD","stream":"s","record":{}}\n'
        b'{"type":"RECORD","stream":"s","record":{"j":  [1.10, 1e400] ,"l":[]}}\n'
    )
    decoded = _decode(schema, data, decoder)
    assert decoded.column("j").storage.to_pylist() == [None, None, "[1.10, 1e400]"]
    assert decoded.column("l").to_pylist() == [[None, "1"], None, []]
    # With the annotation, a list item's null is still SQL NULL (items cannot be omitted).
    decoded = _decode(_through_schema(schema), data, decoder)
    assert decoded.column("j").storage.to_pylist() == ["null", None, "[1.10, 1e400]"]
    assert decoded.column("l").to_pylist() == [[None, "1"], None, []]


# ---------------------------------------------------------------------------
# Item 8: 1e400 in a number column, NaN in a JSON-text column
# ---------------------------------------------------------------------------

BAD_LINES = [
    (pa.float64(), "1e400"),
    (pa.float64(), "-1e400"),
    (pa.float64(), "1" + "0" * 400),
    (pa.float32(), "1e39"),
    (pa.float32(), "-3.5e38"),
    (JSON_TYPE, "[NaN]"),
    (JSON_TYPE, '{"a": [1, Infinity]}'),
    (JSON_TYPE, "-Infinity"),
    (JSON_TYPE, "NaN"),
]


@pytest.mark.parametrize(("dtype", "value"), BAD_LINES, ids=[v[:12] for _, v in BAD_LINES])
@pytest.mark.parametrize("exact", [False, True], ids=["any-path", "exact-path"])
def test_values_that_are_not_what_the_column_means_are_errors(
    dtype: pa.DataType, value: str, exact: bool
) -> None:
    fields: list[tuple[str, pa.DataType]] = [("id", pa.int64()), ("x", dtype)]
    if exact:
        fields.append(("b", pa.binary()))  # no fast path
    schema = pa.schema(fields)
    good = b'{"type":"RECORD","stream":"s","record":{"id":1,"x":null}}\n'
    bad = b'{"type":"RECORD","stream":"s","record":{"id":2,"x":%s}}\n' % value.encode()
    decoder = RecordDecoder("s", schema, ["id"])
    if decoder._rust is not None:
        decoded, _extra, _reason = decoder._rust.decode([good, bad])
        assert decoded is None, "the Rust decoder must decline"
    for accelerate in (True, False):
        with pytest.raises(DecodeError) as caught:
            RecordDecoder("s", schema, ["id"], accelerate=accelerate).decode([good, bad], [4, 5])
        error = caught.value
        assert (error.stream, error.line_number, error.field) == ("s", 5, "x")
        reason = "is not JSON" if dtype == JSON_TYPE else "is beyond the range of"
        assert reason in str(error), str(error)


@pytest.mark.parametrize("decoder", DECODERS)
def test_nan_and_infinity_tokens_stay_valid_in_number_columns(decoder: str) -> None:
    schema = pa.schema([("f", pa.float64()), ("g", pa.float32())])
    data = (
        b'{"type":"RECORD","stream":"s","record":{"f":NaN,"g":Infinity}}\n'
        b'{"type":"RECORD","stream":"s","record":{"f":-Infinity,"g":3.4e38}}\n'
        b'{"type":"RECORD","stream":"s","record":{"f":1.7976931348623157e308,"g":-1e-50}}\n'
    )
    decoded = _decode(schema, data, decoder)
    f = decoded.column("f").to_pylist()
    assert f[0] != f[0] and f[1:] == [float("-inf"), 1.7976931348623157e308]
    assert decoded.column("g").to_pylist()[0] == float("inf")


# ---------------------------------------------------------------------------
# Values no Singer string can hold: EncodeError (Rust declines)
# ---------------------------------------------------------------------------


def _ints(values: list[int], storage: pa.DataType, dtype: pa.DataType) -> pa.Array:
    return pa.array(values, storage).view(dtype)


UNWRITABLE: list[tuple[str, pa.Array, str]] = [
    ("date32", _ints([0, 2**31 - 1], pa.int32(), pa.date32()), "x"),
    ("date32-before-year-1", _ints([0, -719_163], pa.int32(), pa.date32()), "x"),
    ("date64", _ints([0, 2932897 * 86_400_000], pa.int64(), pa.date64()), "x"),
    ("time64-24h", _ints([0, 86_400 * 10**6], pa.int64(), pa.time64("us")), "x"),
    ("time64-negative", _ints([0, -1], pa.int64(), pa.time64("us")), "x"),
    ("time32", _ints([0, 86_400], pa.int32(), pa.time32("s")), "x"),
    ("timestamp-us", _ints([0, 2**62], pa.int64(), pa.timestamp("us", tz="UTC")), "x"),
    ("timestamp-s", _ints([0, -(2**40)], pa.int64(), pa.timestamp("s")), "x"),
    (
        "struct-child",
        pa.StructArray.from_arrays([_ints([0, 2**31 - 1], pa.int32(), pa.date32())], ["d"]),
        "x.d",
    ),
    (
        "list-item",
        pa.ListArray.from_arrays(
            [0, 1, 1, 3], _ints([0, 5, 2**31 - 1], pa.int32(), pa.date32()), mask=None
        ).slice(1),
        "x[]",
    ),
]


@pytest.mark.parametrize(("name", "array", "column"), UNWRITABLE, ids=[u[0] for u in UNWRITABLE])
def test_values_no_singer_string_can_hold_are_encode_errors(
    name: str, array: pa.Array, column: str
) -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1, 2]), array], names=["id", "x"])
    if accel is not None:
        assert accel.encode_records(batch, "s", None) is None, "the Rust encoder must decline"
    for encode in (encode_records, encode_records_python):
        with pytest.raises(EncodeError) as caught:
            encode(batch, "s")
        error = caught.value
        assert (error.stream, error.column, error.row) == ("s", column, 1), str(error)
        assert "no Singer string" in str(error) and "out of range" not in str(error)
    with pytest.raises(EncodeError):
        encode_rows(batch)
    table = pa.Table.from_batches([batch.slice(0, 1), batch])
    with pytest.raises(EncodeError) as caught:
        encode_records(table, "s")
    assert caught.value.row == 2  # counted in the table


def test_values_under_a_null_parent_are_not_written_so_not_errors() -> None:
    dates = _ints([0, 2**31 - 1], pa.int32(), pa.date32())
    struct = pa.StructArray.from_arrays([dates], ["d"], mask=pa.array([False, True]))
    lists = pa.ListArray.from_arrays([0, 1, 2], dates, mask=pa.array([False, True]))
    batch = pa.RecordBatch.from_arrays([struct, lists], names=["s", "l"])
    want = (
        b'{"type":"RECORD","stream":"s","record":{"s":{"d":"1970-01-01"},"l":["1970-01-01"]}}\n'
        b'{"type":"RECORD","stream":"s","record":{"s":null,"l":null}}\n'
    )
    assert encode_records_python(batch, "s") == want
    assert encode_records(batch, "s") == want
