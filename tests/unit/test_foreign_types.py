"""Types of foreign taps: the exact SCHEMA and RECORD lines pipelinewise-tap-postgres
sends for numeric(18,4), unconstrained numeric and text[] columns (its discovery:
``number`` + ``multipleOf`` 10**-scale with exclusive bounds 10**(precision-scale), and
array items ``$ref`` to its self-recursive ``definitions``) decode to exact Arrow types."""

from __future__ import annotations

import decimal
import io
import json
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.errors import DecodeError, SchemaMappingError
from dativo_bridge.schema import JSON_TYPE, jsonschema_to_arrow

# What pipelinewise-tap-postgres 2.x writes (singer-python, simplejson use_decimal=True).
SCHEMA_LINE = (
    '{"type": "SCHEMA", "stream": "public-items", "schema": {"type": "object", '
    '"properties": {"id": {"type": ["integer"], "minimum": -2147483648, "maximum": 2147483647}, '
    '"price": {"type": ["null", "number"], "exclusiveMaximum": true, '
    '"maximum": 100000000000000, "multipleOf": 0.0001, "exclusiveMinimum": true, '
    '"minimum": -100000000000000}, '
    '"amount": {"type": ["null", "number"], "multipleOf": 0.0001}, '
    '"tags": {"type": ["null", "array"], "items": '
    '{"$ref": "#/definitions/sdc_recursive_string_array"}}, '
    '"doc": {"type": ["null", "object", "array"]}}, '
    '"definitions": {"sdc_recursive_integer_array": {"type": ["null", "integer", "array"], '
    '"items": {"$ref": "#/definitions/sdc_recursive_integer_array"}}, '
    '"sdc_recursive_string_array": {"type": ["null", "string", "array"], '
    '"items": {"$ref": "#/definitions/sdc_recursive_string_array"}}}}, '
    '"key_properties": ["id"], "bookmark_properties": []}'
)
RECORD_LINES = [
    '{"type": "RECORD", "stream": "public-items", "record": {"id": 1, '
    '"price": 99999999999999.9999, "amount": 12345678901234567890.1234, '
    '"tags": ["x", "y"], "doc": {"a": 1}}, "version": 1764650000000, '
    '"time_extracted": "2026-12-02T04:53:02.000000Z"}',
    '{"type": "RECORD", "stream": "public-items", "record": {"id": 2, '
    '"price": -0.0001, "amount": null, "tags": null, "doc": null}, '
    '"version": 1764650000000, "time_extracted": "2026-12-02T04:53:02.000000Z"}',
]


class _Sink:
    def __init__(self) -> None:
        self.schemas: dict[str, pa.Schema] = {}
        self.rows: list[dict[str, Any]] = []

    def schema(self, info: Any, *args: Any) -> None:
        self.schemas[info.name] = info.schema

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        self.rows.extend(batch.to_pylist())

    def state(self, value: Any) -> None:
        pass

    def discard_after_commit(self, manifest: Any) -> None:
        pass


def _run(lines: list[str]) -> _Sink:
    sink = _Sink()
    SingerInput(sink).process(io.BytesIO(("\n".join(lines) + "\n").encode()))  # type: ignore[arg-type]
    return sink


def test_pipelinewise_schema_maps_to_exact_types() -> None:
    schema = jsonschema_to_arrow(json.loads(SCHEMA_LINE)["schema"])
    assert schema.field("price").type == pa.decimal128(18, 4)
    assert schema.field("amount").type == pa.decimal128(38, 4)
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("doc").type == JSON_TYPE


def test_pipelinewise_records_decode_exactly() -> None:
    sink = _run([SCHEMA_LINE, *RECORD_LINES])
    assert sink.rows == [
        {
            "id": 1,
            "price": decimal.Decimal("99999999999999.9999"),
            "amount": decimal.Decimal("12345678901234567890.1234"),
            "tags": ["x", "y"],
            "doc": '{"a": 1}',
        },
        {"id": 2, "price": decimal.Decimal("-0.0001"), "amount": None, "tags": None, "doc": None},
    ]


@pytest.mark.parametrize("accelerate", [True, False])
@pytest.mark.parametrize("other", [pa.float64(), JSON_TYPE, pa.binary()])
def test_decimal_from_json_number_keeps_its_digits(accelerate: bool, other: pa.DataType) -> None:
    """Every decoder path (Rust, Arrow's reader, the exact path that JSON-text and binary
    columns force) reads the digits, never the nearest double (1e14)."""
    schema = pa.schema([("n", pa.decimal128(38, 4)), ("o", other)])
    value = '"AA=="' if other == pa.binary() else "1.5"
    line = f'{{"type":"RECORD","stream":"s","record":{{"n":99999999999999.9999,"o":{value}}}}}'
    batch = RecordDecoder("s", schema, accelerate=accelerate).decode([line.encode()], [1])
    assert batch.column("n").to_pylist() == [decimal.Decimal("99999999999999.9999")]


def test_number_beyond_its_step_is_refused() -> None:
    schema = pa.schema([("n", pa.decimal128(38, 4)), ("j", JSON_TYPE)])
    line = b'{"type":"RECORD","stream":"s","record":{"n":1.23456,"j":1}}'
    with pytest.raises(DecodeError, match=r"value 1\.23456 does not fit"):
        RecordDecoder("s", schema).decode([line], [7])


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "number", "multipleOf": 0.01}, pa.decimal128(38, 2)),
        # a bound on one side only: unbounded, so precision 38
        ({"type": "number", "multipleOf": 1e-5, "maximum": 999.99999}, pa.decimal128(38, 5)),
        (
            {"type": "number", "multipleOf": 1e-5, "maximum": 999.99999, "minimum": -1},
            pa.decimal128(8, 5),
        ),
        (
            {"type": "number", "multipleOf": 1, "exclusiveMaximum": 1000, "minimum": 0},
            pa.decimal128(3, 0),
        ),
        (
            {"type": "number", "multipleOf": 0.01, "maximum": 10**50, "minimum": -(10**50)},
            pa.decimal256(53, 2),
        ),
        # pipelinewise's unconstrained numeric (precision 100, scale 38): no Arrow decimal.
        (
            {
                "type": "number",
                "multipleOf": 1e-38,
                "maximum": 10**62,
                "exclusiveMaximum": True,
                "minimum": -(10**62),
                "exclusiveMinimum": True,
            },
            pa.float64(),
        ),
        ({"type": "number", "multipleOf": 0.5}, pa.float64()),
        ({"type": "number", "multipleOf": 10}, pa.float64()),
    ],
)
def test_multiple_of_decimal_step(prop: dict[str, Any], expected: pa.DataType) -> None:
    schema = jsonschema_to_arrow({"type": "object", "properties": {"n": prop}})
    assert schema.field("n").type == expected


def test_local_refs_resolve() -> None:
    schema = jsonschema_to_arrow(
        {
            "type": "object",
            "properties": {
                "p": {"$ref": "#/$defs/point"},
                "ps": {"type": "array", "items": {"$ref": "#/definitions/point"}},
            },
            "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "definitions": {"point": {"type": ["null", "string"], "format": "date"}},
        }
    )
    assert schema.field("p").type == pa.struct([pa.field("x", pa.int64(), nullable=False)])
    assert schema.field("ps").type == pa.list_(pa.date32())


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        ({"$ref": "#/definitions/node"}, "recursive \\$ref"),
        ({"$ref": "https://example.com/s.json"}, "not a local reference"),
        ({"$ref": "#/definitions/missing"}, "names no schema"),
    ],
)
def test_bad_refs_are_refused(prop: dict[str, Any], message: str) -> None:
    root = {
        "type": "object",
        "properties": {"n": prop},
        "definitions": {
            "node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/node"}}}
        },
    }
    with pytest.raises(SchemaMappingError, match=message):
        jsonschema_to_arrow(root)
