"""The writer side of every run: open writers per stream, commit on a rule, release STATE.

Used by the Singer target (decoded lines), the in-process runner (batches from a reader)
and the subprocess adapter (a foreign tap). STATE is the promise: a state value is passed
to ``on_state`` only after every writer has committed every row received before it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.batch_files import BatchFile, cleanup_mode, delete_batch_files
from dativo_bridge.conform import Mismatch, NullValue, conform
from dativo_bridge.errors import WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.reading import truncate_rows
from dativo_bridge.schema import relax_nullability
from dativo_bridge.settings import CHECKPOINT_ROWS, CHECKPOINT_SECONDS

logger = logging.getLogger("dativo.delivery")


@dataclass
class StreamStats:
    """Counters for one stream of a run.

    ``bytes`` is the Arrow memory of the batches read; ``committed_bytes`` what the writers
    reported committing (``CommitResult.bytes``). The ``*_seconds`` are the time spent in
    each stage: waiting for the reader's next batch, handing batches to the sink (writing,
    or encoding for a Singer target), and committing.
    """

    rows: int = 0
    bytes: int = 0
    batches: int = 0
    committed_rows: int = 0
    files: list[str] = field(default_factory=list)
    #: The reader's estimate of the stream's rows (ArrowReader.estimated_rows), if any.
    expected_rows: int | None = None
    #: time.monotonic() when the stream started, and when it ended (None: still running).
    started: float | None = None
    finished: float | None = None
    commits: int = 0
    committed_bytes: int = 0
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    commit_seconds: float = 0.0


class StreamWriters:
    """The open writers of one run and the rule for when they commit.

    Args:
        make_writer: Returns a fresh, unopened writer (called once per stream).
        config: Writer settings passed to ``ArrowWriter.open``.
        on_state: Called with each STATE value once it is durable.
        checkpoint_rows: Commit once this many rows are uncommitted and a STATE is pending.
        checkpoint_seconds: ... or once this long has passed since the last commit.
    """

    def __init__(
        self,
        make_writer: Callable[[], ArrowWriter],
        config: Mapping[str, Any],
        on_state: Callable[[Any], None],
        *,
        checkpoint_rows: int = CHECKPOINT_ROWS,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        state_id: str | None = None,
    ) -> None:
        self._make_writer = make_writer
        self.state_id = state_id
        self._config = config
        self._on_state = on_state
        self.checkpoint_rows = checkpoint_rows
        self.checkpoint_seconds = checkpoint_seconds
        self.writers: dict[str, ArrowWriter] = {}
        self.streams: dict[str, StreamInfo] = {}
        self.stats: dict[str, StreamStats] = {}
        self._pending_state: Any = None
        self._has_pending_state = False
        self._uncommitted_rows = 0
        self._last_commit = time.monotonic()
        self.last_state: Any = None
        self._consumed_files: list[BatchFile] = []
        #: Operations the closed writers retried (their ``retries`` counters).
        self.retries = 0

    def schema(self, stream: StreamInfo) -> None:
        """Declare (or re-declare) a stream's schema.

        Writers see the same schema whichever way the rows arrive (decoded Singer lines or
        batches in process): key properties required, everything else nullable.
        """
        keys = [k for k in stream.key_properties if k in stream.schema.names]
        stream = dataclasses.replace(stream, schema=relax_nullability(stream.schema, keys))
        known = self.streams.get(stream.name)
        self.streams[stream.name] = stream
        stats = self.stats.setdefault(stream.name, StreamStats())
        if stats.started is None:
            stats.started = time.monotonic()
        if known is None:
            return
        writer = self.writers.get(stream.name)
        if writer is not None and known.schema != stream.schema:
            writer.update_schema(stream.schema)

    def _writer(self, name: str) -> ArrowWriter:
        writer = self.writers.get(name)
        if writer is None:
            writer = self._make_writer()
            writer.state_id = self.state_id
            writer.open(self._config, self.streams[name])
            self.writers[name] = writer
        return writer

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        """Hand one batch to the stream's writer."""
        if batch.num_rows == 0:
            return
        info = self.streams.get(stream)
        if info is None:
            raise WriteError(f"stream '{stream}': a batch arrived before its schema")
        batch = self._conform(info, batch)
        self._writer(stream).write(batch)
        stats = self.stats[stream]
        stats.rows += batch.num_rows
        stats.bytes += batch.nbytes
        stats.batches += 1
        self._uncommitted_rows += batch.num_rows

    @staticmethod
    def _conform(info: StreamInfo, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The one conformance of a write: the writer gets a batch of exactly the
        stream's schema (so its own :meth:`ArrowWriter.conformed` has nothing to do)."""
        if batch.schema == info.schema and not info.key_properties:
            return batch
        keys = info.key_properties
        marks = truncate_rows(info, batch)  # a LOG_BASED TRUNCATE has null keys
        try:
            if marks is not None:
                conform(batch.filter(pc.invert(marks)), info.schema, not_null=keys)
                keys = ()
            return conform(batch, info.schema, not_null=keys)
        except NullValue as exc:
            raise WriteError(
                f"stream '{info.name}': row {exc.row} of a batch has no value for "
                f"key property '{exc.name}'"
            ) from None
        except Mismatch as exc:
            raise WriteError(
                f"stream '{info.name}': batch does not match its schema: {exc}"
            ) from exc

    def state(self, value: Any) -> None:
        """A STATE covering every row written so far; released after the next commit."""
        self._pending_state = value
        self._has_pending_state = True
        if any(w.publishes_at_end for w in self.writers.values()):
            return  # one commit at the end of the run (overwrite): STATE waits for it
        due = (
            self._uncommitted_rows >= self.checkpoint_rows
            or time.monotonic() - self._last_commit >= self.checkpoint_seconds
        )
        if due or self._uncommitted_rows == 0:
            self.commit()

    def commit(self) -> CommitResult:
        """Commit every writer, then release the pending STATE (if any)."""
        total = CommitResult()
        for name, writer in self.writers.items():
            if self._has_pending_state:
                writer.stage_state(self._pending_state)
            began = time.monotonic()
            result = writer.commit()
            stats = self.stats[name]
            stats.commit_seconds += time.monotonic() - began
            stats.commits += 1
            stats.committed_bytes += result.bytes
            stats.committed_rows += result.rows
            stats.files.extend(result.paths)
            total.merge(result)
        self._uncommitted_rows = 0
        self._last_commit = time.monotonic()
        if self._consumed_files:
            files, self._consumed_files = self._consumed_files, []
            delete_batch_files(files)
        if self._has_pending_state:
            state = self._pending_state
            self._has_pending_state = False
            self._pending_state = None
            self.last_state = state
            self._on_state(state)
        return total

    def discard_after_commit(self, files: Sequence[BatchFile]) -> None:
        """BATCH files whose rows were written: the next commit deletes those a Dativo tap
        provably wrote (``BatchFile.owned``), unless the setting ``batch_cleanup`` is off."""
        if cleanup_mode(self._config) == "off":
            return
        self._consumed_files.extend(files)

    def finish(self) -> CommitResult:
        """End of input: commit everything and release the last STATE, then close.

        With ``load_method: overwrite`` a stream that declared its schema but sent no rows
        is committed too: the run read it empty, so its destination is replaced by nothing.
        """
        try:
            if self._config.get("load_method") == "overwrite":
                for name in self.streams:
                    self._writer(name)
            return self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Close every writer (uncommitted data is discarded by the writers)."""
        writers, self.writers = self.writers, {}
        for writer in writers.values():
            count = getattr(writer, "retries", 0)
            if isinstance(count, int) and not isinstance(count, bool):
                self.retries += count
            try:
                writer.close()
            except Exception:
                logger.exception("closing writer failed")

    def stream_names(self) -> Sequence[str]:
        """Streams seen so far, in order of first SCHEMA."""
        return list(self.streams)
