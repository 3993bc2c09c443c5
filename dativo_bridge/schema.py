"""The one mapping between Singer JSON Schema and Arrow schemas.

Types come from the schema, never from the data. The full table, with the reasons for
each choice, is in docs/type-mapping.md; this module is its implementation.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from dativo_bridge.arrow_types import map_children
from dativo_bridge.errors import SchemaMappingError

#: The canonical Arrow JSON extension type: free-form objects and mixed unions.
JSON_TYPE: pa.DataType = pa.json_(pa.string())

#: The JSON Schema types of a JSON-text column (any JSON value).
ANY_JSON_TYPES = ("object", "array", "string", "number", "boolean", "null")

#: JSON Schema annotation that pins an Arrow type JSON Schema alone cannot express.
ARROW_TYPE_KEY = "x-arrow-type"

#: JSON Schema annotation of a JSON-text property: ``"x-sql-null": "omitted"`` says the
#: tap writes a SQL NULL by leaving the property out of the record, so that a ``null``
#: present in the record is JSON's null value (docs/singer-codecs.md#json-null-and-sql-null).
SQL_NULL_KEY = "x-sql-null"
SQL_NULL_OMITTED = "omitted"
#: The Arrow field metadata that carries the annotation to the decoder.
SQL_NULL_METADATA = {SQL_NULL_KEY.encode(): SQL_NULL_OMITTED.encode()}

_DECIMAL_FORMATS = {"x-singer.decimal", "singer.decimal"}
_INT_TYPES: list[tuple[pa.DataType, int, int]] = [
    (pa.int8(), -(2**7), 2**7 - 1),
    (pa.uint8(), 0, 2**8 - 1),
    (pa.int16(), -(2**15), 2**15 - 1),
    (pa.uint16(), 0, 2**16 - 1),
    (pa.int32(), -(2**31), 2**31 - 1),
    (pa.uint32(), 0, 2**32 - 1),
    (pa.int64(), -(2**63), 2**63 - 1),
    (pa.uint64(), 0, 2**64 - 1),
]
_SIMPLE_NAMES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "date32": pa.date32(),
    "date64": pa.date64(),
    "json": JSON_TYPE,
}
_PARAM_TYPE = re.compile(r"^(timestamp|time32|time64|duration)\[(s|ms|us|ns)(?:,\s*tz=(.+))?\]$")


def parse_arrow_type(name: str) -> pa.DataType:
    """Parse the value of an `x-arrow-type` annotation.

    Args:
        name: e.g. ``int16``, ``float32``, ``timestamp[ns, tz=Europe/Paris]``, ``time64[ns]``.

    Returns:
        The Arrow type.

    Raises:
        SchemaMappingError: If the name is not one of the documented forms.
    """
    name = name.strip()
    if name in _SIMPLE_NAMES:
        return _SIMPLE_NAMES[name]
    match = _PARAM_TYPE.match(name)
    if match:
        kind, unit, tz = match.groups()
        if kind == "timestamp":
            return pa.timestamp(unit, tz=tz)
        if kind == "time32":
            return pa.time32(unit)
        if kind == "time64":
            return pa.time64(unit)
        return pa.duration(unit)
    raise SchemaMappingError(f"unknown {ARROW_TYPE_KEY} value {name!r}")


def format_arrow_type(dtype: pa.DataType) -> str:
    """Inverse of :func:`parse_arrow_type` for the types that need an annotation."""
    if pa.types.is_timestamp(dtype):
        tz = f", tz={dtype.tz}" if dtype.tz else ""
        return f"timestamp[{dtype.unit}{tz}]"
    if pa.types.is_time32(dtype) or pa.types.is_time64(dtype) or pa.types.is_duration(dtype):
        return f"{dtype}"
    if dtype == JSON_TYPE:
        return "json"
    return {pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64"}.get(
        dtype, str(dtype)
    )


# ---------------------------------------------------------------------------
# JSON Schema -> Arrow
# ---------------------------------------------------------------------------


def _types_of(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if declared is None:
        return []
    if isinstance(declared, str):
        return [declared]
    return list(declared)


def _branches(schema: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """Split a property schema into its non-null alternatives and a nullable flag."""
    nullable = False
    branches: list[Mapping[str, Any]] = []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []) or []:
            sub_branches, sub_nullable = _branches(sub)
            nullable = nullable or sub_nullable
            branches.extend(sub_branches)
    types = _types_of(schema)
    if "null" in types:
        nullable = True
    non_null = [t for t in types if t != "null"]
    base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf", "type")}
    for json_type in non_null:
        branches.append({**base, "type": json_type})
    if not types and not schema.get("anyOf") and not schema.get("oneOf"):
        # No type at all: an object if it has properties, otherwise anything.
        if "properties" in schema:
            branches.append({**base, "type": "object"})
        elif schema.get(ARROW_TYPE_KEY):
            branches.append(dict(base))
        else:
            branches.append({**base, "type": "any"})
            nullable = True
    return branches, nullable


def branches_of(schema: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """A property schema's non-null alternatives (``type`` lists, ``anyOf``, ``oneOf``,
    each with the schema's other keywords) and whether it admits null."""
    return _branches(schema)


def _integer_type(schema: Mapping[str, Any]) -> pa.DataType:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    if lo is None and hi is None:
        return pa.int64()
    for dtype, tlo, thi in _INT_TYPES:
        if (lo is not None and lo >= tlo) and (hi is not None and hi <= thi):
            return dtype
    if lo is not None and lo >= 0 and hi is not None and hi > 2**63 - 1:
        return pa.uint64()
    return pa.int64()


#: Widest decimal a ``number`` with a decimal ``multipleOf`` maps to when its bounds do
#: not say (docs/type-mapping.md#number-with-a-decimal-step).
_DEFAULT_STEP_PRECISION = 38


def _decimal_step(step: Any) -> int | None:
    """The scale ``s`` of a ``multipleOf`` that is exactly ``10**-s`` (``s >= 0``), else None."""
    if isinstance(step, bool) or not isinstance(step, int | float | decimal.Decimal):
        return None
    try:
        d = decimal.Decimal(str(step)).normalize()
    except decimal.InvalidOperation:
        return None
    sign, digits, exponent = d.as_tuple()
    if sign or digits != (1,) or not isinstance(exponent, int) or exponent > 0:
        return None
    return -exponent


def _integer_digits(schema: Mapping[str, Any]) -> int | None:
    """Digits before the point that the bounds of a number allow, or None if unbounded.

    Both draft-4 (``exclusiveMaximum: true`` beside ``maximum``) and draft-6 (a number)
    forms count; a bound on only one side leaves the number unbounded.
    """
    widest: decimal.Decimal | None = None
    for bound_key, flag_key in (("maximum", "exclusiveMaximum"), ("minimum", "exclusiveMinimum")):
        bound: Any = schema.get(bound_key)
        flag: Any = schema.get(flag_key)
        exclusive = flag is True
        if not _is_number(bound):
            bound, exclusive = (flag, True) if _is_number(flag) else (None, False)
        elif _is_number(flag):  # both: the tighter one counts
            tighter = flag <= bound if bound_key == "maximum" else flag >= bound
            bound, exclusive = (flag, True) if tighter else (bound, False)
        if bound is None:
            return None
        magnitude = abs(decimal.Decimal(str(bound)))
        whole = magnitude.to_integral_value(decimal.ROUND_FLOOR)
        if exclusive and whole == magnitude and whole > 0:
            whole -= 1  # < 10**k: at most k digits
        widest = whole if widest is None else max(widest, whole)
    assert widest is not None
    return 0 if widest == 0 else len(str(int(widest)))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | decimal.Decimal)


def _number_type(schema: Mapping[str, Any]) -> pa.DataType:
    scale = _decimal_step(schema.get("multipleOf"))
    if scale is None:
        return pa.float64()
    digits = _integer_digits(schema)
    precision = max(_DEFAULT_STEP_PRECISION, scale) if digits is None else max(digits + scale, 1)
    if precision <= 38:
        return pa.decimal128(precision, scale)
    if precision <= 76:
        return pa.decimal256(precision, scale)
    return pa.float64()  # no Arrow decimal holds every value the schema allows


def _string_type(schema: Mapping[str, Any]) -> pa.DataType:
    fmt = schema.get("format")
    if fmt == "date-time":
        return pa.timestamp("us", tz="UTC")
    if fmt == "date":
        return pa.date32()
    if fmt == "time":
        return pa.time64("us")
    if fmt in _DECIMAL_FORMATS:
        precision = schema.get("precision")
        scale = schema.get("scale", 0)
        if precision is None:
            # Unconstrained decimals keep every digit as text (documented choice).
            return pa.string()
        if precision <= 38:
            return pa.decimal128(int(precision), int(scale))
        if precision <= 76:
            return pa.decimal256(int(precision), int(scale))
        return pa.string()
    if schema.get("contentEncoding") == "base64":
        return pa.binary()
    return pa.string()


def _branch_type(name: str, schema: Mapping[str, Any]) -> pa.DataType:
    pinned = schema.get(ARROW_TYPE_KEY)
    if pinned:
        return parse_arrow_type(str(pinned))
    json_type = schema.get("type")
    if json_type == "integer":
        return _integer_type(schema)
    if json_type == "number":
        return _number_type(schema)
    if json_type == "boolean":
        return pa.bool_()
    if json_type == "string":
        return _string_type(schema)
    if json_type == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if not props or extra not in (None, False) or schema.get("patternProperties"):
            return JSON_TYPE
        return pa.struct([property_to_field(k, v) for k, v in props.items()])
    if json_type == "array":
        items = schema.get("items") or {}
        if isinstance(items, list):  # tuple validation: positions may differ in type
            return JSON_TYPE
        return pa.list_(property_to_field("item", items))
    if json_type == "any":
        return JSON_TYPE
    if json_type == "null":
        return pa.null()
    raise SchemaMappingError(f"property '{name}': unsupported JSON Schema type {json_type!r}")


def property_to_field(name: str, schema: Mapping[str, Any]) -> pa.Field:
    """Map one JSON Schema property to an Arrow field (see docs/type-mapping.md).

    Args:
        name: The property name.
        schema: The property's JSON Schema.

    Returns:
        The Arrow field; nullable when the schema admits null.

    Raises:
        SchemaMappingError: If the schema uses a type the mapping does not know.
    """
    if not isinstance(schema, Mapping):
        raise SchemaMappingError(f"property '{name}': schema must be an object, got {schema!r}")
    if "$ref" in schema:
        raise SchemaMappingError(
            f"property '{name}': $ref {schema['$ref']!r} is not resolved here; map the whole "
            "stream schema (jsonschema_to_arrow), which resolves local references"
        )
    branches, nullable = _branches(schema)
    if not branches:
        return pa.field(name, pa.null(), nullable=True)
    types = [_branch_type(name, b) for b in branches]
    first = types[0]
    if all(t == first for t in types):
        dtype = first
    elif {b.get("type") for b in branches} <= {"integer", "number"}:
        dtype = pa.float64()
    elif all(
        b.get("type") == "string" and not pa.types.is_binary(t)
        for b, t in zip(branches, types, strict=True)
    ):
        # e.g. anyOf [date-time string, plain string]: any string must fit.
        dtype = pa.string()
    else:
        dtype = JSON_TYPE
    # A JSON value can always be null, so JSON text columns are always nullable.
    nullable = nullable or dtype in (pa.null(), JSON_TYPE)
    if dtype == JSON_TYPE and schema.get(SQL_NULL_KEY) == SQL_NULL_OMITTED:
        return pa.field(name, dtype, nullable=nullable, metadata=SQL_NULL_METADATA)
    return pa.field(name, dtype, nullable=nullable)


_REF_PREFIXES = ("#/definitions/", "#/$defs/")


def resolve_refs(schema: Any, root: Mapping[str, Any], path: str = "") -> Any:
    """``schema`` with every local ``$ref`` (``#/definitions/...``, ``#/$defs/...``) replaced
    by the schema it names, at every depth; the other keywords beside a ``$ref`` are kept.

    Args:
        schema: A property schema (or any part of one).
        root: The stream schema whose ``definitions`` / ``$defs`` the references name.
        path: The property's dotted name, for errors.

    Raises:
        SchemaMappingError: A reference that is not local, names nothing, or refers to
            itself (a recursive schema has no finite Arrow type).
    """
    return _resolve(schema, root, path, ())


def _resolve(schema: Any, root: Mapping[str, Any], path: str, seen: tuple[str, ...]) -> Any:
    if isinstance(schema, list):
        return [_resolve(s, root, path, seen) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            chain = " -> ".join([*seen, ref])
            raise SchemaMappingError(
                f"property '{path}': recursive $ref ({chain}) has no finite Arrow type"
            )
        target = _lookup(ref, root, path)
        if _nested_array_of_itself(ref, target):
            # pipelinewise's "T or arrays of T, at any depth" (PostgreSQL arrays): the
            # element type T; a nested (multi-dimensional) array is a decode error.
            types = [t for t in _types_of(target) if t != "array"]
            target = {k: v for k, v in target.items() if k not in ("items", "type")}
            target["type"] = types[0] if len(types) == 1 else types
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        merged = {**target, **rest} if isinstance(target, Mapping) else target
        return _resolve(merged, root, path, (*seen, ref))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("definitions", "$defs", "enum", "const", "default", "examples"):
            out[key] = value  # values, not schemas
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {
                k: _resolve(v, root, f"{path}.{k}" if path else k, seen) for k, v in value.items()
            }
        else:
            out[key] = _resolve(value, root, path, seen)
    return out


def _nested_array_of_itself(ref: str, target: Mapping[str, Any]) -> bool:
    """Whether ``target`` is ``{"type": [..., "array"], "items": {"$ref": ref}}`` with some
    non-array type besides (the self-recursive array definitions of pipelinewise taps)."""
    items = target.get("items")
    types = _types_of(target)
    return (
        isinstance(items, Mapping)
        and items.get("$ref") == ref
        and len(items) == 1
        and "array" in types
        and any(t not in ("array", "null") for t in types)
    )


def _lookup(ref: Any, root: Mapping[str, Any], path: str) -> Any:
    if not isinstance(ref, str) or not ref.startswith(_REF_PREFIXES):
        raise SchemaMappingError(
            f"property '{path}': $ref {ref!r} is not a local reference "
            "('#/definitions/<name>' or '#/$defs/<name>'); other references are not fetched"
        )
    section, _, name = ref[2:].partition("/")
    target = (root.get(section) or {}).get(name.replace("~1", "/").replace("~0", "~"))
    if not isinstance(target, Mapping):
        raise SchemaMappingError(f"property '{path}': $ref {ref!r} names no schema in {section}")
    return target


def sql_null_omitted(field: pa.Field) -> bool:
    """Whether a JSON-text field's SQL NULL is an omitted property (``x-sql-null``), so
    that a ``null`` in a record is the JSON value null."""
    metadata = field.metadata
    return (
        field.type == JSON_TYPE
        and metadata is not None
        and metadata.get(SQL_NULL_KEY.encode()) == SQL_NULL_OMITTED.encode()
    )


def jsonschema_to_arrow(schema: Mapping[str, Any]) -> pa.Schema:
    """Map a stream's Singer JSON Schema to an Arrow schema.

    Args:
        schema: A JSON Schema of type object with `properties`.

    Returns:
        The Arrow schema, one field per property in declaration order.

    Raises:
        SchemaMappingError: If the schema has no properties or uses unknown types.
    """
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        raise SchemaMappingError(
            "a stream schema must be an object with at least one property in 'properties'"
        )
    props = {k: resolve_refs(v, schema, k) for k, v in props.items()}
    return pa.schema([property_to_field(k, v) for k, v in props.items()])


# ---------------------------------------------------------------------------
# Arrow -> JSON Schema
# ---------------------------------------------------------------------------


def _with_null(json_type: str | list[str], nullable: bool) -> str | list[str]:
    types = [json_type] if isinstance(json_type, str) else list(json_type)
    return [*types, "null"] if nullable else (types[0] if len(types) == 1 else types)


def field_to_property(field: pa.Field) -> dict[str, Any]:
    """Map one Arrow field to a JSON Schema property (inverse of :func:`property_to_field`).

    Raises:
        SchemaMappingError: For Arrow types with no documented mapping.
    """
    dtype = field.type
    nullable = field.nullable
    if pa.types.is_dictionary(dtype):
        return field_to_property(pa.field(field.name, dtype.value_type, nullable))
    if dtype == JSON_TYPE:
        # Any JSON value. Spelled out rather than `{}`, which singer-sdk's helpers reject.
        # Dativo's encoder omits a SQL NULL JSON property, so `null` is JSON's null.
        return {"type": list(ANY_JSON_TYPES), SQL_NULL_KEY: SQL_NULL_OMITTED}
    if pa.types.is_null(dtype):
        return {"type": "null"}
    if pa.types.is_boolean(dtype):
        return {"type": _with_null("boolean", nullable)}
    if pa.types.is_integer(dtype):
        if dtype == pa.int64():
            return {"type": _with_null("integer", nullable)}
        for itype, lo, hi in _INT_TYPES:
            if itype == dtype:
                return {"type": _with_null("integer", nullable), "minimum": lo, "maximum": hi}
    if pa.types.is_floating(dtype):
        prop: dict[str, Any] = {"type": _with_null("number", nullable)}
        if dtype != pa.float64():
            prop[ARROW_TYPE_KEY] = "float16" if dtype == pa.float16() else "float32"
        return prop
    if pa.types.is_decimal(dtype):
        return {
            "type": _with_null("string", nullable),
            "format": "x-singer.decimal",
            "precision": dtype.precision,
            "scale": dtype.scale,
        }
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        prop = {"type": _with_null("string", nullable)}
        if pa.types.is_large_string(dtype):
            prop[ARROW_TYPE_KEY] = "large_string"
        return prop
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        prop = {"type": _with_null("string", nullable), "contentEncoding": "base64"}
        if pa.types.is_large_binary(dtype):
            prop[ARROW_TYPE_KEY] = "large_binary"
        return prop
    if pa.types.is_timestamp(dtype):
        prop = {"type": _with_null("string", nullable), "format": "date-time"}
        if dtype != pa.timestamp("us", tz="UTC"):
            prop[ARROW_TYPE_KEY] = format_arrow_type(dtype)
        return prop
    if pa.types.is_date(dtype):
        prop = {"type": _with_null("string", nullable), "format": "date"}
        if pa.types.is_date64(dtype):
            prop[ARROW_TYPE_KEY] = "date64"
        return prop
    if pa.types.is_time(dtype):
        prop = {"type": _with_null("string", nullable), "format": "time"}
        if dtype != pa.time64("us"):
            prop[ARROW_TYPE_KEY] = str(dtype)
        return prop
    if pa.types.is_struct(dtype):
        return {
            "type": _with_null("object", nullable),
            "properties": {
                dtype.field(i).name: field_to_property(dtype.field(i))
                for i in range(dtype.num_fields)
            },
        }
    if (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    ):
        items = field_to_property(dtype.value_field)
        # A list item cannot be omitted: null items are SQL NULL (no annotation).
        items.pop(SQL_NULL_KEY, None)
        return {"type": _with_null("array", nullable), "items": items}
    raise SchemaMappingError(
        f"field '{field.name}': Arrow type {dtype} has no Singer mapping (see docs/type-mapping.md)"
    )


def arrow_to_jsonschema(schema: pa.Schema) -> dict[str, Any]:
    """Map an Arrow schema to a Singer stream JSON Schema.

    Args:
        schema: The Arrow schema.

    Returns:
        ``{"type": "object", "properties": {...}}``.
    """
    return {
        "type": "object",
        "properties": {f.name: field_to_property(f) for f in schema},
    }


def _relaxed_field(field: pa.Field) -> pa.Field:
    dtype = map_children(field.type, _relaxed_field)
    return pa.field(field.name, dtype, nullable=True, metadata=field.metadata)


def relax_nullability(schema: pa.Schema, keep: Iterable[str] = ()) -> pa.Schema:
    """Make every field nullable, at every depth, except the top-level fields in ``keep``.

    Singer taps routinely omit optional properties declared without ``null``; targets
    accept a missing value there rather than fail, but key properties stay required.
    """
    required = set(keep)
    fields = []
    for f in schema:
        relaxed = _relaxed_field(f)
        fields.append(relaxed.with_nullable(False) if f.name in required else relaxed)
    return pa.schema(fields, metadata=schema.metadata)


def select_fields(schema: pa.Schema, names: Sequence[str]) -> pa.Schema:
    """Return the sub-schema of ``names`` in schema order."""
    wanted = set(names)
    return pa.schema([f for f in schema if f.name in wanted], metadata=schema.metadata)


def json_type_of(value: Any) -> str:
    """The JSON Schema type name of a Python JSON value (``null``, ``boolean``,
    ``integer``, ``number``, ``string``, ``array``, ``object``; ``any`` for others)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "any"
