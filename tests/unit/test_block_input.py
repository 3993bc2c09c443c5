"""SingerInput reading its input in blocks (runs of RECORD lines found in Rust) against
reading it line by line: the same batches, states, counts and errors, wherever the
blocks happen to be cut."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dativo_bridge.codecs import messages
from dativo_bridge.codecs.decode import loads, split_segments
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.errors import DecodeError

pytestmark = pytest.mark.skipif(
    messages._record_run is None, reason="dativo_accel (record_run) is not installed"
)

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "n": {"type": ["number", "null"]},
    },
}


class Recorder:
    """Stands in for StreamWriters: keeps every call in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def schema(self, stream: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("schema", stream))

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        self.calls.append(("write", stream, batch.to_pylist()))

    def state(self, value: Any) -> None:
        self.calls.append(("state", value))

    def discard_after_commit(self, manifest: Any) -> None:
        self.calls.append(("discard", manifest))


class Chunked(io.RawIOBase):
    """A binary stream giving its data in chunks of the given sizes (as a pipe does)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = iter(sizes)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(next(self._sizes, 1 << 30), len(buffer))
        piece = self._data[self._pos : self._pos + want]
        buffer[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


def record(stream: str, i: int, order: str = "type-first") -> bytes:
    body = {"id": i, "name": f"n{i}\u00e9", "n": i / 3}
    if order == "type-first":
        return json.dumps({"type": "RECORD", "stream": stream, "record": body}).encode()
    if order == "spaced":
        return (
            b'{ "type" :\t"RECORD" , "stream" : "'
            + stream.encode()
            + (b'", "record": ' + json.dumps(body).encode() + b"}")
        )
    return json.dumps({"stream": stream, "type": "RECORD", "record": body}).encode()


def schema(stream: str) -> bytes:
    return json.dumps(
        {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]}
    ).encode()


@st.composite
def message_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    lines = [schema("a"), schema("b")]
    for i in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["a", "a", "a", "b", "other", "state", "blank", "cr"]))
        if kind in ("a", "b"):
            lines.append(record(kind, i))
        elif kind == "other":
            lines.append(record("a", i, draw(st.sampled_from(["spaced", "stream-first"]))))
        elif kind == "state":
            lines.append(json.dumps({"type": "STATE", "value": {"i": i}}).encode())
        elif kind == "blank":
            lines.append(b"")
        else:
            lines.append(record("b", i) + b"\r")
    data = b"\n".join(lines)
    if draw(st.booleans()):
        data += b"\n"  # else the last line has no newline
    sizes = draw(st.lists(st.integers(1, 700), max_size=40))
    return data, sizes


def by_lines(data: bytes, **options: Any) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    recorder = Recorder()
    target = SingerInput(recorder, **options)  # type: ignore[arg-type]
    target.process(io.StringIO(data.decode()))  # a text stream: read line by line
    return recorder.calls, target.counts


def by_blocks(data: bytes, sizes: list[int], **options: Any) -> tuple[list[Any], dict[str, int]]:
    recorder = Recorder()
    target = SingerInput(recorder, **options)  # type: ignore[arg-type]
    target.process(io.BufferedReader(Chunked(data, sizes), buffer_size=64))
    return recorder.calls, target.counts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_streams(), st.integers(1, 7), st.integers(50, 2000))
def test_blocks_give_what_lines_give(
    stream: tuple[bytes, list[int]], batch_rows: int, batch_bytes: int
) -> None:
    data, sizes = stream
    options = {"batch_rows": batch_rows, "batch_bytes": batch_bytes}
    expected = by_lines(data, **options)
    assert by_blocks(data, sizes, **options) == expected
    rows = sum(len(call[2]) for call in expected[0] if call[0] == "write")
    assert rows == expected[1].get("RECORD", 0)


def test_runs_are_taken_whole_and_batches_cut_at_batch_rows() -> None:
    lines = [schema("a"), *(record("a", i) for i in range(10)), b'{"type":"STATE","value":{"n":1}}']
    data = b"\n".join(lines) + b"\n"
    calls, counts = by_blocks(data, [len(data)], batch_rows=4)
    assert [c[0] for c in calls] == ["schema", "write", "write", "write", "state"]
    assert [len(c[2]) for c in calls if c[0] == "write"] == [4, 4, 2]
    assert counts == {"SCHEMA": 1, "RECORD": 10, "STATE": 1}


def errors(data: bytes, sizes: list[int], **options: Any) -> tuple[str, str]:
    with pytest.raises(DecodeError) as by_line:
        by_lines(data, **options)
    with pytest.raises(DecodeError) as by_block:
        by_blocks(data, sizes, **options)
    return str(by_line.value), str(by_block.value)


@pytest.mark.parametrize("sizes", [[10**6], [7] * 400, [1] * 2000])
def test_errors_name_the_same_line(sizes: list[int]) -> None:
    good = [schema("a"), *(record("a", i) for i in range(5))]
    bad_value = record("a", 5).replace(b'"id": 5', b'"id": "x"')
    cases = [
        [*good, bad_value, record("a", 6)],  # a value that does not fit: line 7
        [*good, record("zz", 1)],  # RECORD before its SCHEMA
        [*good, b'{"type":"RECORD","stream":"a","record":{"id":1}'],  # cut short
        [*good, b"not json"],
    ]
    for lines in cases:
        data = b"\n".join(lines) + b"\n"
        line_error, block_error = errors(data, sizes, batch_rows=3)
        assert line_error == block_error
        assert line_error.startswith("line ")


@pytest.mark.parametrize("sizes", [[10**6], [5] * 1000])
def test_line_length_limit_is_the_same(sizes: list[int]) -> None:
    lines = [schema("a"), record("a", 1), record("a", 2)[:-1] + b', "pad": "' + b"x" * 300 + b'"}']
    for final_newline in (True, False):
        data = b"\n".join(lines) + (b"\n" if final_newline else b"")
        for limit in (len(lines[2]) - 1, len(lines[2]), len(lines[2]) + 1):
            options = {"max_line_bytes": limit}
            try:
                expected: Any = by_lines(data, **options)
            except DecodeError as exc:
                expected = str(exc)
            try:
                got: Any = by_blocks(data, sizes, **options)
            except DecodeError as exc:
                got = str(exc)
            assert got == expected, (final_newline, limit)


def test_split_segments_matches_the_rust_split() -> None:
    data = b"a\nbb\n\nc"
    lines, numbers = split_segments(
        [(data, 0, len(data)), (b"x\n", 0, 2), (data, 2, 5)], [1, 9, 20]
    )
    assert lines == [b"a\n", b"bb\n", b"\n", b"c", b"x\n", b"bb\n"]
    assert numbers == [1, 2, 3, 4, 9, 20]


def test_record_run_is_the_python_head_pattern() -> None:
    run = messages._record_run
    assert run is not None
    head = messages._RECORD_HEAD
    samples = [
        b'{"type":"RECORD","stream":"s","record":{}}\n',
        b'{ "type" : "RECORD" ,\x0b"stream"\x0c:\r"s" }\n',
        b'{"type":"RECORD","stream":"s\\"t","record":{}}\n',
        b'{"stream":"s","type":"RECORD"}\n',
        b' {"type":"RECORD","stream":"s"}\n',
        b'{"type":"RECORD","stream":"\xff\xfe"}\n',
        b'{"type":"RECORD"}\n',
    ]
    for line in samples:
        match = head.match(line)
        assert run(line, 0, None, 10, 1 << 20)[0] == (match.group(1) if match else None), line


def test_loads_keeps_integers_beyond_64_bits() -> None:
    for text in ["-9223372036854775809", "18446744073709551616", "123456789012345678901234"]:
        value = loads(f'{{"v":[{text}, 1.5]}}'.encode())
        assert value == {"v": [int(text), 1.5]} and isinstance(value["v"][0], int)
    assert loads(b'{"v":"1234567890123456789012"}') == {"v": "1234567890123456789012"}
    assert loads(b'{"v":NaN}')["v"] != loads(b'{"v":NaN}')["v"]


class FailingRecorder(Recorder):
    """Fails on its ``fail_at``-th write, as a writer that cannot write."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        if sum(1 for c in self.calls if c[0] == "write") + 1 == self.fail_at:
            raise OSError("disk full")
        super().write(stream, batch)


def _calls_until_error(recorder: Recorder, source: Any, **options: Any) -> tuple[list, str]:
    target = SingerInput(recorder, **options)  # type: ignore[arg-type]
    try:
        target.process(source)
    except (OSError, DecodeError) as exc:
        return recorder.calls, f"{type(exc).__name__}: {exc}"
    return recorder.calls, ""


@pytest.mark.parametrize("fail_at", [1, 2, 3, 99])
@pytest.mark.parametrize("bad_line", [False, True])
def test_writer_and_decode_failures_stop_where_the_line_path_stops(
    fail_at: int, bad_line: bool
) -> None:
    """Writes run on a writer thread while the next batch is decoded; a writer's failure
    or a later bad line must end the run after exactly the calls the line path makes."""
    lines = [schema("a")]
    for i in range(12):
        lines.append(record("a", i))
        if i % 4 == 3:
            lines.append(json.dumps({"type": "STATE", "value": {"i": i}}).encode())
    if bad_line:
        lines.insert(11, record("a", 99).replace(b'"id": 99', b'"id": "x"'))
    data = b"\n".join(lines) + b"\n"
    expected = _calls_until_error(
        FailingRecorder(fail_at), io.StringIO(data.decode()), batch_rows=2
    )
    assert expected[1] or (fail_at == 99 and not bad_line)
    for sizes in ([len(data)], [50] * 100):
        got = _calls_until_error(
            FailingRecorder(fail_at),
            io.BufferedReader(Chunked(data, sizes), buffer_size=64),
            batch_rows=2,
        )
        assert got == expected
