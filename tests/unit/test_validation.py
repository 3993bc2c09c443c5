"""JSON Schema constraints on decoded batches (dativo_bridge.validation).

Every constraint is tried on both decoders (the Rust one when installed, and the Python
paths alone): a record breaking it fails with a DecodeError naming the line, stream,
property and constraint; records that keep it decode; ``validate=False`` skips it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.errors import DecodeError
from dativo_bridge.schema import jsonschema_to_arrow
from dativo_bridge.sdk import TARGET_COMMON_SETTINGS

ACCELERATE = pytest.mark.parametrize("accelerate", [True, False], ids=["rust", "python"])


def decoder(props: dict[str, Any], accelerate: bool, **schema: Any) -> RecordDecoder:
    json_schema = {"type": "object", "properties": {"id": {"type": "integer"}, **props}, **schema}
    return RecordDecoder(
        "s",
        jsonschema_to_arrow(json_schema),
        ["id"],
        json_schema=json_schema,
        accelerate=accelerate,
    )


def lines(*records: dict[str, Any]) -> list[bytes]:
    return [
        json.dumps({"type": "RECORD", "stream": "s", "record": {"id": i, **r}}).encode() + b"\n"
        for i, r in enumerate(records)
    ]


def decode(d: RecordDecoder, data: list[bytes]) -> pa.RecordBatch:
    return d.decode(data, list(range(10, 10 + len(data))))


def segments(d: RecordDecoder, data: list[bytes]) -> pa.RecordBatch:
    return d.decode_segments([(b"".join(data), 0, len(b"".join(data)))], [10])


# property schema, a good value, a bad value, the keyword named in the error
CASES = [
    ({"type": "string", "enum": ["a", "b"]}, "b", "c", "enum"),
    ({"type": ["string", "null"], "const": "x"}, "x", "y", "const"),
    ({"type": "integer", "enum": [1, 2]}, 2, 3, "enum"),
    ({"type": "string", "maxLength": 3}, "ééé", "éééé", "maxLength"),
    ({"type": "string", "minLength": 2}, "ab", "a", "minLength"),
    ({"type": "string", "pattern": "^[a-z]+\\d$"}, "ab1", "ab", "pattern"),
    ({"type": "string", "pattern": "\\u00e9"}, "café", "cafe", "pattern"),
    ({"type": "integer", "minimum": 0}, 0, -1, "minimum"),
    ({"type": "integer", "maximum": 100}, 100, 101, "maximum"),
    ({"type": "integer", "exclusiveMinimum": 0}, 1, 0, "exclusiveMinimum"),
    ({"type": "integer", "exclusiveMaximum": 2.5}, 2, 3, "exclusiveMaximum"),
    ({"type": "integer", "minimum": 5, "exclusiveMinimum": True}, 6, 5, "minimum"),
    ({"type": "number", "minimum": 0.5}, 0.5, 0.25, "minimum"),
    ({"type": "number", "exclusiveMaximum": 1}, 0.999, 1.0, "exclusiveMaximum"),
    (
        {
            "type": "string",
            "format": "x-singer.decimal",
            "precision": 6,
            "scale": 2,
            "maximum": 9.99,
        },
        "9.99",
        "10.00",
        "maximum",
    ),
    (
        {
            "type": "string",
            "format": "x-singer.decimal",
            "precision": 6,
            "scale": 2,
            "exclusiveMinimum": 0.005,
        },
        "0.01",
        "0.00",
        "exclusiveMinimum",
    ),
    (
        {"type": "object", "properties": {"c": {"type": "string", "maxLength": 1}}},
        {"c": "x"},
        {"c": "xy"},
        "maxLength",
    ),
    ({"type": "array", "items": {"type": "integer", "minimum": 0}}, [0, 1], [1, -1], "minimum"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 1}, ["a"], ["a", "b"], "maxItems"),
]


@ACCELERATE
@pytest.mark.parametrize(("prop", "good", "bad", "keyword"), CASES)
def test_constraint_is_enforced(
    accelerate: bool, prop: dict[str, Any], good: Any, bad: Any, keyword: str
) -> None:
    d = decoder({"x": prop}, accelerate)
    assert decode(d, lines({"x": good}, {"x": good}, {"x": None})).num_rows == 3
    data = lines({"x": good}, {"x": good}, {"x": bad}, {"x": bad})
    for run in (decode, segments):
        with pytest.raises(DecodeError) as info:
            run(d, data)
        err = info.value
        assert (err.line_number, err.stream) == (12, "s"), str(err)
        assert err.field is not None and err.field.startswith("x"), str(err)
        assert f"'{keyword}'" in str(err)
    off = RecordDecoder("s", d.schema, ["id"], json_schema=None, accelerate=accelerate)
    assert decode(off, data).num_rows == 4


@ACCELERATE
def test_required_tells_missing_from_null(accelerate: bool) -> None:
    d = decoder(
        {"a": {"type": ["string", "null"]}, "b": {"type": "string"}},
        accelerate,
        required=["a", "b"],
    )
    assert decode(d, lines({"a": None, "b": "x"})).num_rows == 1  # a present null
    with pytest.raises(DecodeError, match="required property is missing") as info:
        decode(d, lines({"a": None, "b": "x"}, {"b": "x"}))
    assert (info.value.line_number, info.value.field) == (11, "a")
    with pytest.raises(DecodeError, match="missing or null") as info:
        decode(d, lines({"a": "1", "b": "x"}, {"a": "1", "b": None}))
    assert (info.value.line_number, info.value.field) == (11, "b")


@ACCELERATE
def test_required_in_a_nested_object(accelerate: bool) -> None:
    o = {"type": ["object", "null"], "properties": {"c": {"type": ["integer", "null"]}}}
    d = decoder({"o": {**o, "required": ["c"]}}, accelerate)
    assert decode(d, lines({}, {"o": None}, {"o": {"c": None}})).num_rows == 3
    with pytest.raises(DecodeError, match="required property is missing") as info:
        decode(d, lines({"o": {"c": 1}}, {"o": {}}))
    assert (info.value.line_number, info.value.field) == (11, "o.c")


@ACCELERATE
def test_additional_properties_false_refuses_undeclared_properties(accelerate: bool) -> None:
    d = decoder({"n": {"type": "string"}}, accelerate, additionalProperties=False)
    with pytest.raises(DecodeError, match="additionalProperties") as info:
        decode(d, lines({"n": "a"}, {"n": "b", "zz": 1}))
    assert (info.value.line_number, info.value.field) == (11, "zz")
    nested = {
        "type": "object",
        "properties": {"c": {"type": "integer"}},
        "additionalProperties": False,
    }
    d = decoder({"o": nested}, accelerate)
    assert decode(d, lines({"o": {"c": 1}})).num_rows == 1
    with pytest.raises(DecodeError, match="additionalProperties") as info:
        decode(d, lines({"o": {"c": 1}}, {"o": {"c": 1, "d": 2}}))
    assert (info.value.line_number, info.value.field) == (11, "o.d")


def test_unsupported_pattern_and_undeclared_required_are_refused_at_schema_time() -> None:
    with pytest.raises(Exception, match="RE2"):
        decoder({"x": {"type": "string", "pattern": "^(?!a)"}}, False)
    with pytest.raises(Exception, match="not declared"):
        decoder({}, False, required=["nope"])


def _input(validate: bool, schema: dict[str, Any], records: list[dict[str, Any]]) -> int:
    written: list[pa.RecordBatch] = []

    class Writers:
        def schema(self, info: Any) -> None:
            pass

        def write(self, stream: str, batch: pa.RecordBatch) -> None:
            written.append(batch)

    text = json.dumps({"type": "SCHEMA", "stream": "s", "schema": schema, "key_properties": []})
    text += "\n" + "".join(
        json.dumps({"type": "RECORD", "stream": "s", "record": r}) + "\n" for r in records
    )
    SingerInput(Writers(), validate_records=validate).process(io.StringIO(text))  # type: ignore[arg-type]
    return sum(b.num_rows for b in written)


def test_validate_records_setting_turns_the_checks_off() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer", "maximum": 1}}}
    with pytest.raises(DecodeError, match=r"line 3, stream 's', property 'x'.*'maximum'"):
        _input(True, schema, [{"x": 1}, {"x": 2}])
    assert _input(False, schema, [{"x": 1}, {"x": 2}]) == 2
    setting = TARGET_COMMON_SETTINGS["validate_records"]
    assert setting["type"] == "boolean" and setting["default"] is True
