"""The JSON Schema <-> Arrow mapping (dativo_bridge/schema.py)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dativo_bridge.errors import SchemaMappingError
from dativo_bridge.schema import (
    JSON_TYPE,
    arrow_to_jsonschema,
    jsonschema_to_arrow,
    parse_arrow_type,
    relax_nullability,
)

UTC_US = pa.timestamp("us", tz="UTC")


def _f(name: str, dtype: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, dtype, nullable=nullable)


def _map_one(prop: dict[str, Any]) -> pa.Field:
    return jsonschema_to_arrow({"type": "object", "properties": {"p": prop}}).field("p")


def _int(lo: int | None, hi: int | None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        prop["minimum"] = lo
    if hi is not None:
        prop["maximum"] = hi
    return prop


def _dec(precision: int | None, scale: int | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string", "format": "x-singer.decimal"}
    if precision is not None:
        prop["precision"] = precision
    if scale is not None:
        prop["scale"] = scale
    return prop


# (id, JSON Schema property, expected Arrow type, expected nullability)
# fmt: off
MAPPING: list[tuple[str, dict[str, Any], pa.DataType, bool]] = [
    ("integer", {"type": "integer"}, pa.int64(), False),
    ("int8-exact", _int(-(2**7), 2**7 - 1), pa.int8(), False),
    ("int8-narrow", _int(-5, 100), pa.int8(), False),
    ("uint8", _int(0, 255), pa.uint8(), False),
    ("int16", _int(-1000, 1000), pa.int16(), False),
    ("uint16", _int(0, 60_000), pa.uint16(), False),
    ("int32", _int(-(2**31), 2**31 - 1), pa.int32(), False),
    ("uint32", _int(0, 2**32 - 1), pa.uint32(), False),
    ("int64-bounds", _int(-(2**63), 2**63 - 1), pa.int64(), False),
    ("uint64", _int(0, 2**64 - 1), pa.uint64(), False),
    ("uint64-above-int64", _int(0, 2**63), pa.uint64(), False),
    ("minimum-only", _int(0, None), pa.int64(), False),
    ("maximum-only", _int(None, 10), pa.int64(), False),
    ("number", {"type": "number"}, pa.float64(), False),
    ("boolean", {"type": "boolean"}, pa.bool_(), False),
    ("string", {"type": "string"}, pa.string(), False),
    ("date-time", {"type": "string", "format": "date-time"}, UTC_US, False),
    ("date", {"type": "string", "format": "date"}, pa.date32(), False),
    ("time", {"type": "string", "format": "time"}, pa.time64("us"), False),
    ("decimal-12-2", _dec(12, 2), pa.decimal128(12, 2), False),
    ("decimal-38-38", _dec(38, 38), pa.decimal128(38, 38), False),
    ("decimal-no-scale", _dec(9), pa.decimal128(9, 0), False),
    ("decimal-singer-alias", {"type": "string", "format": "singer.decimal", "precision": 5,
                              "scale": 1}, pa.decimal128(5, 1), False),
    ("decimal256", _dec(39, 4), pa.decimal256(39, 4), False),
    ("decimal256-max", _dec(76, 10), pa.decimal256(76, 10), False),
    ("decimal-too-wide", _dec(77, 2), pa.string(), False),
    ("decimal-no-precision", _dec(None), pa.string(), False),
    ("base64", {"type": "string", "contentEncoding": "base64"}, pa.binary(), False),
    ("null-first", {"type": ["null", "integer"]}, pa.int64(), True),
    ("null-last", {"type": ["string", "null"]}, pa.string(), True),
    ("anyOf-null", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, pa.int64(), True),
    ("anyOf-null-date-time", {"anyOf": [{"type": "string", "format": "date-time"},
                                        {"type": "null"}]}, UTC_US, True),
    ("oneOf-null", {"oneOf": [{"type": "null"}, {"type": "boolean"}]}, pa.bool_(), True),
    ("struct", {"type": "object", "properties": {"a": {"type": "integer"},
                                                 "b": {"type": ["string", "null"]}}},
     pa.struct([_f("a", pa.int64(), False), _f("b", pa.string())]), False),
    ("struct-nullable", {"type": ["object", "null"], "properties": {"a": {"type": "number"}},
                         "additionalProperties": False},
     pa.struct([_f("a", pa.float64(), False)]), True),
    ("struct-untyped", {"properties": {"a": {"type": "boolean"}}},
     pa.struct([_f("a", pa.bool_(), False)]), False),
    ("list", {"type": "array", "items": {"type": "integer"}},
     pa.list_(_f("item", pa.int64(), False)), False),
    ("list-of-nullable-struct", {"type": ["array", "null"], "items": {
        "type": ["object", "null"], "properties": {"d": {"type": "string", "format": "date"}}}},
     pa.list_(_f("item", pa.struct([_f("d", pa.date32(), False)]))), True),
    ("list-no-items", {"type": "array"}, pa.list_(_f("item", JSON_TYPE)), False),
    ("tuple-items", {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]},
     JSON_TYPE, True),
    ("free-object", {"type": "object"}, JSON_TYPE, True),
    ("empty-properties", {"type": "object", "properties": {}}, JSON_TYPE, True),
    ("additionalProperties-true", {"type": "object", "properties": {"a": {"type": "integer"}},
                                   "additionalProperties": True}, JSON_TYPE, True),
    ("additionalProperties-schema", {"type": "object", "additionalProperties":
                                     {"type": "string"}}, JSON_TYPE, True),
    ("patternProperties", {"type": "object", "properties": {"a": {"type": "integer"}},
                           "patternProperties": {"^x": {"type": "string"}}}, JSON_TYPE, True),
    ("untyped", {}, JSON_TYPE, True),
    ("string-or-integer", {"type": ["string", "integer"]}, JSON_TYPE, True),
    ("anyOf-object-or-string", {"anyOf": [{"type": "object"}, {"type": "string"}]},
     JSON_TYPE, True),
    ("integer-or-number", {"type": ["integer", "number"]}, pa.float64(), False),
    ("integer-or-number-null", {"type": ["integer", "number", "null"]}, pa.float64(), True),
    ("anyOf-datetime-or-string", {"anyOf": [{"type": "string", "format": "date-time"},
                                            {"type": "string"}]}, pa.string(), False),
    ("anyOf-datetime-or-string-null", {"anyOf": [
        {"type": "string", "format": "date-time"}, {"type": "string"}, {"type": "null"}]},
     pa.string(), True),
    ("anyOf-binary-or-string", {"anyOf": [{"type": "string", "contentEncoding": "base64"},
                                          {"type": "string"}]}, JSON_TYPE, True),
    ("x-arrow-float32", {"type": "number", "x-arrow-type": "float32"}, pa.float32(), False),
    ("x-arrow-timestamp-ns-paris", {"type": ["string", "null"], "format": "date-time",
                                    "x-arrow-type": "timestamp[ns, tz=Europe/Paris]"},
     pa.timestamp("ns", tz="Europe/Paris"), True),
    ("x-arrow-naive-timestamp", {"type": "string", "format": "date-time",
                                 "x-arrow-type": "timestamp[ms]"}, pa.timestamp("ms"), False),
    ("x-arrow-large-string", {"type": "string", "x-arrow-type": "large_string"},
     pa.large_string(), False),
    ("x-arrow-int16", {"type": "integer", "x-arrow-type": "int16"}, pa.int16(), False),
    ("x-arrow-time64-ns", {"type": "string", "format": "time", "x-arrow-type": "time64[ns]"},
     pa.time64("ns"), False),
    ("x-arrow-only", {"x-arrow-type": "date64"}, pa.date64(), False),
    ("x-arrow-json", {"type": "object", "x-arrow-type": "json"}, JSON_TYPE, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("prop", "dtype", "nullable"), [c[1:] for c in MAPPING], ids=[c[0] for c in MAPPING]
)
def test_documented_mapping(prop: dict[str, Any], dtype: pa.DataType, nullable: bool) -> None:
    field = _map_one(prop)
    assert field.type == dtype, f"{prop} mapped to {field.type}, expected {dtype}"
    assert field.nullable is nullable


def test_json_type_is_the_arrow_json_extension() -> None:
    assert pa.json_(pa.string()) == JSON_TYPE
    assert isinstance(_map_one({"type": "object"}).type, pa.JsonType)


def test_fields_keep_declaration_order_and_names() -> None:
    names = ["zeta", "alpha", "with space", "ünïcode", "mid"]
    schema = jsonschema_to_arrow(
        {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    )
    assert schema.names == names


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("int16", pa.int16()),
        (" uint64 ", pa.uint64()),
        ("float16", pa.float16()),
        ("large_binary", pa.large_binary()),
        ("json", JSON_TYPE),
        ("timestamp[s]", pa.timestamp("s")),
        ("timestamp[us, tz=UTC]", UTC_US),
        ("timestamp[ns,tz=+05:30]", pa.timestamp("ns", tz="+05:30")),
        ("time32[ms]", pa.time32("ms")),
        ("duration[us]", pa.duration("us")),
    ],
)
def test_parse_arrow_type(name: str, dtype: pa.DataType) -> None:
    assert parse_arrow_type(name) == dtype


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {}},
        {"type": "object"},
        {"type": "object", "properties": ["a", "b"]},
        {},
    ],
    ids=["empty-properties", "no-properties", "properties-not-object", "empty-schema"],
)
def test_stream_schema_without_properties_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaMappingError, match="at least one property"):
        jsonschema_to_arrow(schema)


@pytest.mark.parametrize(
    ("prop", "fragment"),
    [
        ({"type": "decimal"}, "'decimal'"),
        ({"type": ["null", "money"]}, "'money'"),
        ({"type": "object", "properties": {"inner": {"type": "uuid"}}}, "'uuid'"),
        ({"type": "array", "items": {"type": "int"}}, "'int'"),
    ],
    ids=["unknown", "unknown-in-union", "unknown-nested", "unknown-items"],
)
def test_unknown_type_is_refused(prop: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemaMappingError, match="unsupported JSON Schema type") as info:
        _map_one(prop)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["float128", "timestamp[ps]", "timestamp[us", "varchar(10)", "decimal128(10, 2)", "Int64"],
)
def test_unknown_x_arrow_type_is_refused(name: str) -> None:
    with pytest.raises(SchemaMappingError, match="unknown x-arrow-type") as info:
        _map_one({"type": "string", "x-arrow-type": name})
    assert repr(name) in str(info.value)


def test_property_schema_must_be_an_object() -> None:
    with pytest.raises(SchemaMappingError, match="property 'p'"):
        _map_one("string")  # type: ignore[arg-type]


def test_arrow_type_without_mapping_is_refused() -> None:
    with pytest.raises(SchemaMappingError, match="no Singer mapping"):
        arrow_to_jsonschema(pa.schema([pa.field("m", pa.map_(pa.string(), pa.int64()))]))


# ---------------------------------------------------------------------------
# Property tests: Arrow -> JSON Schema -> Arrow
# ---------------------------------------------------------------------------

_INTS = [getattr(pa, f"{sign}int{bits}")() for sign in ("", "u") for bits in (8, 16, 32, 64)]
_LEAVES = [*_INTS, pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.large_string()]
_LEAVES += [pa.binary(), pa.date32(), pa.time64("us")]
_decimals = st.integers(1, 38).flatmap(
    lambda p: st.integers(0, p).map(lambda s: pa.decimal128(p, s))
)
_timestamps = st.builds(
    pa.timestamp,
    st.sampled_from(["s", "ms", "us", "ns"]),
    tz=st.sampled_from([None, "UTC", "Europe/Paris", "+05:30"]),
)
leaf_types = st.one_of(st.sampled_from(_LEAVES), _decimals, _timestamps, st.just(JSON_TYPE))
names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)


def arrow_fields(
    dtypes: st.SearchStrategy[pa.DataType], name: st.SearchStrategy[str] = names
) -> st.SearchStrategy[pa.Field]:
    """A field of one of ``dtypes``; JSON text fields are always nullable."""
    return st.tuples(name, dtypes, st.booleans()).map(
        lambda t: pa.field(t[0], t[1], nullable=t[2] or t[1] == JSON_TYPE)
    )


def _nested(children: st.SearchStrategy[pa.DataType]) -> st.SearchStrategy[pa.DataType]:
    structs = st.lists(
        arrow_fields(children), min_size=1, max_size=4, unique_by=lambda f: f.name
    ).map(pa.struct)
    lists = arrow_fields(children, st.just("item")).map(pa.list_)
    return st.one_of(children, structs, lists)


arrow_types = _nested(_nested(leaf_types))  # nesting to depth 2
arrow_schemas = st.lists(
    arrow_fields(arrow_types), min_size=1, max_size=6, unique_by=lambda f: f.name
).map(pa.schema)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(arrow_schemas)
def test_arrow_schema_survives_json_schema_round_trip(schema: pa.Schema) -> None:
    back = jsonschema_to_arrow(arrow_to_jsonschema(schema))
    assert back.equals(schema), f"\n{schema}\n!=\n{back}"


@FAST
@given(arrow_schemas)
def test_mapping_json_schemas_is_idempotent(schema: pa.Schema) -> None:
    first = arrow_to_jsonschema(schema)
    second = arrow_to_jsonschema(jsonschema_to_arrow(first))
    assert second == first
    assert jsonschema_to_arrow(second).equals(jsonschema_to_arrow(first))


# ---------------------------------------------------------------------------
# relax_nullability
# ---------------------------------------------------------------------------


def _all_fields(field: pa.Field, depth: int = 0) -> list[tuple[pa.Field, int]]:
    found = [(field, depth)]
    dtype = field.type
    if pa.types.is_struct(dtype):
        for i in range(dtype.num_fields):
            found += _all_fields(dtype.field(i), depth + 1)
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        found += _all_fields(dtype.value_field, depth + 1)
    return found


def _strip_nullability(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(dtype):
        return pa.struct(
            [
                pa.field(dtype.field(i).name, _strip_nullability(dtype.field(i).type))
                for i in range(dtype.num_fields)
            ]
        )
    if pa.types.is_list(dtype):
        return pa.list_(pa.field(dtype.value_field.name, _strip_nullability(dtype.value_type)))
    if pa.types.is_large_list(dtype):
        return pa.large_list(pa.field(dtype.value_field.name, _strip_nullability(dtype.value_type)))
    return dtype


def test_relax_nullability_keeps_keys_required_and_relaxes_everything_else() -> None:
    inner = pa.struct(
        [_f("x", pa.int32(), False), _f("ys", pa.large_list(_f("item", pa.string(), False)), False)]
    )
    schema = pa.schema(
        [
            _f("id", pa.int64(), False),
            _f("tenant", pa.string(), True),
            _f("name", pa.string(), False),
            _f("nested", inner, False),
            _f("rows", pa.list_(_f("item", inner, False)), False),
        ],
        metadata={b"origin": b"test"},
    )
    relaxed = relax_nullability(schema, keep=["id", "tenant", "not-a-column"])
    assert relaxed.names == schema.names
    assert relaxed.metadata == schema.metadata
    assert relaxed.field("id").nullable is False
    assert relaxed.field("tenant").nullable is False  # a key becomes required
    for name in ("name", "nested", "rows"):
        for field, _depth in _all_fields(relaxed.field(name)):
            assert field.nullable, f"{name}: {field} is still required"
    for orig, new in zip(schema, relaxed, strict=True):
        assert _strip_nullability(new.type) == _strip_nullability(orig.type)


def test_relax_nullability_relaxes_inside_key_columns() -> None:
    key = pa.struct([_f("part", pa.int64(), False)])
    relaxed = relax_nullability(pa.schema([_f("k", key, False)]), keep=["k"])
    assert relaxed.field("k").nullable is False
    assert relaxed.field("k").type.field(0).nullable is True


def test_relax_nullability_keeps_field_metadata() -> None:
    schema = pa.schema([pa.field("a", pa.int64(), nullable=False, metadata={b"k": b"v"})])
    assert relax_nullability(schema).field("a").metadata == {b"k": b"v"}


@FAST
@given(arrow_schemas, st.data())
def test_relax_nullability_property(schema: pa.Schema, data: st.DataObject) -> None:
    keep = data.draw(st.lists(st.sampled_from(schema.names), unique=True))
    relaxed = relax_nullability(schema, keep=keep)
    assert relaxed.names == schema.names
    for orig, new in zip(schema, relaxed, strict=True):
        assert _strip_nullability(new.type) == _strip_nullability(orig.type)
        assert new.nullable is (orig.name not in keep)
        assert all(f.nullable for f, depth in _all_fields(new) if depth > 0)
    assert relax_nullability(relaxed, keep=keep).equals(relaxed)
