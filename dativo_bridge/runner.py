"""The runner: a source and a destination in one process, joined by a bounded queue.

Either side may be in process (an ArrowReader / ArrowWriter: Arrow batches, no JSON) or
a foreign Singer executable (the codecs at the boundary). STATE is recorded in the state
store only once the destination has made every row before it durable.
"""

from __future__ import annotations

import copy
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from dativo_bridge.codecs.decode import loads
from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.codecs.messages import SingerInput, iter_lines
from dativo_bridge.delivery import StreamStats, StreamWriters
from dativo_bridge.errors import ConfigError, DativoError, PluginFailedError
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
from dativo_bridge.reading import checked_batches
from dativo_bridge.redact import Redactor
from dativo_bridge.schema import arrow_to_jsonschema
from dativo_bridge.sdk import jsonable
from dativo_bridge.selection import apply_metadata, select_columns
from dativo_bridge.state import RUN_KEY, StateStore

logger = logging.getLogger("dativo.run")

Source = ArrowReader | type[ArrowReader] | ForeignTap
Destination = ArrowWriter | type[ArrowWriter] | Callable[[], ArrowWriter] | ForeignTarget
ProgressCallback = Callable[[Mapping[str, StreamStats], float], None]


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        state_id: The state id used (None if state was not stored).
        state: The last durable STATE value.
        streams: Per-stream counters.
        elapsed: Wall time in seconds.
    """

    state_id: str | None
    state: Any
    streams: dict[str, StreamStats] = field(default_factory=dict)
    elapsed: float = 0.0

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
            "streams": {
                name: {
                    "rows": s.rows,
                    "bytes": s.bytes,
                    "batches": s.batches,
                    "committed_rows": s.committed_rows,
                    "files": s.files,
                }
                for name, s in self.streams.items()
            },
        }


def bookmark_state(state: dict[str, Any], stream: str, key: str, value: Any) -> None:
    """Record a bookmark in singer-sdk's STATE format."""
    bookmarks = state.setdefault("bookmarks", {})
    bookmarks[stream] = {"replication_key": key, "replication_key_value": jsonable(value)}


def starting_bookmark(state: Mapping[str, Any] | None, stream: StreamInfo) -> Any:
    """The bookmark to resume ``stream`` from, or None for a full read."""
    if not state or stream.replication_method != "INCREMENTAL" or not stream.replication_key:
        return None
    entry = state.get("bookmarks", {}).get(stream.name) or {}
    if entry.get("replication_key") not in (None, stream.replication_key):
        logger.warning(
            "stream '%s': replication key changed from %s to %s; reading in full",
            stream.name,
            entry.get("replication_key"),
            stream.replication_key,
        )
        return None
    return entry.get("replication_key_value")


_END = object()


class _Pipe:
    """A bounded queue with error propagation and cancellation between two threads."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.cancelled = threading.Event()

    def put(self, item: Any) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def items(self) -> Iterator[Any]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _Cancelled(Exception):
    pass


def _reader_events(
    reader: ArrowReader,
    select: Sequence[str] | None,
    metadata: Mapping[str, Mapping[str, Any]] | None,
    start_state: Mapping[str, Any] | None,
) -> Iterator[tuple[str, Any, Any]]:
    """('schema', info, None) / ('batch', name, batch) / ('state', state, None) events.

    While a run is under way its STATE lists the streams it has finished
    (``dativo_run: {streams, completed}``). A run that starts from a STATE whose run did
    not finish every stream is that run resumed: the streams it finished are not read
    again (a FULL_TABLE stream would otherwise be appended a second time). The last STATE
    of a run that reads every stream has no ``dativo_run``.
    """
    state: dict[str, Any] = copy.deepcopy(dict(start_state or {}))
    state.pop("currently_syncing", None)
    previous = state.pop(RUN_KEY, None)
    selected: list[StreamInfo] = []
    for discovered in reader.discover():
        info = apply_metadata(discovered, metadata)
        columns = select_columns(info, select)
        if columns is None:
            logger.info("stream '%s' not selected", info.name)
            continue
        selected.append(info.with_columns(columns))
    names = [info.name for info in selected]
    done: list[str] = []
    if isinstance(previous, dict):
        earlier = [str(n) for n in previous.get("completed") or []]
        if set(earlier) < set(previous.get("streams") or []):
            done = [n for n in earlier if n in names]
    progress = {"streams": names, "completed": list(done)}
    ended = False  # the last STATE yielded has no dativo_run
    for info in selected:
        if info.name in done:
            logger.info(
                "stream '%s': finished by the interrupted run this run resumes; not read again",
                info.name,
            )
            continue
        yield ("schema", info, None)
        bookmark = starting_bookmark(state, info)
        if bookmark is not None:
            logger.info(
                "stream '%s': resuming from %s >= %s", info.name, info.replication_key, bookmark
            )
        for batch, released in checked_batches(reader, info, bookmark):
            if batch.num_rows:
                yield ("batch", info.name, batch)
            if released is not None:
                assert info.replication_key is not None
                bookmark_state(state, info.name, info.replication_key, released)
                yield ("state", {**copy.deepcopy(state), RUN_KEY: copy.deepcopy(progress)}, None)
        progress["completed"].append(info.name)
        ended = set(progress["completed"]) >= set(names)
        extra = {} if ended else {RUN_KEY: copy.deepcopy(progress)}
        yield ("state", {**copy.deepcopy(state), **extra}, None)
    if not ended:
        yield ("state", copy.deepcopy(state), None)


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
    checkpoint_rows: int = 1_000_000,
    checkpoint_seconds: float = 300.0,
    redactor: Redactor | None = None,
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
        checkpoint_rows: Commit after this many rows (with a STATE pending).
        checkpoint_seconds: ... or this many seconds.
        redactor: Masks secrets in messages from foreign plugins.

    Returns:
        A RunResult with the final durable state and per-stream counts.

    Raises:
        DativoError: Configuration, decode, write and plugin failures.
    """
    started = time.monotonic()
    redactor = redactor or Redactor()
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

    def record_state(value: Any) -> None:
        result.state = value
        if state_store is not None and state_id and isinstance(value, dict):
            state_store.put(state_id, value)

    if isinstance(destination, ForeignTarget):
        _run_to_foreign(
            source,
            destination,
            source_config,
            start_state,
            select,
            metadata,
            record_state,
            result,
            redactor,
            progress,
            started,
        )
    else:
        make_writer = _writer_factory(destination)
        writers = StreamWriters(
            make_writer,
            dict(destination_config or {}),
            record_state,
            checkpoint_rows=checkpoint_rows,
            checkpoint_seconds=checkpoint_seconds,
            state_id=state_id,
        )
        result.streams = writers.stats
        try:
            if isinstance(source, ForeignTap):
                _run_foreign_tap(
                    source, writers, start_state, select, metadata, redactor, progress, started
                )
            else:
                _run_in_process(
                    _open_reader(source, source_config),
                    writers,
                    start_state,
                    select,
                    metadata,
                    queue_size,
                    progress,
                    started,
                )
            writers.finish()
        except BaseException:
            writers.close()
            raise
    result.elapsed = time.monotonic() - started
    if progress is not None:
        progress(result.streams, result.elapsed)
    return result


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
    method = (config or {}).get("load_method") or "append"
    if method != "append":
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


def _open_reader(source: Source, config: Mapping[str, Any] | None) -> ArrowReader:
    reader = source() if isinstance(source, type) else source
    if not isinstance(reader, ArrowReader):
        raise ConfigError(f"not a source: {source!r}")
    reader.open(dict(config or {}))
    return reader


def _run_in_process(
    reader: ArrowReader,
    writers: StreamWriters,
    start_state: Any,
    select: Sequence[str] | None,
    metadata: Any,
    queue_size: int,
    progress: ProgressCallback | None,
    started: float,
) -> None:
    pipe = _Pipe(queue_size)

    def produce() -> None:
        try:
            with reader:
                for event in _reader_events(reader, select, metadata, start_state):
                    pipe.put(event)
            pipe.put(_END)
        except _Cancelled:
            return
        except BaseException as exc:
            try:
                pipe.put(exc)
            except _Cancelled:
                return

    thread = threading.Thread(target=produce, name="dativo-reader", daemon=True)
    thread.start()
    last = 0.0
    try:
        for kind, a, b in pipe.items():
            if kind == "schema":
                writers.schema(a)
            elif kind == "batch":
                writers.write(a, b)
            else:
                writers.state(a)
            if progress is not None and time.monotonic() - last > 0.5:
                last = time.monotonic()
                progress(writers.stats, last - started)
    finally:
        pipe.cancelled.set()
        thread.join(timeout=10)


def _plugin_files(
    tap: ForeignTap,
    workdir: str,
    start_state: Any,
    select: Sequence[str] | None,
    metadata: Any,
    redactor: Redactor,
) -> list[str]:
    config_path = write_private_json(workdir, "config.json", dict(tap.config))
    args = ["--config", config_path]
    patterns = list(select or tap.select or [])
    meta = dict(metadata or tap.metadata or {})
    if patterns or meta:
        catalog = discover_catalog(tap, config_path, redactor)
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
    if start_state:
        args += ["--state", write_private_json(workdir, "state.json", start_state)]
    return args


def _run_foreign_tap(
    tap: ForeignTap,
    writers: StreamWriters,
    start_state: Any,
    select: Sequence[str] | None,
    metadata: Any,
    redactor: Redactor,
    progress: ProgressCallback | None,
    started: float,
) -> None:
    with private_dir() as workdir:
        args = _plugin_files(tap, workdir, start_state, select, metadata, redactor)
        proc = RunningPlugin(tap, args, redactor)
        singer_input = SingerInput(writers)
        assert proc.proc.stdout is not None
        last = 0.0

        def tick() -> None:
            nonlocal last
            if progress is not None and time.monotonic() - last > 0.5:
                last = time.monotonic()
                progress(writers.stats, last - started)

        try:
            singer_input.consume(proc.proc.stdout, tick)
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


def _run_to_foreign(
    source: Source,
    target: ForeignTarget,
    source_config: Any,
    start_state: Any,
    select: Sequence[str] | None,
    metadata: Any,
    record_state: Callable[[Any], None],
    result: RunResult,
    redactor: Redactor,
    progress: ProgressCallback | None,
    started: float,
) -> None:
    with private_dir() as workdir:
        config_path = write_private_json(workdir, "target-config.json", dict(target.config))
        if isinstance(source, ForeignTap):
            args = _plugin_files(source, workdir, start_state, select, metadata, redactor)
            tap_proc = RunningPlugin(source, args, redactor)
            stdin: Any = tap_proc.proc.stdout
        else:
            tap_proc = None
            stdin = subprocess.PIPE
        target_proc = RunningPlugin(target, ["--config", config_path], redactor, stdin=stdin)
        states: list[Any] = []

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
                states.append(message)
                record_state(message)

        state_thread = threading.Thread(target=read_states, daemon=True)
        state_thread.start()
        try:
            if tap_proc is None:
                assert target_proc.proc.stdin is not None
                _feed_target(
                    _open_reader(source, source_config),
                    target_proc.proc.stdin,
                    select,
                    metadata,
                    start_state,
                    result,
                    progress,
                    started,
                )
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


def _feed_target(
    reader: ArrowReader,
    sink: Any,
    select: Sequence[str] | None,
    metadata: Any,
    start_state: Any,
    result: RunResult,
    progress: ProgressCallback | None,
    started: float,
) -> None:
    last = 0.0
    with reader:
        for kind, a, b in _reader_events(reader, select, metadata, start_state):
            if kind == "schema":
                info: StreamInfo = a
                result.streams.setdefault(info.name, StreamStats())
                sink.write(
                    orjson.dumps(
                        {
                            "type": "SCHEMA",
                            "stream": info.name,
                            "schema": arrow_to_jsonschema(info.schema),
                            "key_properties": list(info.key_properties),
                            **(
                                {"bookmark_properties": [info.replication_key]}
                                if info.replication_key
                                else {}
                            ),
                        }
                    )
                    + b"\n"
                )
            elif kind == "batch":
                sink.write(encode_records(b, a))
                stats = result.streams[a]
                stats.rows += b.num_rows
                stats.bytes += b.nbytes
                stats.batches += 1
            else:
                sink.write(orjson.dumps({"type": "STATE", "value": a}) + b"\n")
            if progress is not None and time.monotonic() - last > 0.5:
                last = time.monotonic()
                progress(result.streams, last - started)
    sink.flush()


__all__ = ["DativoError", "RunResult", "run"]
