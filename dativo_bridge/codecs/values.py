"""JSON values -> what ``pa.array`` takes, checked against an Arrow type: the value
converters of the exact decode path, public for readers that build batches from decoded
JSON (the REST tap).

A converter returns the value as Arrow takes it, or raises :class:`BadValue` naming the
property path, the type and the value; :func:`expected_type` says in a user's words what
would have fitted. Build the batch with :func:`batch_from_columns` (free-form JSON text is
an extension type that ``pa.array`` cannot build directly).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from dativo_bridge.arrow_types import map_children
from dativo_bridge.codecs.json_text import ABSENT, NotJson, NumberText, OutOfRange, RawText
from dativo_bridge.schema import JSON_TYPE, sql_null_omitted

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FRACTION = re.compile(r"[T ]\d\d:\d\d:\d\d\.(\d+)")


def expected_type(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype):
        return f"integer ({dtype})"
    if pa.types.is_floating(dtype):
        return "number"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_decimal(dtype):
        return f"decimal string with precision {dtype.precision} and scale {dtype.scale}"
    if pa.types.is_timestamp(dtype):
        return "date-time string (ISO 8601)"
    if pa.types.is_date(dtype):
        return "date string (YYYY-MM-DD)"
    if pa.types.is_time(dtype):
        return "time string (HH:MM:SS[.ffffff])"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "base64 string"
    if dtype == JSON_TYPE:
        return "any JSON value"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_struct(dtype):
        return "object"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "array"
    return str(dtype)


class BadValue(Exception):
    def __init__(
        self, path: str, dtype: pa.DataType, value: Any, reason: str | None = None
    ) -> None:
        self.path = path
        self.dtype = dtype
        self.value = value
        self.reason = reason


#: struct formats that refuse a double beyond the narrower float's range.
_PACK = {16: struct.Struct("<e"), 32: struct.Struct("<f")}


class Undeclared(Exception):
    """A property not in the schema, in an object that takes none (additionalProperties)."""

    def __init__(self, path: str) -> None:
        self.path = path


@dataclasses.dataclass
class Extras:
    """Undeclared properties of nested objects: the struct paths that refuse them, and
    those found (dotted names, for the warning)."""

    closed: set[str] = dataclasses.field(default_factory=set)
    found: set[str] = dataclasses.field(default_factory=set)


def value_converter(
    dtype: pa.DataType, path: str, omitted_null: bool = False, extras: Extras | None = None
) -> Callable[[Any], Any]:
    """A function validating one JSON value against ``dtype`` and returning what pa.array takes.

    ``omitted_null``: a JSON-text object member whose SQL NULL is an omitted property
    (``x-sql-null``): a ``null`` present is then the JSON text ``null``.
    ``extras``: where undeclared properties of nested objects are refused or noted.
    """

    def bad(value: Any, reason: str | None = None) -> Any:
        raise BadValue(path, dtype, value, reason)

    if pa.types.is_integer(dtype):
        info = (-(2 ** (dtype.bit_width - 1)), 2 ** (dtype.bit_width - 1) - 1)
        if pa.types.is_unsigned_integer(dtype):
            info = (0, 2**dtype.bit_width - 1)
        lo, hi = info

        def conv_int(v: Any) -> Any:
            if v is None:
                return None
            if type(v) is int and lo <= v <= hi:
                return v
            return bad(v)

        return conv_int
    if pa.types.is_floating(dtype):
        out_of_range = (
            f"is beyond the range of {dtype} (only the tokens NaN, Infinity and -Infinity "
            "stand for values that are not finite)"
        )
        pack = _PACK.get(dtype.bit_width)

        def conv_float(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float):
                return bad(v)
            if type(v) is OutOfRange:  # 1e400: not infinity, which is written Infinity
                return bad(v, out_of_range)
            try:
                f = float(v)
                if pack is not None and not math.isinf(f):
                    pack.pack(f)  # OverflowError when it rounds to infinity
            except OverflowError:
                return bad(v, out_of_range)
            return f

        return conv_float
    if pa.types.is_boolean(dtype):
        return lambda v: v if v is None or isinstance(v, bool) else bad(v)
    if pa.types.is_decimal(dtype):
        quantum = decimal.Decimal(1).scaleb(-dtype.scale)
        context = decimal.Context(prec=dtype.precision, traps=[decimal.Inexact])

        def conv_dec(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                return bad(v)
            try:
                # The digits as written (a decoder reading decimals keeps them), not the
                # nearest double: 99999999999999.9999 must not become 1e14.
                d = decimal.Decimal(v.text if isinstance(v, NumberText) else str(v))
                q = d.quantize(quantum, context=context)
            except (decimal.DecimalException, ValueError):
                return bad(v)
            if q != d or not q.is_finite():
                return bad(v)
            return q

        return conv_dec
    if pa.types.is_timestamp(dtype):
        aware = dtype.tz is not None

        nanos = dtype.unit == "ns"

        def conv_ts(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, str):
                return bad(v)
            extra = 0
            text = v
            fraction = _FRACTION.search(v)
            if fraction is not None and len(fraction.group(1)) > 6:
                # datetime keeps microseconds; the digits below are added back for ns.
                digits = fraction.group(1)
                extra = int(digits[6:9].ljust(3, "0")) if nanos else 0
                text = v[: fraction.start(1)] + digits[:6] + v[fraction.end(1) :]
            try:
                ts = dt.datetime.fromisoformat(text)
                if ts.tzinfo is not None:
                    ts = ts.astimezone(dt.UTC)
                if not aware:
                    ts = ts.replace(tzinfo=None)
                elif ts.tzinfo is None:
                    ts = ts.replace(tzinfo=dt.UTC)
            except (ValueError, OverflowError):
                return bad(v)
            if nanos:
                since = ts - (_EPOCH if ts.tzinfo else _EPOCH.replace(tzinfo=None))
                micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
                value = micros * 1000 + extra
                return value if -(2**63) <= value < 2**63 else bad(v)
            return ts

        return conv_ts
    if pa.types.is_date(dtype):

        def conv_date(v: Any) -> Any:
            if v is None:
                return None
            try:
                return dt.date.fromisoformat(v)
            except (TypeError, ValueError):
                return bad(v)

        return conv_date
    if pa.types.is_time(dtype):

        def conv_time(v: Any) -> Any:
            if v is None:
                return None
            try:
                return dt.time.fromisoformat(v)
            except (TypeError, ValueError):
                return bad(v)

        return conv_time
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):

        def conv_bin(v: Any) -> Any:
            if v is None:
                return None
            try:
                return base64.b64decode(v, validate=True)
            except (TypeError, ValueError):
                return bad(v)

        return conv_bin
    if dtype == JSON_TYPE:

        def conv_json(v: Any) -> Any:
            # Values come from _record_keeping_json_text: the raw text, or ABSENT.
            if type(v) is RawText:
                return None if v == "null" and not omitted_null else str(v)
            if v is None or v is ABSENT:
                return None
            if type(v) is NotJson:
                return bad(v, f"is not JSON: {v.token} is not a JSON value")
            return json.dumps(v, separators=(",", ":"), ensure_ascii=False)

        return conv_json
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return lambda v: v if v is None or isinstance(v, str) else bad(v)
    if pa.types.is_null(dtype):
        return lambda v: v if v is None else bad(v)
    if pa.types.is_struct(dtype):
        fields = [
            (
                f.name,
                value_converter(f.type, f"{path}.{f.name}", sql_null_omitted(f), extras),
                ABSENT if sql_null_omitted(f) else None,
            )
            for f in (dtype.field(i) for i in range(dtype.num_fields))
        ]
        names = {name for name, _, _ in fields}
        plain = path.replace("[]", "")
        closed = extras is not None and plain in extras.closed

        def conv_struct(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                return bad(v)
            if extras is not None and not names.issuperset(v):
                unknown = [k for k in v if k not in names]
                if closed:
                    raise Undeclared(f"{path}.{unknown[0]}")
                extras.found.update(f"{plain}.{k}" for k in unknown)
            return {name: conv(v.get(name, absent)) for name, conv, absent in fields}

        return conv_struct
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        item = value_converter(dtype.value_type, f"{path}[]", False, extras)

        def conv_list(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                return bad(v)
            return [item(x) for x in v]

        return conv_list
    raise TypeError(f"no Singer decoding for Arrow type {dtype}")


def storage_type(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with JSON text as plain strings (pa.array cannot build extension types)."""
    if dtype == JSON_TYPE:
        return pa.string()
    return map_children(dtype, lambda child: child.with_type(storage_type(child.type)))


def batch_from_columns(schema: pa.Schema, columns: Sequence[list[Any]]) -> pa.RecordBatch:
    """A batch of ``schema`` from one list of converted values per field (what
    :func:`value_converter` returned)."""
    arrays = []
    for f, values in zip(schema, columns, strict=True):
        storage = storage_type(f.type)
        array = pa.array(values, storage)
        arrays.append(array if storage == f.type else array.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
