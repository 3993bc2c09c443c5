"""The runner: a source and a destination in one process.

Every run is "events -> sink" (dativo_bridge.events). The source is an in-process reader
(its events come from dativo_bridge.sources on a reader thread, through a bounded queue)
or a foreign Singer tap (its messages decoded by the codecs); the sink is the run's
writers (StreamWriters) or a foreign target's standard input (SingerOutput). STATE is
recorded in the state store only once the destination has made every row before it
durable. A reader is opened, read and closed on one thread (the reader thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dativo_bridge.codecs.decode import loads
from dativo_bridge.codecs.messages import SingerInput, iter_lines
from dativo_bridge.codecs.output import SingerOutput
from dativo_bridge.delivery import StreamStats, StreamWriters
from dativo_bridge.errors import ConfigError, DativoError, PluginFailedError
from dativo_bridge.events import (
    BatchEvent,
    Progress,
    ProgressCallback,
    SchemaEvent,
    Sink,
    deliver,
)
from dativo_bridge.foreign import (
    ForeignTap,
    ForeignTarget,
    RunningPlugin,
    discover_catalog,
    private_dir,
    select_in_catalog,
    write_private_json,
)
from dativo_bridge.interfaces import ArrowReader, ArrowWriter, StreamInfo
from dativo_bridge.redact import Redactor
from dativo_bridge.selection import select_columns
from dativo_bridge.settings import check_target_settings, target_schema, validated
from dativo_bridge.sources import bookmark_state, reader_events, starting_bookmark
from dativo_bridge.state import StateStore

if TYPE_CHECKING:  # singer-sdk (which dativo_bridge.maps uses) only for runs with maps
    from dativo_bridge.maps import StreamMaps
    from dativo_bridge.metrics import RunMetrics

logger = logging.getLogger("dativo.run")

Source = ArrowReader | type[ArrowReader] | ForeignTap
Destination = ArrowWriter | type[ArrowWriter] | Callable[[], ArrowWriter] | ForeignTarget


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        state_id: The state id used (None if state was not stored).
        state: The last durable STATE value.
        streams: Per-stream counters.
        elapsed: Wall time in seconds.
        replication_lag: WAL bytes retained for a log-based reader's slot at the end.
    """

    state_id: str | None
    state: Any
    streams: dict[str, StreamStats] = field(default_factory=dict)
    elapsed: float = 0.0
    #: WAL bytes a log-based reader's replication slot retains after the run's last
    #: acknowledged commit (None: no log-based stream, or nothing acknowledged).
    replication_lag: int | None = None
    #: Operations the reader and writers retried (their ``retries`` counters, if any).
    retries: int = 0

    @property
    def rows(self) -> int:
        """Rows delivered over all streams."""
        return sum(s.rows for s in self.streams.values())

    @property
    def files(self) -> list[str]:
        """Files committed by the destination (in-process writers only)."""
        return [f for s in self.streams.values() for f in s.files]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "state_id": self.state_id,
            "state": self.state,
            "elapsed_seconds": round(self.elapsed, 3),
            "rows": self.rows,
            "replication_lag_bytes": self.replication_lag,
            "retries": self.retries,
            "streams": {
                name: {
                    "rows": s.rows,
                    "bytes": s.bytes,
                    "batches": s.batches,
                    "committed_rows": s.committed_rows,
                    "committed_bytes": s.committed_bytes,
                    "commits": s.commits,
                    "expected_rows": s.expected_rows,
                    "stage_seconds": {
                        "read": round(s.read_seconds, 6),
                        "write": round(s.write_seconds, 6),
                        "commit": round(s.commit_seconds, 6),
                    },
                    "files": s.files,
                    "file_sizes": {f: _file_size(f) for f in s.files},
                }
                for name, s in self.streams.items()
            },
        }


def _file_size(file: str) -> int | None:
    """Bytes of a committed local file (a path or a ``file:`` URI); None for an object in
    a store (``s3://``) or a file that is gone."""
    if file.startswith("file://"):
        file = file[len("file://") :]
    elif file.startswith("file:"):
        file = file[len("file:") :]
    elif "://" in file:
        return None
    try:
        return os.stat(file).st_size
    except OSError:
        return None


class RunInterrupted(DativoError):
    """A run stopped by a signal (SIGINT, SIGTERM) before its end.

    Attributes:
        signum: The signal number.
        result: What the run made durable before it stopped.
    """

    def __init__(self, signum: int, result: RunResult) -> None:
        self.signum = signum
        self.result = result
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Cancellation:
    """A request to stop a run, safe to make from a signal handler: the run checks it
    between batches, and foreign plugin processes are asked to terminate at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._plugins: list[RunningPlugin] = []

    def request(self, signum: int = signal.SIGINT) -> None:
        """Stop the run: set the flag and terminate the running plugin processes."""
        if self.signum is None:
            self.signum = signum
        self.event.set()
        for plugin in list(self._plugins):
            plugin.terminate()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self.event.is_set()

    def adopt(self, plugin: RunningPlugin) -> RunningPlugin:
        """Terminate ``plugin`` when the run is cancelled (at once if it already is)."""
        self._plugins.append(plugin)
        if self.is_set():
            plugin.terminate()
        return plugin


def _blame(exc: BaseException, side: str) -> None:
    """Record on ``exc`` whether the source or the destination raised it (the first
    side to touch it wins), for the error message that names the plugin."""
    if getattr(exc, "dativo_side", None) is None:
        with contextlib.suppress(AttributeError, TypeError):
            exc.dativo_side = side  # type: ignore[attr-defined]


@dataclass
class RunContext:
    """What every path of one run shares.

    Attributes:
        source_config: Settings of an in-process reader.
        select: Meltano-style selection patterns.
        metadata: Catalog metadata overrides per stream pattern.
        start_state: The STATE the run starts from (None: read everything).
        redactor: Masks secrets in what foreign plugins print.
        progress: Reports per-stream counters now and then.
        result: What the run did so far.
        queue_size: Batches in flight between the reader thread and the sink.
        cancel: Set to stop the run between batches.
        maps: The tap's stream maps and flattening (None: the streams as they are).
    """

    source_config: Mapping[str, Any]
    select: Sequence[str] | None
    metadata: Mapping[str, Mapping[str, Any]] | None
    start_state: Mapping[str, Any] | None
    redactor: Redactor
    progress: Progress
    result: RunResult
    queue_size: int = 2
    cancel: Cancellation = field(default_factory=Cancellation)
    maps: StreamMaps | None = None
    #: The opened in-process reader's ``acknowledge(state)`` (log-based readers confirm
    #: their replication slot up to what the destination made durable), if it has one.
    acknowledge: Callable[[Any], int | None] | None = None
    #: Set once the in-process reader closed: a log-based reader holds its replication
    #: slot while it reads, and the server lets one backend use a slot at a time.
    reader_closed: bool = False
    #: The run's metrics (None: off).
    metrics: RunMetrics | None = None
    #: The in-process reader once opened (its ``retries`` counter goes into the result).
    reader: ArrowReader | None = None
    #: The pipeline's state id (given to the reader, as to the writers).
    state_id: str | None = None

    def tick(self, streams: Mapping[str, StreamStats]) -> None:
        """Report progress now and then (and rewrite the metrics file when it is due)."""
        self.progress.tick(streams)
        if self.metrics is not None:
            self.metrics.update(streams, time.monotonic() - self.progress.started)

    def check_cancelled(self) -> None:
        """Raise RunInterrupted if the run was asked to stop."""
        if self.cancel.is_set():
            raise RunInterrupted(self.cancel.signum or signal.SIGINT, self.result)

    def events(self, reader: ArrowReader) -> Iterator[Any]:
        """The events of an opened in-process reader (mapped by the tap's stream maps)."""
        events = reader_events(reader, self.select, self.metadata, self.start_state)
        if self.maps is None:
            return events
        from dativo_bridge.maps import map_events

        return map_events(events, self.maps)


_END = object()


class _Pipe:
    """A bounded queue with error propagation and cancellation between two threads."""

    def __init__(self, size: int, stop: Cancellation | None = None) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.cancelled = threading.Event()
        self.stop = stop or Cancellation()

    def put(self, item: Any) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def items(self) -> Iterator[Any]:
        """The items put, until the end; stops (returns) once the run is cancelled."""
        while True:
            if self.stop.is_set():
                return
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _Cancelled(Exception):
    pass


def _timed(events: Iterator[Any]) -> Iterator[tuple[Any, float]]:
    """Each event with the seconds the source took to produce it (the read stage)."""
    while True:
        began = time.monotonic()
        try:
            event = next(events)
        except StopIteration:
            return
        yield event, time.monotonic() - began


def _deliver_timed(
    event: Any, sink: Sink, streams: Mapping[str, StreamStats], read_seconds: float
) -> None:
    """Hand ``event`` to ``sink`` and account the stages in ``streams``: the read time of a
    batch and its write time; a stream's start (its size estimate), and the end of the
    streams before it (a reader's streams come one after the other)."""
    began = time.monotonic()
    deliver(event, sink)
    now = time.monotonic()
    if isinstance(event, BatchEvent):
        stats = streams.get(event.stream)
        if stats is not None:
            stats.read_seconds += read_seconds
            stats.write_seconds += now - began
            stats.finished = None  # streams that interleave (stream maps) are not ended
    elif isinstance(event, SchemaEvent):
        name = event.stream.name
        stats = streams.get(name)
        if stats is not None and stats.expected_rows is None:
            stats.expected_rows = event.expected_rows
        for other, earlier in streams.items():
            if other != name and earlier.started is not None and earlier.finished is None:
                earlier.finished = now


def _finish_streams(streams: Mapping[str, StreamStats]) -> None:
    """Mark every stream still running as ended (the run is over)."""
    now = time.monotonic()
    for stats in streams.values():
        if stats.finished is None:
            stats.finished = now


def run(
    source: Source,
    destination: Destination,
    *,
    source_config: Mapping[str, Any] | None = None,
    destination_config: Mapping[str, Any] | None = None,
    state_store: StateStore | None = None,
    state_id: str | None = None,
    state: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    full_refresh: bool = False,
    progress: ProgressCallback | None = None,
    queue_size: int = 2,
    checkpoint_rows: int | None = None,
    checkpoint_seconds: float | None = None,
    redactor: Redactor | None = None,
    cancel: Cancellation | None = None,
    progress_interval: float = 0.5,
    metrics: RunMetrics | None = None,
) -> RunResult:
    """Move every selected stream of ``source`` into ``destination``.

    Args:
        source: An ArrowReader (class or instance) or a ForeignTap.
        destination: An ArrowWriter class/factory or a ForeignTarget.
        source_config: Settings for an in-process reader.
        destination_config: Settings for an in-process writer.
        state_store: Where durable STATE is kept between runs.
        state_id: Key in the state store (e.g. ``dev:tap-x-to-target-y``).
        state: Starting state (overrides the store).
        select: Meltano-style selection patterns.
        metadata: Catalog metadata overrides per stream pattern.
        full_refresh: Ignore stored state and read everything.
        progress: Called with per-stream stats about twice a second.
        queue_size: Batches in flight between reader and writer.
        checkpoint_rows: Commit after this many rows (with a STATE pending); None: the
            destination's ``checkpoint_rows`` setting (default 1,000,000).
        checkpoint_seconds: ... or this many seconds; None: its ``checkpoint_seconds``
            setting (default 300).
        redactor: Masks secrets in messages from foreign plugins.
        cancel: Request on it (e.g. from a signal handler) to stop the run: it stops
            between batches, terminates foreign plugins and discards what is not committed.
        progress_interval: Seconds between two calls of ``progress``.
        metrics: Where the run's metrics go (dativo_bridge.metrics; None: nowhere). They
            are updated as the run goes and finished however it ends.

    Returns:
        A RunResult with the final durable state and per-stream counts.

    Raises:
        RunInterrupted: ``cancel`` was requested; its result holds the durable state.
        DativoError: Configuration, decode, write and plugin failures.
    """
    started = time.monotonic()
    source_config = _validated_source(source, source_config)
    destination_config = settings = _validated_destination(destination, destination_config)
    maps = None
    if not isinstance(source, ForeignTap) and _uses_maps(source_config or {}):
        # The tap's stream maps and flattening, applied to the batches in process (a
        # foreign tap applies its own to what it prints).
        from dativo_bridge.maps import StreamMaps

        maps = StreamMaps(source_config or {})
    recovered = None
    if (
        not full_refresh
        and state is None
        and isinstance(destination, type)
        and issubclass(destination, ArrowWriter)
    ):
        recovered = destination.recover_state(dict(destination_config or {}), state_id)
    if full_refresh:
        start_state: Mapping[str, Any] | None = None
        if state_store is not None and state_id:
            state_store.clear(state_id)
        destination_config = _replacing(destination, destination_config)
    elif state is not None:
        start_state = state
    elif recovered is not None:
        # The destination committed this state with its data: it is exact, and wins.
        logger.info("resuming from the state committed in the destination")
        start_state = recovered
    elif state_store is not None and state_id:
        start_state = state_store.get(state_id)
    else:
        start_state = None
    if start_state and (destination_config or {}).get("load_method") == "overwrite":
        # An overwrite replaces the destination with what the run reads: all of it.
        logger.info("load_method overwrite: every stream is read from its start")
        start_state = None
    result = RunResult(state_id=state_id if state_store else None, state=start_state)
    ctx = RunContext(
        source_config=dict(source_config or {}),
        select=select,
        metadata=metadata,
        start_state=start_state,
        redactor=redactor or Redactor(),
        progress=Progress(progress, started, progress_interval),
        result=result,
        queue_size=queue_size,
        cancel=cancel or Cancellation(),
        maps=maps,
        metrics=metrics,
        state_id=state_id,
    )
    if metrics is not None:
        metrics.watch(lambda: result.streams)
    try:
        _run_paths(
            source,
            destination,
            ctx,
            state_store,
            state_id,
            settings,
            destination_config,
            checkpoint_rows,
            checkpoint_seconds,
        )
    except BaseException as exc:
        result.retries += _retries(ctx.reader)
        if metrics is not None:
            stopped = ctx.cancel.is_set() or isinstance(exc, RunInterrupted | KeyboardInterrupt)
            _finish_metrics(metrics, result, started, "interrupted" if stopped else "failed")
        raise
    result.retries += _retries(ctx.reader)
    result.elapsed = time.monotonic() - started
    _finish_streams(result.streams)
    ctx.progress.final(result.streams, result.elapsed)
    if metrics is not None:
        _finish_metrics(metrics, result, started, "success")
    return result


def _retries(plugin: Any) -> int:
    """A plugin's ``retries`` counter (operations it retried), 0 if it has none."""
    value = getattr(plugin, "retries", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _finish_metrics(metrics: RunMetrics, result: RunResult, started: float, status: str) -> None:
    """The run's last metrics (a failure to export them is logged, never raised)."""
    elapsed = time.monotonic() - started
    _finish_streams(result.streams)
    metrics.finish(
        result.streams,
        elapsed,
        status,
        replication_lag=result.replication_lag,
        retries=result.retries,
    )


def _run_paths(
    source: Source,
    destination: Destination,
    ctx: RunContext,
    state_store: StateStore | None,
    state_id: str | None,
    settings: Mapping[str, Any],
    destination_config: Mapping[str, Any] | None,
    checkpoint_rows: int | None,
    checkpoint_seconds: float | None,
) -> None:
    """The run itself, on the path its source and destination take."""
    result = ctx.result

    recover: Callable[[], Any] | None = None
    if (
        isinstance(destination, type)
        and issubclass(destination, ArrowWriter)
        and getattr(destination.recover_state, "__func__", None)
        is not getattr(ArrowWriter.recover_state, "__func__", None)
    ):
        writer_class = destination

        def recover() -> Any:
            return writer_class.recover_state(dict(destination_config or {}), state_id)

    def record_state(value: Any) -> None:
        result.state = value
        if state_store is not None and state_id and isinstance(value, dict):
            state_store.put(state_id, value)
        if ctx.acknowledge is not None and ctx.reader_closed and isinstance(value, dict):
            # The destination committed everything up to ``value``: a log-based reader
            # may now let its server recycle the WAL before it (after the read: while it
            # reads, the reader's own connection holds the slot). A destination that keeps
            # its own state (Iceberg: each stream's in its table) is asked for it, since
            # that is what the next run resumes from (a stream with no rows this run keeps
            # its older bookmark there).
            try:
                durable = recover() if recover is not None else value
                lag = ctx.acknowledge(durable) if isinstance(durable, dict) else None
            except Exception as exc:  # the data is safe; only the slot lags behind
                logger.warning("could not confirm the replication slot: %s", exc)
            else:
                if lag is not None:
                    result.replication_lag = lag

    if isinstance(destination, ForeignTarget):
        try:
            _run_to_foreign(source, destination, ctx, record_state)
        except BaseException as exc:
            # A plugin that failed because it was terminated is the interrupt, not an error.
            ctx.check_cancelled()
            _blame(exc, "destination")
            raise
        ctx.check_cancelled()
    else:
        writers = StreamWriters(
            _writer_factory(destination),
            dict(destination_config or {}),
            record_state,
            checkpoint_rows=int(
                settings["checkpoint_rows"] if checkpoint_rows is None else checkpoint_rows
            ),
            checkpoint_seconds=float(
                settings["checkpoint_seconds"] if checkpoint_seconds is None else checkpoint_seconds
            ),
            state_id=state_id,
        )
        result.streams = writers.stats
        try:
            if isinstance(source, ForeignTap):
                _run_foreign_tap(source, writers, ctx)
            else:
                _run_in_process(source, writers, ctx)
            # Interrupted: what is not committed is discarded (close), not committed.
            ctx.check_cancelled()
            try:
                writers.finish()
            except BaseException as exc:
                _blame(exc, "destination")
                raise
        except BaseException as exc:
            writers.close()
            if not isinstance(exc, RunInterrupted) and ctx.cancel.is_set():
                raise RunInterrupted(ctx.cancel.signum or signal.SIGINT, result) from exc
            raise
        finally:
            result.retries += writers.retries


def _uses_maps(config: Mapping[str, Any]) -> bool:
    """True when a tap's settings ask for stream maps or flattening."""
    return bool(config.get("stream_maps")) or bool(config.get("flattening_enabled"))


def _validated_source(source: Source, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """An in-process reader's settings, validated and defaulted before it is opened (a
    foreign tap validates its own)."""
    if isinstance(source, ForeignTap):
        return dict(config or {})
    reader_type = source if isinstance(source, type) else type(source)
    schema = getattr(reader_type, "config_jsonschema", None) or {}
    name = getattr(reader_type, "name", None)
    return validated(schema, config or {}, plugin=name)


def _validated_destination(
    destination: Destination, config: Mapping[str, Any] | None
) -> dict[str, Any]:
    """An in-process writer's settings (its own and every target's, such as
    ``checkpoint_rows``), validated and defaulted before any writer is opened. A factory
    that is not a writer class is checked against the settings every target has."""
    if isinstance(destination, ForeignTarget):
        return dict(config or {})
    writer_type = destination if isinstance(destination, type) else type(destination)
    if not issubclass(writer_type, ArrowWriter):
        writer_type = ArrowWriter
    schema = target_schema(writer_type.config_jsonschema)
    name = writer_type.name if writer_type is not ArrowWriter else None
    checked = validated(schema, config or {}, plugin=name)
    # The singer-sdk settings this writer does not honour are refused, as in tap mode.
    check_target_settings(checked, writer_type.config_jsonschema, name or "the destination")
    return checked


def _replacing(
    destination: Destination, config: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """A full refresh replaces what the destination holds: ``load_method: overwrite`` for
    writers that have it and would append (so the stream is not stored twice)."""
    writer_type = destination if isinstance(destination, type) else type(destination)
    schema = getattr(writer_type, "config_jsonschema", None) or {}
    if "load_method" not in (schema.get("properties") or {}):
        if isinstance(destination, ForeignTarget):
            logger.info(
                "full refresh: %s is a foreign target; it is sent every row again and "
                "keeps whatever it held before (Singer has no replace message)",
                destination.name,
            )
        return config
    method = (config or {}).get("load_method") or "append-only"
    if method not in ("append-only", "append"):  # singer-sdk's name, and Dativo's alias
        return config
    logger.info("full refresh: the destination's streams are replaced (load_method overwrite)")
    return {**(config or {}), "load_method": "overwrite"}


def _writer_factory(destination: Destination) -> Callable[[], ArrowWriter]:
    if isinstance(destination, type) and issubclass(destination, ArrowWriter):
        return destination
    if isinstance(destination, ArrowWriter):
        used = [False]

        def once() -> ArrowWriter:
            if used[0]:
                return type(destination)()
            used[0] = True
            return destination

        return once
    if callable(destination):
        return cast(Callable[[], ArrowWriter], destination)
    raise ConfigError(f"not a destination: {destination!r}")


def _open_reader(source: Source, ctx: RunContext) -> ArrowReader:
    reader = source() if isinstance(source, type) else source
    if not isinstance(reader, ArrowReader):
        raise ConfigError(f"not a source: {source!r}")
    reader.state_id = ctx.state_id
    reader.start_state = dict(ctx.start_state or {})
    reader.open(dict(ctx.source_config or {}))
    ctx.reader = reader
    acknowledge = getattr(reader, "acknowledge", None)
    ctx.acknowledge = acknowledge if callable(acknowledge) else None
    return reader


def _run_in_process(source: Source, sink: StreamWriters, ctx: RunContext) -> None:
    """The reader on its own thread (opened, read and closed there), the sink on this one."""
    if not isinstance(source, ArrowReader | type):
        raise ConfigError(f"not a source: {source!r}")
    pipe = _Pipe(ctx.queue_size, ctx.cancel)

    def produce() -> None:
        try:
            with _open_reader(source, ctx) as reader:
                for event, seconds in _timed(ctx.events(reader)):
                    if ctx.cancel.is_set():
                        raise _Cancelled
                    pipe.put((event, seconds))
            ctx.reader_closed = True
            pipe.put(_END)
        except _Cancelled:
            return
        except BaseException as exc:
            _blame(exc, "source")
            try:
                pipe.put(exc)
            except _Cancelled:
                return

    thread = threading.Thread(target=produce, name="dativo-reader", daemon=True)
    thread.start()
    try:
        for event, seconds in pipe.items():
            try:
                _deliver_timed(event, sink, sink.stats, seconds)
            except BaseException as exc:
                _blame(exc, "destination")
                raise
            ctx.tick(sink.stats)
    finally:
        pipe.cancelled.set()
        # A reader asked to stop gets a moment to close; a stuck one is a daemon thread.
        thread.join(timeout=2 if ctx.cancel.is_set() else 10)


def _plugin_files(tap: ForeignTap, workdir: str, ctx: RunContext) -> list[str]:
    config_path = write_private_json(workdir, "config.json", dict(tap.config))
    args = ["--config", config_path]
    patterns = list(ctx.select or tap.select or [])
    meta = dict(ctx.metadata or tap.metadata or {})
    if patterns or meta:
        catalog = discover_catalog(tap, config_path, ctx.redactor)
        if catalog is not None:

            def chooser(
                name: str, props: list[str], keys: list[str], rkey: str | None
            ) -> list[str] | None:
                import pyarrow as pa

                info = StreamInfo(
                    name, pa.schema([pa.field(p, pa.null()) for p in props]), tuple(keys), rkey
                )
                return select_columns(info, patterns)

            catalog = select_in_catalog(catalog, patterns, meta, chooser)
            args += ["--catalog", write_private_json(workdir, "catalog.json", catalog)]
    if ctx.start_state:
        args += ["--state", write_private_json(workdir, "state.json", ctx.start_state)]
    return args


def _run_foreign_tap(tap: ForeignTap, writers: StreamWriters, ctx: RunContext) -> None:
    """A Singer tap's messages decoded straight into the run's writers."""
    with private_dir() as workdir:
        args = _plugin_files(tap, workdir, ctx)
        proc = ctx.cancel.adopt(RunningPlugin(tap, args, ctx.redactor))
        singer_input = SingerInput(_TimedWrites(writers))
        assert proc.proc.stdout is not None
        try:
            singer_input.consume(proc.proc.stdout, lambda: ctx.progress.tick(writers.stats))
            ctx.check_cancelled()
        except RunInterrupted:
            proc.kill()
            raise
        except DativoError:
            # A decode error at the end of the output is usually the tap dying mid-line:
            # report the crash, with its stderr, rather than the symptom.
            try:
                code = proc.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            proc.kill()
            if code not in (None, 0):
                raise PluginFailedError(tap.name, code, proc.stderr.text()) from None
            raise
        except BaseException:
            proc.kill()
            raise
        proc.check()
        singer_input.flush()


class _TimedWrites:
    """The run's writers as a foreign tap's decoded output sees them, with the stages
    accounted: the time between two calls is the read stage (waiting for the tap's lines
    and decoding them), the time in ``write`` the write stage (commits, which happen in
    ``state``, are timed by the writers)."""

    def __init__(self, writers: StreamWriters) -> None:
        self.writers = writers
        self._returned = time.monotonic()

    def _since_last(self) -> float:
        now = time.monotonic()
        waited, self._returned = now - self._returned, now
        return waited

    def schema(self, stream: StreamInfo) -> None:
        self._since_last()
        self.writers.schema(stream)
        self._returned = time.monotonic()

    def write(self, stream: str, batch: Any) -> None:
        waited = self._since_last()
        self.writers.write(stream, batch)
        stats = self.writers.stats.get(stream)
        if stats is not None:
            stats.read_seconds += waited
            stats.write_seconds += self._since_last()
        self._returned = time.monotonic()

    def state(self, value: Any) -> None:
        self._since_last()
        self.writers.state(value)
        self._returned = time.monotonic()

    def discard_after_commit(self, files: Any) -> None:
        self.writers.discard_after_commit(files)


class _Counted:
    """A sink that counts what passes into the run's result, then forwards it."""

    def __init__(self, sink: Sink, result: RunResult) -> None:
        self.sink = sink
        self.result = result

    def schema(self, stream: StreamInfo) -> None:
        stats = self.result.streams.setdefault(stream.name, StreamStats())
        if stats.started is None:
            stats.started = time.monotonic()
        self.sink.schema(stream)

    def write(self, stream: str, batch: Any) -> None:
        stats = self.result.streams[stream]
        stats.rows += batch.num_rows
        stats.bytes += batch.nbytes
        stats.batches += 1
        self.sink.write(stream, batch)

    def state(self, value: Any) -> None:
        self.sink.state(value)


def _run_to_foreign(
    source: Source, target: ForeignTarget, ctx: RunContext, record_state: Callable[[Any], None]
) -> None:
    """Into a Singer target's standard input: an in-process reader's events as Singer
    messages, or a foreign tap's output as it is. The STATE lines the target prints are
    what is recorded."""
    with private_dir() as workdir:
        config_path = write_private_json(workdir, "target-config.json", dict(target.config))
        if isinstance(source, ForeignTap):
            args = _plugin_files(source, workdir, ctx)
            tap_proc = ctx.cancel.adopt(RunningPlugin(source, args, ctx.redactor))
            stdin: Any = tap_proc.proc.stdout
        else:
            tap_proc = None
            stdin = subprocess.PIPE
        target_proc = ctx.cancel.adopt(
            RunningPlugin(target, ["--config", config_path], ctx.redactor, stdin=stdin)
        )

        def read_states() -> None:
            assert target_proc.proc.stdout is not None
            for line in iter_lines(target_proc.proc.stdout):
                try:
                    message = loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                # Targets print bare state values; tolerate ones wrapped as STATE messages.
                if message.get("type") == "STATE" and "value" in message:
                    message = message["value"]
                record_state(message)

        state_thread = threading.Thread(target=read_states, daemon=True)
        state_thread.start()
        try:
            if tap_proc is None:
                assert target_proc.proc.stdin is not None
                output = SingerOutput(target_proc.proc.stdin)
                sink = _Counted(output, ctx.result)
                with _open_reader(source, ctx) as reader:
                    for event, seconds in _timed(ctx.events(reader)):
                        ctx.check_cancelled()
                        _deliver_timed(event, sink, ctx.result.streams, seconds)
                        ctx.tick(ctx.result.streams)
                ctx.reader_closed = True
                output.flush()
                target_proc.proc.stdin.close()
            else:
                tap_proc.check()
            target_proc.check()
            state_thread.join()
        except BrokenPipeError:
            target_proc.check()
            raise
        finally:
            for p in (tap_proc, target_proc):
                if p is not None:
                    p.kill()


__all__ = [
    "Cancellation",
    "DativoError",
    "RunContext",
    "RunInterrupted",
    "RunResult",
    "bookmark_state",
    "run",
    "starting_bookmark",
]
