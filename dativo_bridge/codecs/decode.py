"""Singer RECORD lines -> Arrow record batches, typed by the stream's SCHEMA.

Fast path: the lines of a batch are handed whole to Arrow's C++ JSON reader with an
explicit schema (no inference), then a few columns are converted with compute kernels.
Rust path: when the optional ``dativo_accel`` extension is installed, its decoder runs
first; it produces the same batch (tests/unit/test_rust_decode.py) or declines, and then
the paths below run, so errors are always this module's.
Exact path: when the fast path refuses a batch (a value that does not fit, or a type the
C++ reader cannot parse from JSON, such as base64 binary or free-form JSON text) the lines
are decoded one by one; this path names the line, stream, property and expected type of
the first bad value, or produces the batch when the values are valid after all.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import importlib
import io
import itertools
import json
import logging
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from dativo_bridge.codecs.encode import first_unwritable, may_be_unwritable
from dativo_bridge.errors import DecodeError, MissingKeyPropertyError, SchemaMappingError
from dativo_bridge.schema import (
    JSON_TYPE,
    SQL_NULL_KEY,
    relax_nullability,
    sql_null_omitted,
)
from dativo_bridge.validation import RecordChecks

logger = logging.getLogger("dativo.decode")

_EPOCH_PREFIX = pa.scalar("1970-01-01T", pa.string())
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FRACTION = re.compile(r"[T ]\d\d:\d\d:\d\d\.(\d+)")


def _rust_decoder_class() -> Any | None:
    """The optional Rust extension's RecordDecoder class (same batches, faster), if any."""
    try:
        module = importlib.import_module("dativo_accel")
    except ImportError:
        return None
    return getattr(module, "RecordDecoder", None)


_RUST_DECODER = _rust_decoder_class()


def split_segments(
    segments: Sequence[tuple[bytes, int, int]], first_numbers: Sequence[int]
) -> tuple[list[bytes], list[int]]:
    """The lines of ``(data, start, end)`` segments and their line numbers.

    Each line ends after a newline; a last piece without one is a line too (as the Rust
    decoder splits them).
    """
    lines: list[bytes] = []
    numbers: list[int] = []
    for (data, start, end), first in zip(segments, first_numbers, strict=True):
        if start == 0 and end == len(data) and data.find(b"\n", 0, end - 1) < 0:
            pieces = [data] if data else []  # one line, as the line-by-line path holds it
        else:
            parts = data[start:end].split(b"\n")
            pieces = [part + b"\n" for part in parts[:-1]]
            if parts[-1]:
                pieces.append(parts[-1])
        lines.extend(pieces)
        numbers.extend(range(first, first + len(pieces)))
    return lines, numbers


#: 19 digits in a row: maybe an integer beyond -2**63..2**64-1, which orjson reads as a float.
_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(line: bytes) -> Any:
    """Parse one JSON document as Python's json module does (NaN/Infinity tokens, integers
    of any size), with orjson where that gives the same values."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
    if _LONG_DIGITS.search(line) is not None:
        return json.loads(line)  # orjson turns integers beyond 64 bits into floats
    return value


class _OutOfRange(float):
    """A JSON number beyond the double range (``1e400``): infinity, with the text it had."""

    text: str


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        out = _OutOfRange(value)
        out.text = text
        return out
    return value


class _NotJsonConstant(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


#: Python's C scanners: lenient (the NaN/Infinity tokens, as ``json.loads`` reads them),
#: and strict (JSON's grammar only) for the values of JSON-text columns.
_Scanner = Callable[[str, int], tuple[Any, int]]
_LENIENT: Any = json.JSONDecoder(parse_float=_parse_float)
_STRICT: Any = json.JSONDecoder(parse_constant=_no_constant)
_LENIENT_SCAN: _Scanner = _LENIENT.scan_once
_STRICT_SCAN: _Scanner = _STRICT.scan_once
_SCAN_STRING: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")


def _loads_record(line: bytes) -> Any:
    """:func:`loads`, with numbers beyond the double range marked (``_OutOfRange``)."""
    try:
        value = orjson.loads(line)  # orjson refuses 1e400
    except orjson.JSONDecodeError:
        return json.loads(line, parse_float=_parse_float)
    if _LONG_DIGITS.search(line) is not None:
        return json.loads(line, parse_float=_parse_float)
    return value


class _Raw(str):
    """The text of a JSON-text column's value exactly as the line wrote it."""


class _NotJson(str):
    """The text of a JSON-text column's value that is not JSON (NaN, Infinity)."""

    token: str


_ABSENT: Any = object()  # a property missing from a record (vs. a present null)


class _ListPlan:
    def __init__(self, item: Any) -> None:
        self.item = item


class _DuplicateKey(ValueError):
    """A key given twice in one object of a message: its dotted path in the record, or
    the message's own key (``in_record`` False)."""

    def __init__(self, path: str, in_record: bool = True) -> None:
        super().__init__(path)
        self.path = path
        self.in_record = in_record


def _scan_plan(dtype: pa.DataType) -> Any:
    """How the exact path scans a value of ``dtype``: ``JSON_TYPE`` (kept as raw text), a
    dict of struct children (an object whose keys are checked for duplicates), a
    ``_ListPlan``, or None (parsed whole by the C scanner)."""
    if dtype == JSON_TYPE:
        return JSON_TYPE
    if pa.types.is_struct(dtype):
        return {
            dtype.field(i).name: plan
            for i in range(dtype.num_fields)
            if (plan := _scan_plan(dtype.field(i).type)) is not None
        }
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        item = _scan_plan(dtype.value_type)
        return None if item is None else _ListPlan(item)
    return None


def _scan(s: str, i: int, plan: Any, path: str) -> tuple[Any, int]:
    """The value at ``s[i:]`` (after whitespace), JSON text kept raw where ``plan`` says;
    ``path`` (``a.b.``) names the value in a duplicate-key error."""
    i = _WS.match(s, i).end()  # type: ignore[union-attr]
    if plan is None:
        return _LENIENT_SCAN(s, i)
    if plan is JSON_TYPE:
        try:
            end = _STRICT_SCAN(s, i)[1]
        except _NotJsonConstant as exc:
            end = _LENIENT_SCAN(s, i)[1]
            bad = _NotJson(s[i:end])
            bad.token = str(exc)
            return bad, end
        return _Raw(s[i:end]), end
    if isinstance(plan, dict):
        if s.startswith("{", i):
            return _scan_object(s, i, plan, path)
    elif s.startswith("[", i):
        return _scan_array(s, i, plan.item, path)
    return _LENIENT_SCAN(s, i)


def _scan_object(s: str, i: int, plan: dict[str, Any], path: str) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    if s.startswith("}", i):
        return out, i + 1
    while True:
        if not s.startswith('"', i):
            raise ValueError("expected a property name")
        key, i = _SCAN_STRING(s, i + 1)
        if key in out:
            raise _DuplicateKey(path + key)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if not s.startswith(":", i):
            raise ValueError("expected ':'")
        child = plan.get(key)
        out[key], i = _scan(s, i + 1, child, "" if child is None else f"{path}{key}.")
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if s.startswith("}", i):
            return out, i + 1
        if not s.startswith(",", i):
            raise ValueError("expected ',' or '}'")
        i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]


def _scan_array(s: str, i: int, item: Any, path: str) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    if s.startswith("]", i):
        return out, i + 1
    inner = path[:-1] + "[]." if path else path
    while True:
        value, i = _scan(s, i, item, inner)
        out.append(value)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if s.startswith("]", i):
            return out, i + 1
        if not s.startswith(",", i):
            raise ValueError("expected ',' or ']'")
        i += 1


def _scan_record(line: bytes, plan: dict[str, Any]) -> Any:
    """The ``record`` of a message (already parsed once, so known to be valid), with the
    value of every JSON-text column as its raw text (``_Raw``) instead of parsed.

    Raises:
        _DuplicateKey: A key given twice at the message's top level, in the record, or in
            an object the schema maps to a struct (docs/singer-codecs.md#duplicate-keys).
    """
    # As json.loads decodes bytes (a BOM is skipped, surrogates pass to the later check).
    s = line.decode("utf-8-sig", "surrogatepass")
    i = _WS.match(s).end()  # type: ignore[union-attr]
    if not s.startswith("{", i):
        raise ValueError("expected an object")
    record: Any = None
    seen: set[str] = set()
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    while s.startswith('"', i):
        key, i = _SCAN_STRING(s, i + 1)
        if key in seen:
            raise _DuplicateKey(key, in_record=False)
        seen.add(key)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if not s.startswith(":", i):
            raise ValueError("expected ':'")
        if key == "record":
            record, i = _scan(s, i + 1, plan, "")
        else:
            i = _scan(s, i + 1, None, "")[1]
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if s.startswith(",", i):
            i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    return record


#: Deepest nesting of arrays and objects in a message (the message itself is level 1);
#: deeper is refused (Arrow's JSON reader would overflow its stack, Python recurse).
MAX_NESTING = 512
_OPENERS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(line: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped)."""
    brackets = _STRINGS.sub(b"", line).translate(_OPENERS, _NOT_BRACKETS)
    return max(itertools.accumulate(b - 1 for b in brackets), default=0)


def too_deep(lines: Sequence[bytes]) -> int | None:
    """The index of the first line nested deeper than :data:`MAX_NESTING`, or None.

    Vectorised: only lines holding more than MAX_NESTING brackets are measured.
    """
    array = pa.array(lines, pa.binary())
    counts = pc.add(pc.count_substring(array, "["), pc.count_substring(array, "{"))
    if pc.max(counts).as_py() <= MAX_NESTING:
        return None
    for index in pc.indices_nonzero(pc.greater(counts, MAX_NESTING)).to_pylist():
        if nesting_depth(lines[index]) > MAX_NESTING:
            return index
    return None


def _has_lone_surrogate(message: Any) -> bool:
    """Whether a parsed message holds a string with a lone surrogate (not UTF-8 encodable)."""
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _expected(dtype: pa.DataType) -> str:
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


class _Bad(Exception):
    def __init__(
        self, path: str, dtype: pa.DataType, value: Any, reason: str | None = None
    ) -> None:
        self.path = path
        self.dtype = dtype
        self.value = value
        self.reason = reason


#: struct formats that refuse a double beyond the narrower float's range.
_PACK = {16: struct.Struct("<e"), 32: struct.Struct("<f")}


class _Undeclared(Exception):
    """A property not in the schema, in an object that takes none (additionalProperties)."""

    def __init__(self, path: str) -> None:
        self.path = path


@dataclasses.dataclass
class _Extras:
    """Undeclared properties of nested objects: the struct paths that refuse them, and
    those found (dotted names, for the warning)."""

    closed: set[str] = dataclasses.field(default_factory=set)
    found: set[str] = dataclasses.field(default_factory=set)


def _converter(
    dtype: pa.DataType, path: str, omitted_null: bool = False, extras: _Extras | None = None
) -> Callable[[Any], Any]:
    """A function validating one JSON value against ``dtype`` and returning what pa.array takes.

    ``omitted_null``: a JSON-text object member whose SQL NULL is an omitted property
    (``x-sql-null``): a ``null`` present is then the JSON text ``null``.
    ``extras``: where undeclared properties of nested objects are refused or noted.
    """

    def bad(value: Any, reason: str | None = None) -> Any:
        raise _Bad(path, dtype, value, reason)

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
            if type(v) is _OutOfRange:  # 1e400: not infinity, which is written Infinity
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
                d = decimal.Decimal(str(v))
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
            # Values come from _record_keeping_json_text: the raw text, or _ABSENT.
            if type(v) is _Raw:
                return None if v == "null" and not omitted_null else str(v)
            if v is None or v is _ABSENT:
                return None
            if type(v) is _NotJson:
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
                _converter(f.type, f"{path}.{f.name}", sql_null_omitted(f), extras),
                _ABSENT if sql_null_omitted(f) else None,
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
                    raise _Undeclared(f"{path}.{unknown[0]}")
                extras.found.update(f"{plain}.{k}" for k in unknown)
            return {name: conv(v.get(name, absent)) for name, conv, absent in fields}

        return conv_struct
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        item = _converter(dtype.value_type, f"{path}[]", False, extras)

        def conv_list(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                return bad(v)
            return [item(x) for x in v]

        return conv_list
    raise TypeError(f"no Singer decoding for Arrow type {dtype}")


def _storage_type(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with JSON text as plain strings (pa.array cannot build extension types)."""
    if dtype == JSON_TYPE:
        return pa.string()
    if pa.types.is_struct(dtype):
        return pa.struct(
            [
                dtype.field(i).with_type(_storage_type(dtype.field(i).type))
                for i in range(dtype.num_fields)
            ]
        )
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(_storage_type(dtype.value_type)))
    if pa.types.is_large_list(dtype):
        return pa.large_list(dtype.value_field.with_type(_storage_type(dtype.value_type)))
    return dtype


def _fast_type(dtype: pa.DataType, top: bool) -> pa.DataType | None:
    """The type Arrow's JSON reader parses for ``dtype``, or None if it cannot."""
    if dtype == JSON_TYPE or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return None
    if pa.types.is_date32(dtype) or dtype == pa.time64("us"):
        return pa.string() if top else None
    if pa.types.is_date64(dtype) or pa.types.is_time(dtype):
        return None
    if pa.types.is_struct(dtype):
        children = []
        for i in range(dtype.num_fields):
            child = _fast_type(dtype.field(i).type, False)
            if child is None:
                return None
            children.append(pa.field(dtype.field(i).name, child))
        return pa.struct(children)
    if pa.types.is_list(dtype):
        child = _fast_type(dtype.value_type, False)
        return None if child is None else pa.list_(child)
    if pa.types.is_null(dtype):
        return None
    return dtype


def _without_annotation(field: pa.Field) -> pa.Field:
    """``field`` without the ``x-sql-null`` metadata, at every depth (the batches a
    decoder makes have the types an in-process reader gives, annotations aside)."""
    dtype = field.type
    if pa.types.is_struct(dtype):
        dtype = pa.struct([_without_annotation(dtype.field(i)) for i in range(dtype.num_fields)])
    elif pa.types.is_list(dtype):
        dtype = pa.list_(_without_annotation(dtype.value_field))
    elif pa.types.is_large_list(dtype):
        dtype = pa.large_list(_without_annotation(dtype.value_field))
    metadata = field.metadata
    if metadata is not None and SQL_NULL_KEY.encode() in metadata:
        rest = {k: v for k, v in metadata.items() if k != SQL_NULL_KEY.encode()}
        return pa.field(field.name, dtype, field.nullable, metadata=rest or None)
    return field.with_type(dtype)


def _has_float(dtype: pa.DataType) -> bool:
    if pa.types.is_floating(dtype):
        return True
    if pa.types.is_struct(dtype):
        return any(_has_float(dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _has_float(dtype.value_type)
    return False


def _inf_rows(arr: pa.Array) -> set[int]:
    """The rows of ``arr`` holding an infinite float at any depth (or maybe one: values
    under a null parent count too)."""
    dtype = arr.type
    if pa.types.is_floating(dtype):
        if not pc.any(pc.is_inf(arr)).as_py():
            return set()
        return set(pc.indices_nonzero(pc.fill_null(pc.is_inf(arr), False)).to_pylist())
    if pa.types.is_struct(dtype):
        return set().union(*(_inf_rows(arr.field(i)) for i in range(dtype.num_fields)))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        first, last = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
        items = _inf_rows(arr.values.slice(first, last - first))
        if not items:
            return set()
        parents = pc.list_parent_indices(arr).to_pylist()  # aligned with those values
        return {parents[i] for i in items}
    return set()


class _Lines:
    """The input lines and line numbers of a batch's rows; lines given as segments are
    split only when an error needs them."""

    def __init__(
        self,
        lines: Sequence[bytes] | None = None,
        numbers: Sequence[int] | None = None,
        segments: Sequence[tuple[bytes, int, int]] | None = None,
        first_numbers: Sequence[int] | None = None,
    ) -> None:
        self._lines = lines
        self._numbers = numbers
        self._segments = segments
        self._first_numbers = first_numbers

    def split(self) -> tuple[Sequence[bytes], Sequence[int]]:
        if self._lines is None or self._numbers is None:
            assert self._segments is not None and self._first_numbers is not None
            self._lines, self._numbers = split_segments(self._segments, self._first_numbers)
        return self._lines, self._numbers

    def number(self, row: int) -> int:
        return self.split()[1][row]

    def line(self, row: int) -> bytes:
        return bytes(self.split()[0][row])


def _nested_extra(actual: pa.DataType, declared: pa.DataType, path: str) -> list[str]:
    """Dotted names of the struct children in ``actual`` (as Arrow's reader inferred
    them) that ``declared`` lacks, at every depth."""
    if pa.types.is_struct(actual) and pa.types.is_struct(declared):
        names = {declared.field(i).name: declared.field(i).type for i in range(declared.num_fields)}
        out = []
        for i in range(actual.num_fields):
            child = actual.field(i)
            if child.name not in names:
                out.append(f"{path}.{child.name}")
            else:
                out.extend(_nested_extra(child.type, names[child.name], f"{path}.{child.name}"))
        return out
    if pa.types.is_list(actual) and pa.types.is_list(declared):
        return _nested_extra(actual.value_type, declared.value_type, path)
    return []


class RecordDecoder:
    """Decodes the RECORD lines of one stream into Arrow batches of its schema.

    Args:
        stream: Stream name, for error messages.
        schema: The stream's Arrow schema (from its SCHEMA message).
        key_properties: Properties that must be present in every record.
        json_schema: The stream's JSON Schema, whose constraints (enum, bounds,
            required, additionalProperties ...) are checked on every batch
            (:mod:`dativo_bridge.validation`); None: types only.
        validate: False skips the constraints of ``json_schema`` (``validate_records``).
        accelerate: Use the Rust decoder of ``dativo_accel`` when it is installed and
            supports the schema (False: the Python paths only, e.g. as a reference).

    Raises:
        SchemaMappingError: A key property not in the schema, or a constraint that
            cannot be checked (a pattern RE2 cannot compile).
    """

    def __init__(
        self,
        stream: str,
        schema: pa.Schema,
        key_properties: Sequence[str] = (),
        *,
        json_schema: Mapping[str, Any] | None = None,
        validate: bool = True,
        accelerate: bool = True,
    ) -> None:
        self.stream = stream
        for key in key_properties:
            if key not in schema.names:
                raise SchemaMappingError(f"key property '{key}' is not in the schema's properties")
        self.key_properties = list(key_properties)
        annotated = relax_nullability(schema, keep=self.key_properties)
        self.schema = pa.schema(
            [_without_annotation(f) for f in annotated], metadata=annotated.metadata
        )
        checks = None
        if validate and json_schema is not None:
            checks = RecordChecks(stream, json_schema, self.schema)
        self._checks = checks if checks else None
        #: Records may carry no undeclared top-level property (additionalProperties).
        self._closed = checks is not None and checks.closed
        self._extras = _Extras(closed=set(checks.closed_paths) if checks is not None else set())
        self._warned_extra = False
        self._warned_nested = False
        fast_fields: list[pa.Field] | None = []
        for f in self.schema:
            ftype = _fast_type(f.type, True)
            if ftype is None:
                fast_fields = None
                break
            assert fast_fields is not None
            fast_fields.append(pa.field(f.name, ftype))
        self._parse_schema = (
            None if fast_fields is None else pa.schema([pa.field("record", pa.struct(fast_fields))])
        )
        # Fast path: a float read as infinity may be a number beyond its range (1e39 in a
        # float32, 400 digits), which the exact path refuses, or the token Infinity.
        self._check_inf = any(_has_float(f.type) for f in self.schema)
        # Fast path: Arrow reads dates and date-times outside years 1-9999 (UTC), which
        # the exact path refuses (and no Singer string could hold again).
        self._check_range = [f.name for f in self.schema if may_be_unwritable(f.type)]
        self._converters = [
            (
                f.name,
                _converter(f.type, f.name, sql_null_omitted(f), self._extras),
                _ABSENT if sql_null_omitted(f) else None,
            )
            for f in annotated
        ]
        # How the exact path scans a record: JSON text kept raw, keys of objects checked.
        self._plan: dict[str, Any] = {
            f.name: p for f in self.schema if (p := _scan_plan(f.type)) is not None
        }
        self._rust: Any | None = None
        if accelerate and _RUST_DECODER is not None:
            try:
                # float32 as the path Python would take reads it (Arrow: one rounding).
                self._rust = _RUST_DECODER(
                    annotated, self.key_properties, self._parse_schema is not None
                )
            except ValueError as exc:  # a type the Rust decoder does not read
                logger.debug("stream '%s': decoding in Python (%s)", stream, exc)

    @property
    def uses_rust(self) -> bool:
        """Whether batches go through the Rust decoder first."""
        return self._rust is not None

    @property
    def uses_fast_path(self) -> bool:
        """Whether batches go through Arrow's JSON reader (False: the exact path only)."""
        return self._parse_schema is not None

    def decode(self, lines: Sequence[bytes], line_numbers: Sequence[int]) -> pa.RecordBatch:
        """Decode RECORD message lines (whole Singer messages) into one batch.

        Args:
            lines: Each a complete RECORD message, newline-terminated or not.
            line_numbers: The 1-based input line number of each line, for errors.

        Returns:
            A batch with the decoder's schema.

        Raises:
            DecodeError: Naming the stream, line, property and expected type (or the
                constraint broken).
        """
        if not lines:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        rows = _Lines(lines, line_numbers)
        if self._rust is not None:
            try:
                result = self._rust.decode(lines)
            except TypeError:  # lines that are not bytes objects: the Python paths take them
                result = None, [], "not bytes"
            batch = self._from_rust(*result, rows=rows)
            if batch is not None:
                return self._checked(batch, rows)
        return self._checked(self._decode_python(lines, line_numbers), rows)

    def decode_segments(
        self, segments: Sequence[tuple[bytes, int, int]], first_numbers: Sequence[int]
    ) -> pa.RecordBatch:
        """:meth:`decode` of the lines held in ``data[start:end]`` of each segment.

        Each line ends after a newline; a last piece without one is a line too. A target
        passes whole blocks of its input this way, without a ``bytes`` object per line.

        Args:
            segments: ``(data, start, end)`` ranges of whole RECORD lines.
            first_numbers: The 1-based input line number of each segment's first line;
                its other lines follow it.
        """
        rows = _Lines(segments=segments, first_numbers=first_numbers)
        if self._rust is not None:
            batch = self._from_rust(*self._rust.decode_segments(segments), rows=rows)
            if batch is not None:
                return self._checked(batch, rows)
        lines, numbers = rows.split()
        if not lines:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        return self._checked(self._decode_python(lines, numbers), rows)

    def _checked(self, batch: pa.RecordBatch, rows: _Lines) -> pa.RecordBatch:
        if self._checks is not None and batch.num_rows:
            self._checks.check(batch, rows)
        return batch

    def _from_rust(
        self, decoded: Any | None, extra: Sequence[str], reason: str | None, *, rows: _Lines
    ) -> pa.RecordBatch | None:
        if decoded is None:
            logger.debug("stream '%s': Rust decoder declined a batch: %s", self.stream, reason)
            return None
        if extra:
            self._extra(extra, rows)
        columns = pa.record_batch(decoded).columns
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _extra(self, names: Sequence[str], rows: _Lines) -> None:
        """Undeclared top-level properties: an error naming the first line carrying one
        when the schema closes the record (additionalProperties false), else a warning."""
        if not self._closed:
            self._warn_extra(names)
            return
        declared = set(self.schema.names)
        lines, numbers = rows.split()
        for line, number in zip(lines, numbers, strict=True):
            record = _loads_record(line).get("record")
            if isinstance(record, dict) and not declared.issuperset(record):
                self._raise_undeclared(next(k for k in record if k not in declared), number)
        self._warn_extra(names)  # not expected: the names came from these lines

    def _raise_undeclared(self, name: str, number: int) -> None:
        raise DecodeError(
            "property not in the schema, which does not allow others "
            "(additionalProperties is false)",
            stream=self.stream,
            line_number=number,
            field=name,
            expected="only the properties the SCHEMA declares",
        )

    def _decode_python(self, lines: Sequence[bytes], line_numbers: Sequence[int]) -> pa.RecordBatch:
        try:
            deep = too_deep(lines)
        except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError):  # not bytes: one by one
            deep = too_deep([bytes(line) for line in lines])
        if deep is not None:
            raise _too_deep(self.stream, line_numbers[deep])
        if self._parse_schema is not None:
            try:
                batch = self._decode_fast(lines, _Lines(lines, line_numbers))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                batch = None
            except UnicodeDecodeError:  # a property name that is not UTF-8: named below
                batch = None
            if batch is not None:
                self._check_keys(batch, line_numbers)
                if self._check_inf:
                    self._check_infinities(batch, lines, line_numbers)
                return batch
        return self._decode_exact(lines, line_numbers)

    def _check_infinities(
        self, batch: pa.RecordBatch, lines: Sequence[bytes], line_numbers: Sequence[int]
    ) -> None:
        """An infinity Arrow's reader gave is the token Infinity, or a number beyond the
        type's range (1e39 in a float32): those rows go through the exact path, which
        raises DecodeError for the latter (the batch of the fast path is kept)."""
        rows: set[int] = set()
        for f, column in zip(self.schema, batch.columns, strict=True):
            if _has_float(f.type):
                rows |= _inf_rows(column)
        if rows:
            ordered = sorted(rows)
            self._decode_exact([lines[r] for r in ordered], [line_numbers[r] for r in ordered])

    def _decode_fast(
        self, lines: Sequence[bytes], rows: _Lines | None = None
    ) -> pa.RecordBatch | None:
        assert self._parse_schema is not None
        if rows is None:
            rows = _Lines(lines, range(1, len(lines) + 1))
        data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, 1 << 30))),
            parse_options=pj.ParseOptions(
                explicit_schema=self._parse_schema, unexpected_field_behavior="infer"
            ),
        )
        if table.num_rows != len(lines):
            return None
        records = table.column("record").combine_chunks()
        if records.null_count:
            return None  # some line has no record object: let the exact path name it
        declared = {f.name: f for f in self._parse_schema.field("record").type}
        extra = [
            records.type.field(i).name
            for i in range(records.type.num_fields)
            if records.type.field(i).name not in declared
        ]
        if extra:
            self._extra(extra, rows)
        nested = [
            name
            for i in range(records.type.num_fields)
            if (child := records.type.field(i)).name in declared
            for name in _nested_extra(child.type, declared[child.name].type, child.name)
        ]
        if nested:
            if any(name.rpartition(".")[0] in self._extras.closed for name in nested):
                return None  # the exact path names the line
            self._warn_nested(nested)
        columns = []
        for f in self.schema:
            col = records.field(f.name)
            if col.type != f.type:
                if pa.types.is_time64(f.type):
                    joined = pc.binary_join_element_wise(_EPOCH_PREFIX, col, "")
                    micros = pc.cast(pc.cast(joined, pa.timestamp("us")), pa.int64())
                    col = pc.cast(micros, f.type)
                else:
                    col = pc.cast(col, f.type)
            columns.append(col)
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        for name in self._check_range:
            if first_unwritable(batch.column(name), name) is not None:
                return None
        try:
            # Arrow's JSON reader does not check UTF-8; the exact path reports bad bytes.
            batch.validate(full=True)
        except pa.ArrowInvalid:
            return None
        return batch

    def _warn_extra(self, names: Sequence[str]) -> None:
        if not self._warned_extra:
            self._warned_extra = True
            logger.warning(
                "stream '%s': records carry properties not in its SCHEMA, which are dropped: %s",
                self.stream,
                ", ".join(sorted(names)),
            )

    def _warn_nested(self, names: Sequence[str] | set[str]) -> None:
        if not self._warned_nested:
            self._warned_nested = True
            logger.warning(
                "stream '%s': nested objects carry properties not in its SCHEMA, which are "
                "dropped: %s",
                self.stream,
                ", ".join(sorted(names)),
            )

    def _check_keys(self, batch: pa.RecordBatch, line_numbers: Sequence[int]) -> None:
        for key in self.key_properties:
            col = batch.column(key)
            if col.null_count:
                first = pc.index(col.is_null(), True).as_py()
                raise MissingKeyPropertyError(
                    "record has no value for key property",
                    stream=self.stream,
                    line_number=line_numbers[first],
                    field=key,
                    expected=_expected(col.type),
                )

    def _message(self, line: bytes, number: int) -> Any:
        """The ``record`` of one RECORD line, JSON text kept raw (see :func:`_scan_record`)."""
        try:
            message = _loads_record(line)
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc, self.stream, number) from None
        except ValueError as exc:
            raise DecodeError(
                f"malformed JSON: {exc}", stream=self.stream, line_number=number
            ) from None
        except RecursionError:
            raise _too_deep(self.stream, number) from None
        if b"\\u" in line and _has_lone_surrogate(message):
            raise DecodeError(
                "malformed JSON: a \\uD800-\\uDFFF escape without its pair is not Unicode",
                stream=self.stream,
                line_number=number,
            )
        if not isinstance(message, dict) or not isinstance(message.get("record"), dict):
            raise DecodeError(
                "RECORD message has no 'record' object",
                stream=self.stream,
                line_number=number,
                expected="object",
            )
        try:
            return _scan_record(line, self._plan)
        except _DuplicateKey as dup:
            raise DecodeError(
                f"key '{dup.path}' given twice" if not dup.in_record else "property given twice",
                stream=self.stream,
                line_number=number,
                field=dup.path if dup.in_record else None,
                expected="each key once in an object",
            ) from None
        except (ValueError, StopIteration) as exc:  # not expected: parsed above
            raise DecodeError(
                f"malformed JSON: {exc}", stream=self.stream, line_number=number
            ) from None
        except RecursionError:
            raise _too_deep(self.stream, number) from None

    def _decode_exact(self, lines: Sequence[bytes], line_numbers: Sequence[int]) -> pa.RecordBatch:
        columns: list[list[Any]] = [[] for _ in self._converters]
        declared = set(self.schema.names)
        for line, number in zip(lines, line_numbers, strict=True):
            record = self._message(line, number)
            for key in self.key_properties:
                if record.get(key) is None:
                    raise MissingKeyPropertyError(
                        "record has no value for key property",
                        stream=self.stream,
                        line_number=number,
                        field=key,
                        expected=_expected(self.schema.field(key).type),
                    )
            if not declared.issuperset(record):
                unknown = [k for k in record if k not in declared]
                if self._closed:
                    self._raise_undeclared(unknown[0], number)
                if not self._warned_extra:
                    self._warn_extra(unknown)
            try:
                for values, (name, conv, absent) in zip(columns, self._converters, strict=True):
                    values.append(conv(record.get(name, absent)))
            except _Undeclared as undeclared:
                self._raise_undeclared(undeclared.path, number)
            except _Bad as bad:
                if isinstance(bad.value, str | _OutOfRange) and type(bad.value) is not str:
                    # The text as written: raw JSON text, or a number such as 1e400.
                    shown = bad.value if isinstance(bad.value, str) else bad.value.text
                else:
                    shown = json.dumps(bad.value)
                if len(shown) > 80:
                    shown = shown[:77] + "..."
                problem = bad.reason or f"does not fit type {bad.dtype}"
                raise DecodeError(
                    f"value {shown} {problem}",
                    stream=self.stream,
                    line_number=number,
                    field=bad.path,
                    expected=_expected(bad.dtype),
                ) from None
        if self._extras.found:
            self._warn_nested(self._extras.found)
        arrays = []
        for f, values in zip(self.schema, columns, strict=True):
            storage = _storage_type(f.type)
            array = pa.array(values, storage)
            arrays.append(array if storage == f.type else array.cast(f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _too_deep(stream: str | None, number: int) -> DecodeError:
    return DecodeError(
        f"arrays and objects nested deeper than {MAX_NESTING} levels",
        stream=stream,
        line_number=number,
        expected=f"at most {MAX_NESTING} levels of nesting",
    )


def _not_utf8(exc: UnicodeDecodeError, stream: str | None, number: int) -> DecodeError:
    return DecodeError(
        f"malformed JSON: invalid UTF-8 at byte {exc.start} of the line ({exc.reason})",
        stream=stream,
        line_number=number,
        expected="UTF-8 text (property names and string values)",
    )
