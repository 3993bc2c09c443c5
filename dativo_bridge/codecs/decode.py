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

import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from dativo_bridge import accel, errors
from dativo_bridge.arrow_types import any_nested
from dativo_bridge.codecs.encode import first_unwritable, may_be_unwritable
from dativo_bridge.codecs.fast_path import (
    fast_type,
    has_float,
    inf_rows,
    nested_extra,
    without_annotation,
)
from dativo_bridge.codecs.json_text import (
    ABSENT,
    MAX_NESTING,
    DuplicateKey,
    NumberText,
    has_lone_surrogate,
    loads,
    loads_record,
    loads_unique,
    nesting_depth,
    not_utf8_error,
    scan_plan,
    scan_record,
    split_segments,
    too_deep,
    too_deep_error,
)
from dativo_bridge.codecs.values import (
    BadValue,
    Extras,
    Undeclared,
    batch_from_columns,
    expected_type,
    value_converter,
)
from dativo_bridge.errors import DecodeError, SchemaMappingError
from dativo_bridge.schema import JSON_TYPE, relax_nullability, sql_null_omitted
from dativo_bridge.validation import RecordChecks

__all__ = ["MAX_NESTING", "RecordDecoder", "loads", "nesting_depth", "split_segments", "too_deep"]

logger = logging.getLogger("dativo.decode")

_EPOCH_PREFIX = pa.scalar("1970-01-01T", pa.string())

#: The optional Rust extension's RecordDecoder class (same batches, faster), if any.
_RUST_DECODER: Any | None = accel.function("RecordDecoder")


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
            [without_annotation(f) for f in annotated], metadata=annotated.metadata
        )
        checks = None
        if validate and json_schema is not None:
            checks = RecordChecks(stream, json_schema, self.schema)
        self._checks = checks if checks else None
        #: Records may carry no undeclared top-level property (additionalProperties).
        self._closed = checks is not None and checks.closed
        self._extras = Extras(closed=set(checks.closed_paths) if checks is not None else set())
        self._warned_extra = False
        self._warned_nested = False
        fast_fields: list[pa.Field] | None = []
        for f in self.schema:
            ftype = fast_type(f.type, True)
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
        self._check_inf = any(has_float(f.type) for f in self.schema)
        # Fast path: Arrow reads dates and date-times outside years 1-9999 (UTC), which
        # the exact path refuses (and no Singer string could hold again).
        self._check_range = [f.name for f in self.schema if may_be_unwritable(f.type)]
        self._converters = [
            (
                f.name,
                value_converter(f.type, f.name, sql_null_omitted(f), self._extras),
                ABSENT if sql_null_omitted(f) else None,
            )
            for f in annotated
        ]
        # How the exact path scans a record: JSON text kept raw, keys of objects checked.
        self._plan: dict[str, Any] = {
            f.name: p for f in self.schema if (p := scan_plan(f.type)) is not None
        }
        # No JSON text to keep raw: one C parse that refuses duplicate keys does it all.
        self._raw_text = _keeps_raw_text(self._plan)
        # Decimal columns read a JSON number's digits, not its nearest double.
        self._exact_numbers = any(any_nested(f.type, pa.types.is_decimal) for f in self.schema)
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
            record = loads_record(line).get("record")
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
            raise too_deep_error(self.stream, line_numbers[deep])
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
            if has_float(f.type):
                rows |= inf_rows(column)
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
            for name in nested_extra(child.type, declared[child.name].type, child.name)
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
                raise errors.MissingKeyPropertyError(
                    "record has no value for key property",
                    stream=self.stream,
                    line_number=line_numbers[first],
                    field=key,
                    expected=expected_type(col.type),
                )

    def _message(self, line: bytes, number: int) -> Any:
        """The ``record`` of one RECORD line, JSON text kept raw (see :func:`scan_record`)."""
        duplicated = False
        try:
            exact = self._exact_numbers
            message = loads_record(line, exact) if self._raw_text else loads_unique(line, exact)
        except DuplicateKey:
            duplicated = True  # scan_record below names it
            try:
                message = loads_record(line, self._exact_numbers)
            except ValueError as exc:  # a duplicate before the point where the JSON breaks
                raise DecodeError(
                    f"malformed JSON: {exc}", stream=self.stream, line_number=number
                ) from None
        except UnicodeDecodeError as exc:
            raise not_utf8_error(exc, self.stream, number) from None
        except ValueError as exc:
            raise DecodeError(
                f"malformed JSON: {exc}", stream=self.stream, line_number=number
            ) from None
        except RecursionError:
            raise too_deep_error(self.stream, number) from None
        if b"\\u" in line and has_lone_surrogate(message):
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
        if not (self._raw_text or duplicated):
            return message["record"]
        try:
            return scan_record(line, self._plan, self._exact_numbers)
        except DuplicateKey as dup:
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
            raise too_deep_error(self.stream, number) from None

    def _decode_exact(self, lines: Sequence[bytes], line_numbers: Sequence[int]) -> pa.RecordBatch:
        columns: list[list[Any]] = [[] for _ in self._converters]
        declared = set(self.schema.names)
        for line, number in zip(lines, line_numbers, strict=True):
            record = self._message(line, number)
            for key in self.key_properties:
                if record.get(key) is None:
                    raise errors.MissingKeyPropertyError(
                        "record has no value for key property",
                        stream=self.stream,
                        line_number=number,
                        field=key,
                        expected=expected_type(self.schema.field(key).type),
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
            except Undeclared as undeclared:
                self._raise_undeclared(undeclared.path, number)
            except BadValue as bad:
                if isinstance(bad.value, str | NumberText) and type(bad.value) is not str:
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
                    expected=expected_type(bad.dtype),
                ) from None
        if self._extras.found:
            self._warn_nested(self._extras.found)
        return batch_from_columns(self.schema, columns)


def _keeps_raw_text(plan: Any) -> bool:
    """Whether a scan plan keeps some JSON text raw (else only checks keys)."""
    if plan is JSON_TYPE:
        return True
    if isinstance(plan, dict):
        return any(_keeps_raw_text(p) for p in plan.values())
    item = getattr(plan, "item", None)
    return item is not None and _keeps_raw_text(item)
