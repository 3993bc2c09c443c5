"""Reading a Singer message stream: RECORD lines in bulk, other messages one by one."""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import pyarrow as pa

from dativo_bridge import accel, errors
from dativo_bridge.batch_files import FORMATS, check_manifest
from dativo_bridge.codecs.decode import RecordDecoder, loads, nesting_depth, too_deep
from dativo_bridge.conform import Mismatch, conform
from dativo_bridge.errors import DecodeError, SchemaMappingError
from dativo_bridge.events import BatchFileSink
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.schema import jsonschema_to_arrow

logger = logging.getLogger("dativo.input")

#: Most taps write "type" then "stream" first; such RECORD lines are routed without parsing.
_RECORD_HEAD = re.compile(rb'^\{\s*"type"\s*:\s*"RECORD"\s*,\s*"stream"\s*:\s*"([^"\\]*)"')

DEFAULT_MAX_LINE_BYTES = 128 * 1024 * 1024


def iter_lines(source: IO[Any], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[bytes]:
    """Yield the lines of a text or binary stream as bytes, refusing over-long lines."""
    binary = getattr(source, "buffer", None) if source is not None else None
    stream = binary if binary is not None and _is_real_stdin(source) else source
    number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            raise _too_long(max_line_bytes, number)
        yield line


def _too_long(max_line_bytes: int, number: int) -> DecodeError:
    return DecodeError(
        f"line is longer than max_line_bytes ({max_line_bytes} bytes)",
        line_number=number,
        expected="one Singer message per line",
    )


def _is_real_stdin(source: Any) -> bool:
    import sys

    return source is sys.stdin or source is sys.__stdin__


#: ``dativo_accel.record_run`` (runs of RECORD lines found in Rust), if installed.
_record_run: Any | None = accel.function("record_run")

#: Bytes asked of the input per read when it is taken in blocks (a pipe gives less).
BLOCK_BYTES = 1 << 20


def _binary_input(source: Any) -> Any | None:
    """The binary stream to read ``source`` from in blocks, or None (read it by lines)."""
    if _is_real_stdin(source):
        return getattr(source, "buffer", None)
    if isinstance(source, io.BufferedIOBase | io.RawIOBase):
        return source
    return None


class _OrderedCalls:
    """Runs calls on one background thread, in the order given, so the writers write a
    batch while the next one is decoded (both release the GIL).

    A failed call stops the rest: the error is raised by the next :meth:`submit` or by
    :meth:`drain`, which waits for every call submitted before it, as if each had run
    where it was submitted.
    """

    def __init__(self, depth: int = 1) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._run, name="dativo-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._raise()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait for every submitted call, end the thread, raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        # The error stays set (the thread skips every later call); it is raised once.
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error


@dataclass
class _Pending:
    """A stream's RECORD lines waiting to be decoded, as ``(data, start, end)`` segments."""

    decoder: RecordDecoder
    segments: list[tuple[bytes, int, int]] = field(default_factory=list)
    first_numbers: list[int] = field(default_factory=list)
    lines: int = 0
    size: int = 0


class SingerInput:
    """Feeds a Singer message stream into a sink (the run's
    :class:`~dativo_bridge.delivery.StreamWriters`, or any :class:`BatchFileSink`).

    Args:
        sink: Where decoded batches, schemas and states go, and the BATCH files whose
            rows were handed to it (deleted once those rows are committed).
        batch_rows: Decode a stream's pending RECORD lines once this many have arrived.
        batch_bytes: ... or once they hold this many bytes.
        max_line_bytes: Refuse longer lines.
        validate_records: Check the JSON Schema constraints of each stream's SCHEMA
            (enum, bounds, required, ...) on its records; False: types only (faster).
    """

    def __init__(
        self,
        sink: BatchFileSink,
        *,
        batch_rows: int = 100_000,
        batch_bytes: int = 32 * 1024 * 1024,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        validate_records: bool = True,
    ) -> None:
        self.sink = sink
        self.validate_records = validate_records
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.max_line_bytes = max_line_bytes
        self._pending: dict[str, _Pending] = {}
        self.counts: dict[str, int] = {}
        # Block input (feed): the incomplete last line so far, and lines consumed.
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._line_count = 0
        self._calls: _OrderedCalls | None = None
        self._kept_noted: set[str] = set()

    def process(self, source: IO[Any]) -> None:
        """Consume every line of ``source`` and write what is pending at its end (the
        writers are not committed: that is the caller's ``finish``).

        With ``dativo_accel`` installed, a binary stream (or standard input) is read in
        blocks: runs of RECORD lines go to the decoder as slices of the blocks, and only
        the other messages are handled line by line. Otherwise line by line throughout.
        """
        self.consume(source)
        self.flush()

    def consume(self, source: IO[Any], tick: Callable[[], None] | None = None) -> None:
        """:meth:`process` without the final flush; ``tick`` is called now and then (after
        each block, or every 10,000 lines), e.g. to report progress."""
        binary = _binary_input(source) if _record_run is not None else None
        if binary is None:
            for number, line in enumerate(iter_lines(source, self.max_line_bytes), start=1):
                self.process_line(line, number)
                if tick is not None and number % 10_000 == 0:
                    tick()
            return
        read = getattr(binary, "read1", None) or binary.read
        self._calls = _OrderedCalls()
        try:
            while chunk := read(BLOCK_BYTES):
                self.feed(bytes(chunk))
                if tick is not None:
                    tick()
            self.end_of_input()
        finally:
            calls, self._calls = self._calls, None
            calls.drain()  # a writer's earlier failure comes first, as it would have

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """A call on the writers: on the writer thread while :meth:`consume` reads blocks."""
        if self._calls is not None:
            self._calls.submit(fn, *args)
        else:
            fn(*args)

    def feed(self, chunk: bytes) -> None:
        """Handle the next ``chunk`` of a message stream given in blocks (any sizes, lines
        may span chunks); call :meth:`end_of_input` after the last one."""
        if not chunk:
            return
        if b"\n" not in chunk:
            self._hold(chunk)
            return
        if self._tail:
            self._tail.append(chunk)
            chunk = b"".join(self._tail)
            self._tail, self._tail_size = [], 0
        end = self._feed_lines(chunk)
        if end < len(chunk):
            self._hold(chunk[end:])

    def end_of_input(self) -> None:
        """Handle a last line that has no newline (as :func:`iter_lines` gives it)."""
        if self._tail:
            line = b"".join(self._tail)
            self._tail, self._tail_size = [], 0
            self._line_count += 1
            self.process_line(line, self._line_count)

    def _hold(self, piece: bytes) -> None:
        self._tail.append(piece)
        self._tail_size += len(piece)
        if self._tail_size > self.max_line_bytes:
            raise _too_long(self.max_line_bytes, self._line_count + 1)

    def _feed_lines(self, data: bytes) -> int:
        """Handle the complete lines of ``data``; returns where the incomplete rest starts."""
        assert _record_run is not None
        run = _record_run
        # Runs are only taken where no line can be too long (a longer line is then
        # checked line by line below).
        runs_ok = len(data) <= self.max_line_bytes + 1
        name: bytes | None = None
        pending: _Pending | None = None
        pos = 0
        size = len(data)
        while pos < size:
            if runs_ok:
                lines_left = bytes_left = 0
                if pending is not None:
                    lines_left = self.batch_rows - pending.lines
                    bytes_left = self.batch_bytes - pending.size
                head, end, count = run(data, pos, name, lines_left, bytes_left)
                if count:
                    assert pending is not None and name is not None
                    pending.segments.append((data, pos, end))
                    pending.first_numbers.append(self._line_count + 1)
                    pending.lines += count
                    pending.size += end - pos
                    self._line_count += count
                    self.counts["RECORD"] = self.counts.get("RECORD", 0) + count
                    pos = end
                    if pending.lines >= self.batch_rows or pending.size >= self.batch_bytes:
                        self._flush_stream(name.decode("utf-8", "replace"), pending)
                    continue
                if head is not None and head != name:
                    found = self._pending.get(head.decode("utf-8", "replace"))
                    if found is not None:
                        name, pending = head, found
                        continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                return pos
            self._line_count += 1
            line = data[pos : newline + 1]
            if len(line) > self.max_line_bytes + 1:
                raise _too_long(self.max_line_bytes, self._line_count)
            self.process_line(line, self._line_count)
            name = pending = None  # a SCHEMA may have replaced the stream's decoder
            pos = newline + 1
        return pos

    def process_line(self, line: bytes, number: int) -> None:
        """Handle one input line (1-based ``number`` for error messages)."""
        head = _RECORD_HEAD.match(line)
        if head is not None:
            self._record(head.group(1).decode("utf-8", "replace"), line, number)
            return
        stripped = line.strip()
        if not stripped:
            return
        message = _parse_message(stripped, number)
        kind = message["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "RECORD":
            stream = message.get("stream")
            if not isinstance(stream, str):
                raise DecodeError(
                    "RECORD without a 'stream'", line_number=number, expected="a stream name"
                )
            self._record(stream, stripped, number, counted=True)
        elif kind == "SCHEMA":
            self._schema(message, number)
        elif kind == "STATE":
            if not isinstance(message.get("value"), dict):
                what = "has no 'value'"
                if "value" in message:
                    what = "has a 'value' that is not an object"
                raise DecodeError(
                    f"STATE message {what}",
                    line_number=number,
                    expected='a STATE message {"type": "STATE", "value": {...}}',
                )
            self.flush()
            self._call(self.sink.state, message["value"])
        elif kind == "ACTIVATE_VERSION":
            logger.debug("ACTIVATE_VERSION for '%s' noted", message.get("stream"))
        elif kind == "BATCH":
            self._batch(message, number)
        else:
            raise DecodeError(
                f"unknown message type {kind!r}",
                line_number=number,
                expected="RECORD, SCHEMA, STATE, ACTIVATE_VERSION or BATCH",
            )

    def _record(self, stream: str, line: bytes, number: int, counted: bool = False) -> None:
        if not counted:
            self.counts["RECORD"] = self.counts.get("RECORD", 0) + 1
        pending = self._pending.get(stream)
        if pending is None:
            raise errors.RecordBeforeSchemaError(
                "RECORD arrived before the stream's SCHEMA",
                stream=stream,
                line_number=number,
                expected="a SCHEMA message for the stream first",
            )
        pending.segments.append((line, 0, len(line)))
        pending.first_numbers.append(number)
        pending.lines += 1
        pending.size += len(line)
        if pending.lines >= self.batch_rows or pending.size >= self.batch_bytes:
            self._flush_stream(stream, pending)

    def _schema(self, message: dict[str, Any], number: int) -> None:
        stream = message.get("stream")
        schema = message.get("schema")
        if not isinstance(stream, str) or not isinstance(schema, dict):
            raise DecodeError(
                "SCHEMA needs 'stream' and an object 'schema'",
                line_number=number,
                expected="a Singer SCHEMA message",
            )
        keys = _names(message, "key_properties", stream, number)
        bookmark_keys = _names(message, "bookmark_properties", stream, number)
        for key in keys:
            if key not in schema.get("properties", {}):
                raise DecodeError(
                    f"key property '{key}' is not in the schema's properties",
                    stream=stream,
                    line_number=number,
                    expected="key_properties naming declared properties",
                )
        try:
            arrow = jsonschema_to_arrow(schema)
            decoder = RecordDecoder(
                stream, arrow, keys, json_schema=schema, validate=self.validate_records
            )
        except SchemaMappingError as exc:
            raise DecodeError(
                str(exc),
                stream=stream,
                line_number=number,
                expected="a JSON Schema object with properties",
            ) from None
        pending = self._pending.get(stream)
        if pending is not None:
            self._flush_stream(stream, pending)
        self._pending[stream] = _Pending(decoder)
        self._call(
            self.sink.schema,
            StreamInfo(
                stream,
                decoder.schema,
                tuple(decoder.key_properties),
                bookmark_keys[0] if bookmark_keys else None,
            ),
        )

    def _batch(self, message: dict[str, Any], number: int) -> None:
        """Read a BATCH message's files as the stream's batches.

        Every manifest entry is checked before any file is read; the files a Dativo tap
        provably wrote for the stream are deleted by the commit that makes their rows
        durable, the others are left alone (docs/batch-files.md).
        """
        stream = message.get("stream")
        pending = self._pending.get(stream) if isinstance(stream, str) else None
        if pending is None or not isinstance(stream, str):
            raise errors.RecordBeforeSchemaError(
                "BATCH arrived before the stream's SCHEMA", stream=stream, line_number=number
            )
        self._flush_stream(stream, pending)
        encoding = message.get("encoding") or {}
        fmt = encoding.get("format")
        compression = encoding.get("compression")
        if fmt not in FORMATS:
            raise DecodeError(
                f"unsupported BATCH encoding {fmt!r}",
                stream=stream,
                line_number=number,
                expected="arrow, parquet or jsonl",
            )
        files = check_manifest(message.get("manifest"), stream, fmt, compression, number)
        schema = pending.decoder.schema
        for file in files:
            if fmt == "jsonl":
                wrapped = [
                    b'{"type":"RECORD","stream":'
                    + orjson.dumps(stream)
                    + b',"record":'
                    + line.rstrip(b"\r\n")
                    + b"}\n"
                    for line in file.lines()
                ]
                batch = pending.decoder.decode(wrapped, [number] * len(wrapped))
                self._call(self.sink.write, stream, batch)
                continue
            for batch in file.batches(schema):
                try:
                    batch = conform(batch, schema)
                except Mismatch as exc:
                    raise file.error(f"does not match the SCHEMA: {exc}") from None
                self._call(self.sink.write, stream, batch)
        kept = [file.uri for file in files if not file.owned]
        if kept and stream not in self._kept_noted:
            self._kept_noted.add(stream)
            logger.info(
                "stream '%s': BATCH files not written by a Dativo tap are kept (e.g. %s)",
                stream,
                kept[0],
            )
        # The owned files are deleted once their rows are committed.
        self._call(self.sink.discard_after_commit, [file for file in files if file.owned])

    def _flush_stream(self, stream: str, pending: _Pending) -> None:
        if not pending.lines:
            return
        batch = pending.decoder.decode_segments(pending.segments, pending.first_numbers)
        pending.segments = []
        pending.first_numbers = []
        pending.lines = 0
        pending.size = 0
        self._call(self.sink.write, stream, batch)

    def flush(self) -> None:
        """Decode and write every stream's pending lines."""
        for stream, pending in self._pending.items():
            self._flush_stream(stream, pending)

    def schemas(self) -> dict[str, pa.Schema]:
        """The Arrow schema of every stream seen so far."""
        return {name: p.decoder.schema for name, p in self._pending.items()}


def _names(message: dict[str, Any], key: str, stream: str, number: int) -> list[str]:
    """A SCHEMA message's ``key_properties`` or ``bookmark_properties``: a list of
    property names (absent or null: none)."""
    value = message.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DecodeError(
            f"'{key}' is {orjson.dumps(value).decode()[:80]}",
            stream=stream,
            line_number=number,
            expected=f"'{key}' as a list of property names (strings)",
        )
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _parse_message(line: bytes, number: int) -> dict[str, Any]:
    """One message line other than a RECORD routed whole to its decoder.

    A key given twice in any object of a SCHEMA, STATE, ACTIVATE_VERSION or BATCH message
    is refused (a RECORD's duplicates are its decoder's: docs/singer-codecs.md).
    """
    try:
        message = loads(line)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"malformed JSON: invalid UTF-8 at byte {exc.start} of the line ({exc.reason})",
            line_number=number,
            expected="UTF-8 text (property names and string values)",
        ) from None
    except ValueError as exc:
        raise DecodeError(
            f"malformed JSON: {exc}",
            line_number=number,
            expected="a Singer message (a JSON object)",
        ) from None
    except RecursionError:
        message = None
    if message is None or (too_deep([line]) is not None and nesting_depth(line) > 0):
        from dativo_bridge.codecs.decode import MAX_NESTING

        raise DecodeError(
            f"arrays and objects nested deeper than {MAX_NESTING} levels",
            line_number=number,
            expected=f"at most {MAX_NESTING} levels of nesting",
        )
    if not isinstance(message, dict) or "type" not in message:
        raise DecodeError(
            "not a Singer message", line_number=number, expected="a JSON object with a 'type'"
        )
    if message["type"] != "RECORD":
        try:
            json.loads(line, object_pairs_hook=_unique_keys)
        except _Duplicate as dup:
            raise DecodeError(
                f"key '{dup.key}' given twice in a {message['type']} message",
                line_number=number,
                expected="each key once in an object",
            ) from None
    return message
