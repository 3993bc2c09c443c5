"""Where a CSV file broke: the file, line and column behind an error of pyarrow's reader.

pyarrow's CSV reader is fast but says ``In CSV column #2: ... invalid value 'x'`` or
``Expected 3 columns, got 4`` without a line. Only after a read has failed, this module
reads the file again with Python's csv module, as text of the same encoding and delimiter,
to find the first line at fault. The read that succeeds never comes here.

Line numbers are physical lines of the decompressed text, 1-based, the header being line 1.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (.+?): invalid value '(.*)'$",
    re.S,
)
_COLUMNS = re.compile(r"Expected (\d+) columns, got (\d+)")


class _Truncated(Exception):
    def __init__(self, line: int, cause: OSError) -> None:
        self.line = line
        self.cause = cause


def _rows(path: Path, encoding: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank row; raises _Truncated when the compressed
    stream ends early or is corrupt."""
    raw = pa.input_stream(str(path), compression="detect")
    text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")  # type: ignore[arg-type]
    reader = csv.reader(text, delimiter=delimiter)
    line = 1
    try:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            if fields:
                yield line, fields
            line = reader.line_num + 1
    except OSError as exc:
        raise _Truncated(reader.line_num, exc) from None
    finally:
        text.close()


def header(path: Path, encoding: str, delimiter: str) -> list[str] | None:
    """The column names of the file's first line, or None for an empty file.

    Raises:
        OSError: The file cannot be read or decompressed.
    """
    try:
        for _, fields in _rows(path, encoding, delimiter):
            return fields
    except _Truncated as truncated:
        raise truncated.cause from None
    return None


def explain(path: Path, encoding: str, delimiter: str, error: BaseException) -> str:
    """One line locating ``error`` (raised while pyarrow read ``path``) in the file: the
    line and, where one is at fault, the column name."""
    message = str(error).strip()
    try:
        return _explain(path, encoding, delimiter, message)
    except _Truncated as truncated:
        return (
            f"the compressed data is truncated or corrupt after line {truncated.line} "
            f"({truncated.cause})"
        )


def _explain(path: Path, encoding: str, delimiter: str, message: str) -> str:
    rows = _rows(path, encoding, delimiter)
    first = next(rows, None)
    if first is None:
        return "the file is empty (no header line)"
    names = first[1]
    width = len(names)
    conversion = _CONVERSION.search(message)
    if conversion is not None:
        index, dtype, value = int(conversion[1]), conversion[2], conversion[3]
        column = names[index] if index < width else f"#{index + 1}"
        for line, fields in rows:
            if index < len(fields) and fields[index] == value:
                return f"line {line}, column '{column}': value {value!r} is not a valid {dtype}"
        return f"column '{column}': value {value!r} is not a valid {dtype}"
    for line, fields in rows:
        if any("\n" in f or "\r" in f for f in fields):
            return (
                f"line {line}: a quoted value is not closed on its line "
                "(an unterminated quote; values may not span lines)"
            )
        if len(fields) != width:
            more = "more" if len(fields) > width else "fewer"
            return (
                f"line {line}: {len(fields)} values, {more} than the header's {width} "
                f"columns ({', '.join(names)})"
            )
    counts = _COLUMNS.search(message)
    if counts is not None:
        return f"a row has {counts[2]} values, the header {counts[1]} columns"
    return message


def line_of_row(path: Path, encoding: str, delimiter: str, row: int) -> int | None:
    """The line on which data row ``row`` (0-based, after the header) starts."""
    try:
        for number, (line, _) in enumerate(_rows(path, encoding, delimiter)):
            if number == row + 1:
                return line
    except _Truncated:
        return None
    return None
