"""The JSON text of Singer lines: parsing as Python's json module does, scanning a RECORD
with the text of JSON-text columns kept raw and duplicate keys refused, nesting limits,
and the line splitting of input blocks.

Parsing is orjson's where it gives the same values (it reads integers beyond 64 bits as
floats and refuses 1e400, so such lines go to the json module).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.errors import DecodeError
from dativo_bridge.schema import JSON_TYPE


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


class NumberText(float):
    """A JSON number with a fraction or exponent (its nearest double), with the text it
    had: a decimal column reads the digits (``99999999999999.9999``), not the double."""

    text: str


class OutOfRange(NumberText):
    """A JSON number beyond the double range (``1e400``): infinity, with the text it had."""


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        out = OutOfRange(value)
        out.text = text
        return out
    return value


def _parse_number_text(text: str) -> float:
    value = float(text)
    out = OutOfRange(value) if math.isinf(value) else NumberText(value)
    out.text = text
    return out


class _NotJsonConstant(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJsonConstant(name)


#: Python's C scanners: lenient (the NaN/Infinity tokens, as ``json.loads`` reads them),
#: and strict (JSON's grammar only) for the values of JSON-text columns.
_Scanner = Callable[[str, int], tuple[Any, int]]
_LENIENT: Any = json.JSONDecoder(parse_float=_parse_float)
_EXACT: Any = json.JSONDecoder(parse_float=_parse_number_text)
_STRICT: Any = json.JSONDecoder(parse_constant=_no_constant)
_LENIENT_SCAN: _Scanner = _LENIENT.scan_once
_EXACT_SCAN: _Scanner = _EXACT.scan_once
_STRICT_SCAN: _Scanner = _STRICT.scan_once
_SCAN_STRING: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")


def loads_record(line: bytes, exact: bool = False) -> Any:
    """:func:`loads`, with numbers beyond the double range marked (``OutOfRange``);
    ``exact``: every number with a fraction or exponent is a :class:`NumberText`."""
    if exact:
        return json.loads(line, parse_float=_parse_number_text)
    try:
        value = orjson.loads(line)  # orjson refuses 1e400
    except orjson.JSONDecodeError:
        return json.loads(line, parse_float=_parse_float)
    if _LONG_DIGITS.search(line) is not None:
        return json.loads(line, parse_float=_parse_float)
    return value


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DuplicateKey("")  # where: the caller scans the line again to say
    return out


def loads_unique(line: bytes, exact: bool = False) -> Any:
    """:func:`loads_record` in one pass of the C parser, with a key given twice in any
    object raising :class:`DuplicateKey` (without its path: :func:`scan_record` finds it).
    For records that need no JSON text kept raw (a third of the time of that scan)."""
    parse = _parse_number_text if exact else _parse_float
    return json.loads(line, parse_float=parse, object_pairs_hook=_unique_pairs)


class RawText(str):
    """The text of a JSON-text column's value exactly as the line wrote it."""


class NotJson(str):
    """The text of a JSON-text column's value that is not JSON (NaN, Infinity)."""

    token: str


ABSENT: Any = object()  # a property missing from a record (vs. a present null)


class _ListPlan:
    def __init__(self, item: Any) -> None:
        self.item = item


class DuplicateKey(ValueError):
    """A key given twice in one object of a message: its dotted path in the record, or
    the message's own key (``in_record`` False)."""

    def __init__(self, path: str, in_record: bool = True) -> None:
        super().__init__(path)
        self.path = path
        self.in_record = in_record


def scan_plan(dtype: pa.DataType) -> Any:
    """How the exact path scans a value of ``dtype``: ``JSON_TYPE`` (kept as raw text), a
    dict of struct children (an object whose keys are checked for duplicates), a
    ``_ListPlan``, or None (parsed whole by the C scanner)."""
    if dtype == JSON_TYPE:
        return JSON_TYPE
    if pa.types.is_struct(dtype):
        return {
            dtype.field(i).name: plan
            for i in range(dtype.num_fields)
            if (plan := scan_plan(dtype.field(i).type)) is not None
        }
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        item = scan_plan(dtype.value_type)
        return None if item is None else _ListPlan(item)
    return None


def _scan(
    s: str, i: int, plan: Any, path: str, lenient: _Scanner = _LENIENT_SCAN
) -> tuple[Any, int]:
    """The value at ``s[i:]`` (after whitespace), JSON text kept raw where ``plan`` says;
    ``path`` (``a.b.``) names the value in a duplicate-key error."""
    i = _WS.match(s, i).end()  # type: ignore[union-attr]
    if plan is None:
        return lenient(s, i)
    if plan is JSON_TYPE:
        try:
            end = _STRICT_SCAN(s, i)[1]
        except _NotJsonConstant as exc:
            end = _LENIENT_SCAN(s, i)[1]
            bad = NotJson(s[i:end])
            bad.token = str(exc)
            return bad, end
        return RawText(s[i:end]), end
    if isinstance(plan, dict):
        if s.startswith("{", i):
            return _scan_object(s, i, plan, path, lenient)
    elif s.startswith("[", i):
        return _scan_array(s, i, plan.item, path, lenient)
    return lenient(s, i)


def _scan_object(
    s: str, i: int, plan: dict[str, Any], path: str, lenient: _Scanner
) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    if s.startswith("}", i):
        return out, i + 1
    while True:
        if not s.startswith('"', i):
            raise ValueError("expected a property name")
        key, i = _SCAN_STRING(s, i + 1)
        if key in out:
            raise DuplicateKey(path + key)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if not s.startswith(":", i):
            raise ValueError("expected ':'")
        child = plan.get(key)
        out[key], i = _scan(s, i + 1, child, "" if child is None else f"{path}{key}.", lenient)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if s.startswith("}", i):
            return out, i + 1
        if not s.startswith(",", i):
            raise ValueError("expected ',' or '}'")
        i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]


def _scan_array(s: str, i: int, item: Any, path: str, lenient: _Scanner) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    if s.startswith("]", i):
        return out, i + 1
    inner = path[:-1] + "[]." if path else path
    while True:
        value, i = _scan(s, i, item, inner, lenient)
        out.append(value)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if s.startswith("]", i):
            return out, i + 1
        if not s.startswith(",", i):
            raise ValueError("expected ',' or ']'")
        i += 1


def scan_record(line: bytes, plan: dict[str, Any], exact: bool = False) -> Any:
    """The ``record`` of a message (already parsed once, so known to be valid), with the
    value of every JSON-text column as its raw text (``RawText``) instead of parsed;
    ``exact``: numbers with a fraction or exponent as :class:`NumberText`.

    Raises:
        DuplicateKey: A key given twice at the message's top level, in the record, or in
            an object the schema maps to a struct (docs/singer-codecs.md#duplicate-keys).
    """
    # As json.loads decodes bytes (a BOM is skipped, surrogates pass to the later check).
    s = line.decode("utf-8-sig", "surrogatepass")
    i = _WS.match(s).end()  # type: ignore[union-attr]
    if not s.startswith("{", i):
        raise ValueError("expected an object")
    record: Any = None
    seen: set[str] = set()
    lenient = _EXACT_SCAN if exact else _LENIENT_SCAN
    i = _WS.match(s, i + 1).end()  # type: ignore[union-attr]
    while s.startswith('"', i):
        key, i = _SCAN_STRING(s, i + 1)
        if key in seen:
            raise DuplicateKey(key, in_record=False)
        seen.add(key)
        i = _WS.match(s, i).end()  # type: ignore[union-attr]
        if not s.startswith(":", i):
            raise ValueError("expected ':'")
        if key == "record":
            record, i = _scan(s, i + 1, plan, "", lenient)
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


def has_lone_surrogate(message: Any) -> bool:
    """Whether a parsed message holds a string with a lone surrogate (not UTF-8 encodable)."""
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def too_deep_error(stream: str | None, number: int) -> DecodeError:
    return DecodeError(
        f"arrays and objects nested deeper than {MAX_NESTING} levels",
        stream=stream,
        line_number=number,
        expected=f"at most {MAX_NESTING} levels of nesting",
    )


def not_utf8_error(exc: UnicodeDecodeError, stream: str | None, number: int) -> DecodeError:
    return DecodeError(
        f"malformed JSON: invalid UTF-8 at byte {exc.start} of the line ({exc.reason})",
        stream=stream,
        line_number=number,
        expected="UTF-8 text (property names and string values)",
    )
