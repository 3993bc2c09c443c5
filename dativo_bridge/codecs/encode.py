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
- JSON-text columns (free-form objects) are inserted as raw JSON.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.schema import JSON_TYPE

_NULL = pa.scalar("null", pa.string())

_RustEncoder = Callable[[pa.RecordBatch, str, int | None], bytes | None]


def _rust_encoder() -> _RustEncoder | None:
    """The optional Rust extension's encoder (same output, faster), if installed."""
    try:
        module = importlib.import_module("dativo_accel")
    except ImportError:
        return None
    encoder: _RustEncoder | None = getattr(module, "encode_records", None)
    return encoder


_rust_encode_records = _rust_encoder()
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
    parts: list[Any] = []
    for i in range(dtype.num_fields):
        name = dtype.field(i).name
        prefix = ("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":"
        parts.append(prefix)
        parts.extend(_value_parts(arr.field(i)))
    parts.append("}")
    joined = pc.binary_join_element_wise(*_merged(parts), "")
    return pc.if_else(arr.is_valid(), joined, pa.scalar(None, pa.string()))


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
            return b"".join(encode_records(b, stream, version=version) for b in batch.to_batches())
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
    return _encode(batch, head, tail)


def encode_rows(batch: pa.RecordBatch | pa.Table) -> bytes:
    """Encode a batch as JSON Lines of bare records (the ``jsonl`` BATCH file format)."""
    return _encode(batch, "{", "}\n")


def _encode(batch: pa.RecordBatch | pa.Table, head: str, tail: str) -> bytes:
    if isinstance(batch, pa.Table):
        return b"".join(_encode(b, head, tail) for b in batch.to_batches())
    if batch.num_rows == 0:
        return b""
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
    parts: list[Any] = []
    for i, field in enumerate(batch.schema):
        key = orjson.dumps(field.name).decode() + ":"
        parts.append((head if i == 0 else ",") + key)
        parts.extend(_value_parts(batch.column(i)))
    parts.append(tail)
    lines = pc.binary_join_element_wise(*_merged(parts), "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    return _string_buffer_bytes(lines)


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
