"""What travels from a source to a sink in a run: three typed events, the sink protocol,
and the progress ticker every path shares.

Every run is "events -> sink": an in-process reader's events go to the writers of the run
(:class:`~dativo_bridge.delivery.StreamWriters`) or to a foreign target's standard input
(:class:`~dativo_bridge.codecs.output.SingerOutput`); a foreign tap's Singer messages are
decoded into the same calls on the same sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from dativo_bridge.interfaces import StreamInfo

if TYPE_CHECKING:
    from dativo_bridge.batch_files import BatchFile
    from dativo_bridge.delivery import StreamStats


@dataclass(frozen=True)
class SchemaEvent:
    """A stream starts (or changes its schema): batches of ``stream.schema`` follow.

    ``expected_rows`` is the reader's estimate of the stream's rows when it starts (None:
    unknown, or a schema change)."""

    stream: StreamInfo
    expected_rows: int | None = None


@dataclass(frozen=True)
class BatchEvent:
    """Rows of a stream whose schema came before."""

    stream: str
    batch: pa.RecordBatch


@dataclass(frozen=True)
class StateEvent:
    """A STATE covering every row of every earlier event."""

    value: Any


Event = SchemaEvent | BatchEvent | StateEvent


class Sink(Protocol):
    """Where a run's events go."""

    def schema(self, stream: StreamInfo) -> None:
        """A stream's schema (before its first batch, and again when it changes)."""

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        """Rows of ``stream``."""

    def state(self, value: Any) -> None:
        """A STATE covering everything written before it."""


class BatchFileSink(Sink, Protocol):
    """A sink fed by Singer input, which may carry BATCH messages: it also takes the BATCH
    files whose rows it was given, to delete them once those rows are committed."""

    def discard_after_commit(self, files: Sequence[BatchFile]) -> None:
        """The files of rows written before this call: delete them after the next commit."""


def deliver(event: Event, sink: Sink) -> None:
    """Hand one event to ``sink``."""
    if isinstance(event, BatchEvent):
        sink.write(event.stream, event.batch)
    elif isinstance(event, StateEvent):
        sink.state(event.value)
    else:
        sink.schema(event.stream)


ProgressCallback = Callable[[Mapping[str, "StreamStats"], float], None]


class Progress:
    """Calls ``callback(stats, elapsed)`` at most every ``interval`` seconds, the first time
    ``interval`` seconds after ``started`` (and once more with :meth:`final`); no-op
    without a callback or with an interval of 0 or less."""

    def __init__(
        self, callback: ProgressCallback | None, started: float, interval: float = 0.5
    ) -> None:
        self.callback = callback if interval > 0 else None
        self.started = started
        self.interval = interval
        self._last = started

    def tick(self, stats: Mapping[str, StreamStats]) -> None:
        """Report ``stats`` if the last report is older than the interval."""
        if self.callback is None:
            return
        now = time.monotonic()
        if now - self._last > self.interval:
            self._last = now
            self.callback(stats, now - self.started)

    def final(self, stats: Mapping[str, StreamStats], elapsed: float) -> None:
        """The last report of a run."""
        if self.callback is not None:
            self.callback(stats, elapsed)
