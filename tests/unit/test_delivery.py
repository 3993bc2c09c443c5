"""STATE is released only after every writer committed the rows before it."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.delivery import StreamWriters
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo


class RecordingWriter(ArrowWriter):
    """Appends every event to a shared log, so the order of commits and states shows."""

    log: list[tuple[str, Any]] = []

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.pending = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending += batch.num_rows

    def commit(self) -> CommitResult:
        assert self.stream is not None
        RecordingWriter.log.append(("commit", (self.stream.name, self.pending)))
        rows, self.pending = self.pending, 0
        return CommitResult(rows=rows)


def _lines(*messages: str) -> io.StringIO:
    return io.StringIO("\n".join(messages) + "\n")


SCHEMA_A = '{"type":"SCHEMA","stream":"a","schema":{"properties":{"id":{"type":"integer"}}},"key_properties":["id"]}'
SCHEMA_B = '{"type":"SCHEMA","stream":"b","schema":{"properties":{"id":{"type":"integer"}}},"key_properties":["id"]}'


def _record(stream: str, i: int) -> str:
    return f'{{"type":"RECORD","stream":"{stream}","record":{{"id":{i}}}}}'


def _run(checkpoint_rows: int, text: io.StringIO) -> list[tuple[str, Any]]:
    RecordingWriter.log = []
    writers = StreamWriters(
        RecordingWriter,
        {},
        lambda s: RecordingWriter.log.append(("state", s)),
        checkpoint_rows=checkpoint_rows,
        checkpoint_seconds=3600,
    )
    SingerInput(writers, batch_rows=2).process(text)
    writers.finish()
    return RecordingWriter.log


def test_every_state_follows_the_commit_of_rows_before_it() -> None:
    log = _run(
        1,
        _lines(
            SCHEMA_A,
            SCHEMA_B,
            _record("a", 1),
            _record("b", 1),
            _record("a", 2),
            '{"type":"STATE","value":{"n":1}}',
            _record("a", 3),
            '{"type":"STATE","value":{"n":2}}',
            '{"type":"STATE","value":{"n":3}}',
        ),
    )
    assert log == [
        ("commit", ("a", 2)),
        ("commit", ("b", 1)),
        ("state", {"n": 1}),
        ("commit", ("a", 1)),
        ("commit", ("b", 0)),
        ("state", {"n": 2}),
        ("commit", ("a", 0)),
        ("commit", ("b", 0)),
        ("state", {"n": 3}),
        ("commit", ("a", 0)),
        ("commit", ("b", 0)),
    ]


def test_states_wait_for_the_checkpoint_and_the_latest_wins() -> None:
    log = _run(
        100,
        _lines(
            SCHEMA_A,
            _record("a", 1),
            '{"type":"STATE","value":{"n":1}}',
            _record("a", 2),
            '{"type":"STATE","value":{"n":2}}',
        ),
    )
    # No checkpoint was due: one commit at the end, then only the latest state.
    assert log == [("commit", ("a", 2)), ("state", {"n": 2})]
