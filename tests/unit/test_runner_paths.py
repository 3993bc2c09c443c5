"""The runner's paths with fake readers and sinks: the events a reader gives, the Singer
messages a foreign target would read, and what the writers of an in-process run see."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from dativo_bridge import ArrowReader, ArrowWriter, CommitResult, StreamInfo, run
from dativo_bridge.codecs.output import SingerOutput
from dativo_bridge.events import BatchEvent, SchemaEvent, StateEvent, deliver
from dativo_bridge.sources import reader_events

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])


class Counter(ArrowReader):
    name = "tap-counter"
    is_sorted = True

    def discover(self) -> Sequence[StreamInfo]:
        return [
            StreamInfo("a", SCHEMA, ("id",)),
            StreamInfo("b", SCHEMA, ("id",), "id", "INCREMENTAL"),
        ]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        start = int(bookmark or 1)
        for lo in range(start, 7, 3):
            yield pa.record_batch([pa.array(range(lo, min(lo + 3, 7)), pa.int64())], schema=SCHEMA)


def test_reader_events_in_order_with_states_and_run_marker() -> None:
    events = list(reader_events(Counter(), None, None, None))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "SchemaEvent",
        "BatchEvent",
        "BatchEvent",
        "StateEvent",  # a finished: the run goes on, so the marker says so
        "SchemaEvent",
        "BatchEvent",
        "StateEvent",
        "BatchEvent",
        "StateEvent",
        "StateEvent",  # b finished: the run's last STATE, no marker
    ]
    states = [e.value for e in events if isinstance(e, StateEvent)]
    assert states[0]["dativo_run"] == {"streams": ["a", "b"], "completed": ["a"]}
    assert states[1]["bookmarks"]["b"]["replication_key_value"] == 3
    assert states[-1] == {"bookmarks": {"b": {"replication_key": "id", "replication_key_value": 6}}}


def test_selection_and_resumption_of_an_interrupted_run() -> None:
    start = {
        "bookmarks": {"b": {"replication_key": "id", "replication_key_value": 4}},
        "dativo_run": {"streams": ["a", "b"], "completed": ["a"]},
    }
    events = list(reader_events(Counter(), None, None, start))
    assert [e.stream.name for e in events if isinstance(e, SchemaEvent)] == ["b"]
    ids = [i for e in events if isinstance(e, BatchEvent) for i in e.batch.column(0).to_pylist()]
    assert ids == [4, 5, 6]
    only_a = list(reader_events(Counter(), ["a.*"], None, None))
    assert [e.stream.name for e in only_a if isinstance(e, SchemaEvent)] == ["a"]


def test_singer_output_sink_writes_what_a_target_reads() -> None:
    out = io.BytesIO()
    sink = SingerOutput(out)
    for event in reader_events(Counter(), ["b.*"], None, None):
        deliver(event, sink)
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert messages[0]["type"] == "SCHEMA" and messages[0]["bookmark_properties"] == ["id"]
    assert [m["record"]["id"] for m in messages if m["type"] == "RECORD"] == [1, 2, 3, 4, 5, 6]
    assert messages[-1]["type"] == "STATE"


class Memory(ArrowWriter):
    """Keeps what was committed, and the order of calls, in class attributes."""

    calls: list[str] = []
    committed: dict[str, list[int]] = {}

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.pending: list[int] = []
        Memory.calls.append(f"open {stream.name}")

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.extend(batch.column(0).to_pylist())

    def commit(self) -> CommitResult:
        assert self.stream is not None
        Memory.committed.setdefault(self.stream.name, []).extend(self.pending)
        rows, self.pending = len(self.pending), []
        Memory.calls.append(f"commit {self.stream.name} {rows}")
        return CommitResult(rows=rows)


def test_in_process_run_commits_before_each_state() -> None:
    Memory.calls, Memory.committed = [], {}
    seen: list[Any] = []
    result = run(Counter, Memory, checkpoint_rows=1, progress=lambda s, t: seen.append(t))
    assert Memory.committed == {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3, 4, 5, 6]}
    assert result.rows == 12
    assert result.state["bookmarks"]["b"]["replication_key_value"] == 6
    assert Memory.calls[0] == "open a"
    assert seen, "progress is reported at least at the end"


def test_log_based_is_refused_at_start_not_read_in_full() -> None:
    import dataclasses

    import pytest

    from dativo_bridge.errors import ConfigError
    from dativo_bridge.reading import checked_batches

    Memory.calls, Memory.committed = [], {}
    metadata = {"b": {"replication-method": "LOG_BASED"}}
    with pytest.raises(ConfigError, match="stream 'b': replication-method LOG_BASED"):
        run(Counter, Memory, metadata=metadata)
    assert Memory.calls == [], "nothing is read or written before the refusal"
    stream = dataclasses.replace(Counter().discover()[1], replication_method="LOG_BASED")
    with pytest.raises(ConfigError, match="LOG_BASED"):  # the Singer tap's paths too
        next(checked_batches(Counter(), stream, None))
