"""Arrow record batches -> Singer RECORD lines, column at a time (no dict per row).

Each column becomes an Arrow string array of JSON fragments using Arrow compute kernels;
the fragments are joined row-wise with the property names in one more kernel, and the
resulting string buffer is the output. Rare values that need escaping the kernels cannot
express (control characters) are encoded one by one with orjson.

Output conventions (documented in docs/singer-codecs.md):
- floats use the shortest round-trip form; NaN and infinities are written as the
  tokens ``NaN``, ``Infinity`` and ``-Infinity`` (what Python's json and simplejson read);
- timestamps with a zone are written in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``;
  naive timestamps without a zone suffix;
- decimals as JSON strings (``x-singer.decimal``), binary as base64 strings;
- JSON-text columns (free-form objects) are inserted as raw JSON; a SQL NULL in a
  JSON-text column (top level or struct child) leaves the property out, so that a
  ``null`` written is JSON's null (the SCHEMA says so with ``"x-sql-null": "omitted"``);
- a date, timestamp or time no Singer string can hold (years outside 1-9999, a time of
  day outside 00:00:00-23:59:59.999...) raises EncodeError naming the stream, column
  and row, rather than writing text the column's schema does not allow.
"""

from __future__ import annotations

import base64
import bisect
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge import accel
from dativo_bridge.arrow_types import any_nested
from dativo_bridge.errors import EncodeError
from dativo_bridge.schema import JSON_TYPE

_NULL = pa.scalar("null", pa.string())

_RustEncoder = Callable[[pa.RecordBatch, str, int | None], bytes | None]


#: The optional Rust extension's encoder (same output, faster), if installed.
_rust_encode_records: _RustEncoder | None = accel.function("encode_records")
_MIN_SLICE_ROWS = 8_192
_POOL: ThreadPoolExecutor | None = None


def _workers() -> int:
    return min(4, os.cpu_count() or 1)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_workers(), thread_name_prefix="dativo-encode")
    return _POOL


_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
_NEEDS_ESCAPE = re.compile(rb'["\\\x00-\x1f]')


def _quote(strings: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', strings, '"', "")


def _string_parts(arr: pa.Array) -> list[Any]:
    """Strings -> the parts of quoted, escaped JSON strings."""
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if not _NEEDS_ESCAPE.search(_value_bytes(arr)):
        return ['"', arr, '"']
    escaped = pc.replace_substring(arr, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    escaped = pc.replace_substring(escaped, "\n", "\\n")
    escaped = pc.replace_substring(escaped, "\r", "\\r")
    escaped = pc.replace_substring(escaped, "\t", "\\t")
    quoted = _quote(escaped)
    rare = pc.match_substring_regex(arr, _CONTROL)
    if pc.any(rare).as_py():
        # orjson escapes every control character exactly as JSON requires.
        exact = pa.array(
            [
                orjson.dumps(v).decode() if v is not None and bad else None
                for v, bad in zip(arr.to_pylist(), rare.to_pylist(), strict=True)
            ],
            pa.string(),
        )
        quoted = pc.if_else(pc.fill_null(rare, False), exact, quoted)
    return [quoted]


def _floats(arr: pa.Array) -> pa.Array:
    text = pc.cast(arr, pa.string())
    # "-0" would read back as the integer 0: keep the sign of negative zero.
    negative_zero = pc.equal(text, "-0")
    if pc.any(negative_zero).as_py():
        text = pc.if_else(negative_zero, "-0.0", text)
    is_nan = pc.is_nan(arr)
    if pc.any(pc.or_(is_nan, pc.is_inf(arr))).as_py():
        text = pc.if_else(is_nan, "NaN", text)
        text = pc.if_else(pc.and_(pc.is_inf(arr), pc.greater(arr, 0)), "Infinity", text)
        text = pc.if_else(pc.and_(pc.is_inf(arr), pc.less(arr, 0)), "-Infinity", text)
    return text


def _decimals(arr: pa.Array) -> pa.Array:
    """Plain notation with exactly ``scale`` fraction digits (Arrow may write 1E-8)."""
    text = pc.cast(arr, pa.string())
    exponent = pc.match_substring(text, "E")
    if pc.any(exponent).as_py():
        scale = arr.type.scale
        exact = pa.array(
            [
                f"{v:.{scale}f}" if v is not None and e else None
                for v, e in zip(arr.to_pylist(), exponent.to_pylist(), strict=True)
            ],
            pa.string(),
        )
        text = pc.if_else(pc.fill_null(exponent, False), exact, text)
    return text


_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_TIME_OF_DAY = {
    "s": pa.time32("s"),
    "ms": pa.time32("ms"),
    "us": pa.time64("us"),
    "ns": pa.time64("ns"),
}


def _timestamp_parts(arr: pa.Array) -> list[Any]:
    """ISO 8601 text, built from the date and the time of day (both fast casts in Arrow,
    unlike strftime); instants with a zone are written in UTC."""
    dtype: pa.TimestampType = arr.type
    ticks = arr.view(pa.int64())
    per_day = _PER_DAY[dtype.unit]
    days = pc.divide(ticks, per_day)
    rest = pc.subtract(ticks, pc.multiply(days, per_day))
    negative = pc.less(rest, 0)
    if pc.any(negative).as_py():  # floor division for instants before 1970
        days = pc.if_else(negative, pc.subtract(days, 1), days)
        rest = pc.if_else(negative, pc.add(rest, per_day), rest)
    date_text = pc.cast(pc.cast(days, pa.int32()).view(pa.date32()), pa.string())
    time_type = _TIME_OF_DAY[dtype.unit]
    storage = pa.int32() if time_type.bit_width == 32 else pa.int64()
    time_text = pc.cast(pc.cast(rest, storage).view(time_type), pa.string())
    suffix = '"' if dtype.tz is None else '+00:00"'
    return ['"', date_text, "T", time_text, suffix]


def _binary(arr: pa.Array) -> pa.Array:
    return pa.array(
        [
            None if v is None else '"' + base64.b64encode(v).decode("ascii") + '"'
            for v in arr.to_pylist()
        ],
        pa.string(),
    )


def _lists(arr: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_field))
    if pa.types.is_large_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_field))
    offsets = arr.offsets
    first = offsets[0].as_py()
    last = offsets[-1].as_py()
    values = arr.values.slice(first, last - first)
    fragments = pc.fill_null(fragments_of(values), _NULL)
    rebased = pc.subtract(offsets, first) if first else offsets
    as_lists = pa.ListArray.from_arrays(rebased, fragments)
    joined = pc.binary_join(as_lists, ",")
    joined = pc.binary_join_element_wise("[", joined, "]", "")
    return pc.if_else(arr.is_valid(), joined, pa.scalar(None, pa.string()))


def _structs(arr: pa.StructArray) -> pa.Array:
    dtype: pa.StructType = arr.type
    if dtype.num_fields == 0:
        return pc.if_else(arr.is_valid(), "{}", pa.scalar(None, pa.string()))
    columns = [(dtype.field(i).name, arr.field(i)) for i in range(dtype.num_fields)]
    parts = ["{", *_member_parts(columns), "}"]
    joined = pc.binary_join_element_wise(*_merged(parts), "")
    return pc.if_else(arr.is_valid(), joined, pa.scalar(None, pa.string()))


def _is_json(dtype: pa.DataType) -> bool:
    return dtype == JSON_TYPE or isinstance(dtype, pa.JsonType)


def _member_parts(columns: list[tuple[str, pa.Array]]) -> list[Any]:
    """``"name":value`` members separated by commas, as parts for the row-wise join.

    A JSON-text column leaves out its SQL NULL rows (JSON null is the text ``null``):
    its member is then an empty string, and the comma before the next member is written
    only in rows where a member came before it.
    """
    parts: list[Any] = []
    # Whether a member precedes in each row: False (none), True (every row), or a mask.
    before: Any = False
    for name, column in columns:
        key = orjson.dumps(name).decode() + ":"
        omit = _is_json(column.type) and column.null_count > 0
        if before is True:
            sep: Any = ","
        elif before is False:
            sep = ""
        else:
            sep = pc.if_else(before, ",", "")
        if not omit:
            parts.extend([sep, key] if not isinstance(sep, str) else [sep + key])
            parts.extend(_value_parts(column))
            before = True
            continue
        member = pc.binary_join_element_wise(sep, key, fragments_of(column), "")
        parts.append(pc.fill_null(member, ""))
        valid = column.is_valid()
        if before is False:
            before = valid
        elif before is not True:
            before = pc.or_(before, valid)
    return parts


def _has_parts(dtype: pa.DataType) -> bool:
    return (
        pa.types.is_decimal(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_timestamp(dtype)
        or pa.types.is_date(dtype)
        or pa.types.is_time(dtype)
    )


def _join(parts: list[Any]) -> pa.Array:
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]
    return pc.binary_join_element_wise(*parts, "")


def parts_of(arr: pa.Array) -> list[Any]:
    """The JSON text of each value as a sequence of arrays and literals to concatenate.

    Quotes and separators stay literals so that the row-wise join writes them, instead of
    one more pass per column. Valid where ``arr`` is valid; null rows are undefined.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dtype = arr.type
    if pa.types.is_dictionary(dtype):
        return parts_of(arr.dictionary_decode())
    if pa.types.is_decimal(dtype):
        return ['"', _decimals(arr), '"']
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return _string_parts(arr)
    if pa.types.is_timestamp(dtype):
        return _timestamp_parts(arr)
    if pa.types.is_date(dtype):
        return ['"', pc.cast(arr.cast(pa.date32()), pa.string()), '"']
    if pa.types.is_time(dtype):
        return ['"', pc.cast(arr, pa.string()), '"']
    return [fragments_of(arr)]


def _value_parts(arr: pa.Array) -> list[Any]:
    """parts_of, made null-safe: a column with nulls becomes one array with ``null``."""
    if arr.null_count == 0:
        return parts_of(arr)
    return [pc.fill_null(_join(parts_of(arr)), _NULL)]


def _merged(parts: list[Any]) -> list[Any]:
    """Adjacent literals concatenated (fewer arguments for the row-wise join)."""
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


def fragments_of(arr: pa.Array) -> pa.Array:
    """JSON text of each value of ``arr`` as a string array; null where the value is null.

    Raises:
        TypeError: For Arrow types outside the documented mapping.
    """
    dtype = arr.type
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(dtype):
        return fragments_of(arr.dictionary_decode())
    if dtype == JSON_TYPE or isinstance(dtype, pa.JsonType):
        # Raw newlines in valid JSON text are whitespace (inside strings they are escaped),
        # so they can become spaces and keep each message on one line.
        text = arr.storage.cast(pa.string())
        return pc.replace_substring(pc.replace_substring(text, "\n", " "), "\r", " ")
    if pa.types.is_null(dtype):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_boolean(dtype):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_integer(dtype):
        return pc.cast(arr, pa.string())
    if pa.types.is_floating(dtype):
        return _floats(arr)
    if _has_parts(dtype):
        return _join(parts_of(arr))
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return _binary(arr)
    if pa.types.is_struct(dtype):
        return _structs(arr)
    if (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    ):
        return _lists(arr)
    raise TypeError(f"no Singer encoding for Arrow type {dtype}")


def encode_records(
    batch: pa.RecordBatch | pa.Table,
    stream: str,
    *,
    version: int | None = None,
) -> bytes:
    """Encode a batch as Singer RECORD lines.

    Uses the Rust encoder of ``dativo_accel`` when it is installed: it writes the same
    bytes (tests/unit/test_rust_encode.py) and declines batches it cannot write
    identically, which the Python path below then encodes.

    Args:
        batch: The rows to encode; every column is written, nulls as ``null``.
        stream: The stream name written into each message.
        version: Optional table version (ACTIVATE_VERSION protocol).

    Returns:
        UTF-8 bytes: one RECORD message per row, each ending with a newline.
    """
    if _rust_encode_records is not None:
        if isinstance(batch, pa.Table):
            return _per_batch(batch, lambda b: encode_records(b, stream, version=version))
        fast = _rust_encode_records(batch, stream, version)
        if fast is not None:
            return fast
    return encode_records_python(batch, stream, version=version)


def encode_records_python(
    batch: pa.RecordBatch | pa.Table,
    stream: str,
    *,
    version: int | None = None,
) -> bytes:
    """The pure Python + Arrow kernels encoder behind :func:`encode_records`."""
    head = '{"type":"RECORD","stream":' + orjson.dumps(stream).decode() + ',"record":{'
    tail = "}" + (f',"version":{int(version)}' if version is not None else "") + "}\n"
    return _encode(batch, head, tail, stream)


def encode_rows(batch: pa.RecordBatch | pa.Table, stream: str | None = None) -> bytes:
    """Encode a batch as JSON Lines of bare records (the ``jsonl`` BATCH file format).

    Raises:
        EncodeError: As :func:`encode_records` (``stream`` only names it in the message).
    """
    return _encode(batch, "{", "}\n", stream)


def _per_batch(table: pa.Table, encode: Callable[[pa.RecordBatch], bytes]) -> bytes:
    """The encodings of a table's batches, with an EncodeError's row counted in the table."""
    out = []
    first = 0
    for b in table.to_batches():
        try:
            out.append(encode(b))
        except EncodeError as exc:
            row = None if exc.row is None else first + exc.row
            raise EncodeError(exc.reason, stream=exc.stream, column=exc.column, row=row) from None
        first += b.num_rows
    return b"".join(out)


def _encode(batch: pa.RecordBatch | pa.Table, head: str, tail: str, stream: str | None) -> bytes:
    if isinstance(batch, pa.Table):
        return _per_batch(batch, lambda b: _encode(b, head, tail, stream))
    if batch.num_rows == 0:
        return b""
    _check_writable(batch, stream)
    workers = _workers()
    if workers > 1 and batch.num_rows >= 2 * _MIN_SLICE_ROWS:
        # Arrow kernels release the GIL: row slices encode in parallel, in order.
        step = -(-batch.num_rows // workers)
        slices = [batch.slice(lo, step) for lo in range(0, batch.num_rows, step)]
        return b"".join(_pool().map(lambda s: _encode_slice(s, head, tail), slices))
    return _encode_slice(batch, head, tail)


def _encode_slice(batch: pa.RecordBatch, head: str, tail: str) -> bytes:
    """Rows as ``head`` + ``"name":value,...`` + ``tail``."""
    if batch.num_columns == 0:
        return (head + tail).encode() * batch.num_rows
    columns = [(field.name, batch.column(i)) for i, field in enumerate(batch.schema)]
    parts = [head, *_member_parts(columns), tail]
    lines = pc.binary_join_element_wise(*_merged(parts), "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    return _string_buffer_bytes(lines)


# ---------------------------------------------------------------------------------------
# Values no Singer string can hold: EncodeError instead of text the schema does not allow.

_FIRST_DAY = -719_162  # 0001-01-01, days since 1970-01-01
_LAST_DAY = 2_932_896  # 9999-12-31
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _bounds(dtype: pa.DataType) -> tuple[pa.DataType, int, int, str] | None:
    """(integer storage, lowest, highest allowed value, what the range is) of a temporal
    type whose values can fall outside what its Singer text can hold; None otherwise."""
    if pa.types.is_date32(dtype):
        return pa.int32(), _FIRST_DAY, _LAST_DAY, "days since 1970-01-01 (years 1-9999)"
    if pa.types.is_date64(dtype):
        lo, hi = _FIRST_DAY * 86_400_000, (_LAST_DAY + 1) * 86_400_000 - 1
        return pa.int64(), lo, hi, "ms since 1970-01-01 (years 1-9999)"
    if pa.types.is_timestamp(dtype):
        per = _PER_SECOND[dtype.unit]
        lo, hi = _FIRST_DAY * 86_400 * per, (_LAST_DAY + 1) * 86_400 * per - 1
        if lo <= -(2**63):  # nanoseconds: every int64 is within years 1677-2262
            return None
        where = "UTC " if dtype.tz is not None else ""
        return pa.int64(), lo, hi, f"{dtype.unit} since 1970-01-01 ({where}years 1-9999)"
    if pa.types.is_time(dtype):
        per = _PER_SECOND[dtype.unit]
        storage = pa.int32() if pa.types.is_time32(dtype) else pa.int64()
        return storage, 0, 86_400 * per - 1, f"{dtype.unit} of a day (00:00:00 to 23:59:59...)"
    return None


def first_unwritable(arr: pa.Array, path: str) -> tuple[int, str, str] | None:
    """The first row of ``arr`` (a valid one) holding a value its Singer text cannot
    hold: (row, column path, reason); None when every value can be written."""
    dtype = arr.type
    if pa.types.is_dictionary(dtype):
        return first_unwritable(arr.dictionary_decode(), path)
    bounds = _bounds(dtype)
    if bounds is not None:
        storage, lo, hi, unit = bounds
        ints = arr.view(storage)
        extremes = pc.min_max(ints)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is None or (lo <= low and high <= hi):
            return None
        bad = pc.or_(pc.less(ints, lo), pc.greater(ints, hi))
        row = pc.index(pc.fill_null(bad, False), True).as_py()
        value = ints[row].as_py()
        return (
            row,
            path,
            (
                f"{dtype} value {value} is outside {lo}..{hi} {unit}, "
                "which no Singer string of this type can hold"
            ),
        )
    found: list[tuple[int, str, str]] = []
    if pa.types.is_struct(dtype):
        valid = arr.is_valid()
        for i in range(dtype.num_fields):
            child = first_unwritable(arr.field(i), f"{path}.{dtype.field(i).name}")
            while child is not None and not valid[child[0]].as_py():
                # Under a null struct: not written. Look after it.
                rest = first_unwritable(arr.field(i).slice(child[0] + 1), child[1])
                child = None if rest is None else (child[0] + 1 + rest[0], rest[1], rest[2])
            if child is not None:
                found.append(child)
    elif (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    ):
        if pa.types.is_fixed_size_list(dtype):
            arr = arr.cast(pa.list_(dtype.value_field))
        offsets = arr.offsets.to_pylist()
        values = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
        start = 0
        while (item := first_unwritable(values.slice(start), f"{path}[]")) is not None:
            index = offsets[0] + start + item[0]
            row = bisect.bisect_right(offsets, index) - 1
            if arr.is_valid()[row].as_py():
                found.append((row, item[1], item[2]))
                break
            start = offsets[row + 1] - offsets[0]  # a null list: its values are not written
    return min(found) if found else None


def _check_writable(batch: pa.RecordBatch, stream: str | None) -> None:
    """Raise EncodeError for the first value whose Singer text would be invalid."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not may_be_unwritable(field.type):
            continue
        found = first_unwritable(column, field.name)
        if found is not None:
            row, path, reason = found
            raise EncodeError(reason, stream=stream, column=path, row=row)


def may_be_unwritable(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` holds (at any depth) a temporal type with values beyond what its
    Singer text can hold (see :func:`first_unwritable`)."""
    return any_nested(dtype, lambda t: _bounds(t) is not None)


def _value_bytes(arr: pa.StringArray) -> memoryview:
    """The bytes of every value of a string array, back to back (a view, no copy)."""
    offsets = arr.buffers()[1]
    data = arr.buffers()[2]
    if data is None or len(arr) == 0:
        return memoryview(b"")
    offs = pa.Array.from_buffers(pa.int32(), len(arr) + 1, [None, offsets], offset=arr.offset)
    return memoryview(data)[offs[0].as_py() : offs[-1].as_py()]


def _string_buffer_bytes(arr: pa.StringArray) -> bytes:
    """The concatenated values of a non-null string array, without a Python object per row."""
    offsets = arr.buffers()[1]
    data = arr.buffers()[2]
    if data is None:
        return b""
    offs = pa.Array.from_buffers(pa.int32(), len(arr) + 1, [None, offsets], offset=arr.offset)
    start = offs[0].as_py()
    end = offs[-1].as_py()
    return data[start:end].to_pybytes()
