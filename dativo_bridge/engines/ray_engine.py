"""``dativo run --engine ray``: a stream's partitions read and written as Ray tasks, then
published by the driver in one Iceberg commit per table with the run's STATE.

The driver plans (``partitions`` of a :class:`~dativo_bridge.engines.partitions.
PartitionedReader`, which holds the read's snapshot open until the end), starts one task
per partition and waits. A task opens its own reader, reads its partition and writes
Parquet data files straight into the table's location (reachable by every node: a shared
path or object storage); it returns only the files' locations, rows, seconds and its node
id. Ray retries a task whose worker died or that raised (``max_retries``); an attempt that
fails deletes what it wrote, and the driver deletes whatever else of its run the commit
does not hold. Only the commit makes rows visible, and the STATE it carries follows the
local engine's rules (dativo_bridge.sources: the run marker until the last stream), so a
rerun after any failure is exactly once. A driver that dies leaves files named after it,
which the next run on its host deletes (target_dativo_iceberg.orphans), and on S3 the
multipart uploads its killed tasks left open, which the next run aborts (a live driver
aborts its own run's at the end: target_dativo_iceberg.files). With ``overwrite`` (what
``full_refresh`` asks for) every stream is read from its start and each table's one
commit, made once every stream is read, replaces its rows, as the local engine's
end-of-run commit does.

Ray is optional: :func:`require_ray` is the one place that imports it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dativo_bridge.engines.partitions import Partition, PartitionedReader, plan
from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.interfaces import ArrowReader, ArrowWriter
from dativo_bridge.reading import check_batch
from dativo_bridge.runner import Cancellation, RunInterrupted, RunResult
from dativo_bridge.runner import _replacing as replacing
from dativo_bridge.settings import with_defaults
from dativo_bridge.sources import (
    bookmark_state,
    finished_by_resumed_run,
    selected_streams,
    starting_bookmark,
)
from dativo_bridge.state import RUN_KEY, StateStore

logger = logging.getLogger("dativo.run")

#: Readers that cannot carry the partition methods themselves: their partitioned twin.
PARTITIONED_TWINS = {
    "tap-dativo-postgres": "tap_dativo_postgres.partitions:PartitionedPostgresReader",
    "tap-dativo-csv": "tap_dativo_csv.partitions:PartitionedCsvReader",
}


def require_ray() -> ModuleType:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            'the ray engine needs Ray, which is not installed: pip install "dativo[ray]"'
        ) from None
    return ray


@dataclass
class TaskResult:
    """What one task did (``--json``: ``tasks``)."""

    stream: str
    partition: str
    rows: int
    files: list[str]
    seconds: float
    node_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "partition": self.partition,
            "rows": self.rows,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "node_id": self.node_id,
        }


@dataclass
class RayRunResult(RunResult):
    """A RunResult with the tasks of the run."""

    tasks: list[TaskResult] = field(default_factory=list)
    #: Driver time planning partitions, waiting for the tasks, and committing.
    plan_seconds: float = 0.0
    tasks_seconds: float = 0.0
    commit_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        summary = super().to_dict()
        summary["engine"] = "ray"
        summary["plan_seconds"] = round(self.plan_seconds, 3)
        summary["tasks_seconds"] = round(self.tasks_seconds, 3)
        summary["commit_seconds"] = round(self.commit_seconds, 3)
        summary["tasks"] = [t.to_dict() for t in self.tasks]
        return summary


def partitioned_reader(source: ArrowReader | type[ArrowReader]) -> type[ArrowReader]:
    """The reader class whose instances plan and read partitions for ``source``.

    Raises:
        ConfigError: ``source`` cannot be read in partitions.
    """
    cls = source if isinstance(source, type) else type(source)
    if issubclass(cls, ArrowReader) and _has_partitions(cls):
        return cls
    twin = PARTITIONED_TWINS.get(getattr(cls, "name", ""))
    if twin is not None:
        module, _, name = twin.partition(":")
        found = getattr(importlib.import_module(module), name)
        if issubclass(found, cls):
            return found  # type: ignore[no-any-return]
    raise ConfigError(
        f"{getattr(cls, 'name', cls.__name__)} cannot be read by the ray engine: a reader "
        "opts in with partitions(stream, bookmark) and read_partition(partition) "
        "(docs/scale-out.md)"
    )


def _has_partitions(cls: type) -> bool:
    return callable(getattr(cls, "partitions", None)) and callable(
        getattr(cls, "read_partition", None)
    )


def _task(
    reader_cls: type[ArrowReader],
    source_config: Mapping[str, Any],
    partition: Partition,
    destination_config: Mapping[str, Any],
    identifier: str,
    schema: Any,
    names: Any,
    boundary: Any,
) -> dict[str, Any]:
    """One partition read and written as data files (runs on a worker)."""
    import ray

    from target_dativo_iceberg.files import data_file, write_data_files
    from target_dativo_iceberg.writer import CONFIG_JSONSCHEMA, open_catalog

    started = time.monotonic()
    settings = with_defaults(CONFIG_JSONSCHEMA, destination_config)
    table = open_catalog(settings).load_table(identifier)
    reader = reader_cls()
    reader.open(source_config)
    try:
        assert isinstance(reader, PartitionedReader)
        batches = (check_batch(partition.stream, b) for b in reader.read_partition(partition))
        files, rows = write_data_files(
            table,
            schema,
            batches,
            names.for_task(table, partition.index),
            compression=str(settings["compression"]),
            target_bytes=int(float(settings["target_file_size_mb"]) * 2**20),
            keep=boundary.drop_known if boundary is not None else None,
        )
    finally:
        reader.close()
    return {
        "rows": rows,
        "files": files,
        "data_files": [data_file(table, location) for location in files],
        "seconds": time.monotonic() - started,
        "node_id": ray.get_runtime_context().get_node_id(),
    }


def run_with_ray(
    source: ArrowReader | type[ArrowReader],
    destination: type[ArrowWriter],
    *,
    source_config: Mapping[str, Any] | None = None,
    destination_config: Mapping[str, Any] | None = None,
    state_id: str | None = None,
    select: Sequence[str] | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    full_refresh: bool = False,
    ray_address: str | None = None,
    max_retries: int = 3,
    progress: Callable[[int, int], None] | None = None,
    state_store: StateStore | None = None,
    cancel: Cancellation | None = None,
) -> RayRunResult:
    """Move every selected stream of ``source`` into Iceberg with partitions as Ray tasks.

    Args:
        source: A reader (class or instance) that reads in partitions, or one with a
            partitioned twin (tap-dativo-postgres, tap-dativo-csv).
        destination: target-dativo-iceberg's writer class (``load_method`` append or
            overwrite: every stream read, then each table replaced in one snapshot), or
            target-dativo-parquet's (append or overwrite, dativo_bridge.engines.ray_parquet).
        source_config: The reader's settings (sent to every task).
        destination_config: The writer's settings; the table's location must be reachable
            from every node.
        state_id: The pipeline's state id, kept with the STATE in each commit.
        select: Meltano-style selection patterns.
        metadata: Catalog metadata overrides per stream pattern.
        full_refresh: Ignore the committed state and read everything; each table is
            replaced (``load_method`` overwrite, as with the local engine).
        ray_address: The cluster to join (None: ``RAY_ADDRESS`` or a new local one).
        max_retries: Attempts after the first for a task that failed or lost its worker.
        progress: Called with (tasks done, tasks planned) as tasks finish.
        state_store: Also gets each committed STATE under ``state_id`` (as ``run`` does).
        cancel: Request on it to stop: the tasks are cancelled, nothing more is committed.

    Returns:
        The run's result, with one TaskResult per partition.

    Raises:
        ConfigError: Ray is missing, or the source/destination/stream cannot run on Ray.
        RunInterrupted: ``cancel`` was requested; its result holds the committed state.
        DativoError: A task failed for good (nothing of the run is committed).
    """
    ray = require_ray()
    from target_dativo_iceberg.files import (
        RunFileNames,
        abort_dead_uploads,
        commit_files,
        delete_files,
        remove_uncommitted,
        snapshot_properties,
    )
    from target_dativo_iceberg.writer import CONFIG_JSONSCHEMA, IcebergWriter, open_catalog
    from target_dativo_parquet.writer import ParquetWriter

    started = time.monotonic()
    parquet = isinstance(destination, type) and issubclass(destination, ParquetWriter)
    if not parquet and not (
        isinstance(destination, type) and issubclass(destination, IcebergWriter)
    ):
        raise ConfigError(
            "the ray engine writes to target-dativo-iceberg and target-dativo-parquet only"
        )
    if parquet:
        return _run_parquet(
            ray,
            source,
            destination,
            source_config=source_config,
            destination_config=destination_config,
            state_id=state_id,
            select=select,
            metadata=metadata,
            full_refresh=full_refresh,
            ray_address=ray_address,
            max_retries=max_retries,
            progress=progress,
            state_store=state_store,
            cancel=cancel,
            started=started,
        )
    assert isinstance(destination, type) and issubclass(destination, IcebergWriter)
    settings = with_defaults(CONFIG_JSONSCHEMA, dict(destination_config or {}))
    if full_refresh:  # the local engine's meaning: everything read, the tables replaced
        settings = dict(replacing(destination, settings) or settings)
    if str(settings["load_method"]) not in ("append", "append-only", "overwrite"):
        raise ConfigError(
            f"target-dativo-iceberg: load_method {settings['load_method']!r} is not "
            "supported with --engine ray (append or overwrite): use --engine local"
        )
    replace = settings["load_method"] == "overwrite"
    reader_cls = partitioned_reader(source)
    # overwrite: {"bookmarks": {}}, every stream read from its start.
    start = destination.recover_state(settings, state_id)
    state: dict[str, Any] = copy.deepcopy(dict(start or {}))
    state.pop("currently_syncing", None)
    previous = state.pop(RUN_KEY, None)
    result = RayRunResult(state_id=state_id, state=start)
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(_task)
    names = RunFileNames.for_driver()
    reader = reader_cls()
    reader.open(dict(source_config or {}))
    #: overwrite: each stream's tasks' files, committed once every stream is read.
    replacements: list[_Replacement] = []
    try:
        assert isinstance(reader, PartitionedReader)
        streams = selected_streams(reader, select, metadata)
        stream_names = [s.name for s in streams]
        done = finished_by_resumed_run(previous, stream_names)
        completed = list(done)
        counted = RunTasks()
        for stream in streams:
            if stream.name in done:
                logger.info("stream '%s': finished by the run this one resumes", stream.name)
                continue
            writer = destination()
            writer.state_id = state_id
            writer.open(settings, stream)  # creates the table, deletes dead runs' files
            refs: list[Any] = []
            try:
                abort_dead_uploads(writer._table)  # what killed runs' tasks left uploading
                identifier = writer._identifier
                schema = writer._schema
                clock = time.monotonic()
                parts = plan(
                    reader, stream, starting_bookmark(state, stream), target_bytes(settings)
                )
                result.plan_seconds += time.monotonic() - clock
                clock = time.monotonic()
                refs = [
                    # SPREAD: the partitions go round the nodes (each holds its own
                    # connection and disk bandwidth), not first to the emptiest one.
                    remote.options(
                        max_retries=max_retries,
                        retry_exceptions=True,
                        scheduling_strategy="SPREAD",
                    ).remote(
                        reader_cls,
                        dict(source_config or {}),
                        part,
                        dict(settings),
                        identifier,
                        schema,
                        names,
                        writer._boundary,  # rows at the committed bookmark already held
                    )
                    for part in parts
                ]
                report = None if progress is None else functools.partial(counted, progress)
                outcomes = _wait(ray, refs, report, cancel, result)
                counted.add(len(parts))
                result.tasks_seconds += time.monotonic() - clock
                clock = time.monotonic()
                table = open_catalog(settings).load_table(identifier)
                files = [f for o in outcomes for f in o["files"]]
                ends = [p.bookmark for p in parts if p.bookmark is not None]
                if ends and stream.replication_key:
                    bookmark_state(state, stream.name, stream.replication_key, ends[-1])
                completed.append(stream.name)
                if replace:  # the failed attempts' files go now, the run's stay for the end
                    remove_uncommitted(table, names, files)
                    replacements.append(_Replacement(stream.name, identifier, parts, outcomes))
                    continue
                last = set(completed) >= set(stream_names)
                staged = (
                    copy.deepcopy(state)
                    if last
                    else {
                        **copy.deepcopy(state),
                        RUN_KEY: {"streams": stream_names, "completed": list(completed)},
                    }
                )
                try:
                    if files:
                        commit_files(
                            functools.partial(_load_table, settings, identifier),
                            [d for o in outcomes for d in o["data_files"]],
                            snapshot_properties(stream.name, state_id, staged),
                            retries=int(settings["commit_retries"]),
                        )
                except BaseException:
                    delete_files(table, files)
                    raise
                finally:
                    remove_uncommitted(table, names, files)
                result.commit_seconds += time.monotonic() - clock
                result.state = staged
                if state_store is not None and state_id:
                    state_store.put(state_id, staged)
                _count(result, _Replacement(stream.name, identifier, parts, outcomes), "one commit")
            except BaseException:
                table = open_catalog(settings).load_table(writer._identifier)
                _cancel(ray, refs)
                remove_uncommitted(table, names, [])
                raise
            finally:
                writer.close()
        if replace:
            _replace_tables(settings, state_id, state, replacements, names, result)
            if state_store is not None and state_id:
                state_store.put(state_id, result.state)
    except BaseException:
        for replacement in replacements:  # an overwrite not committed: its files go
            remove_uncommitted(
                _load_table(settings, replacement.identifier), names, replacement.committed
            )
        raise
    finally:
        reader.close()
        if owned:
            ray.shutdown()
    result.elapsed = time.monotonic() - started
    return result


@dataclass
class _Replacement:
    """One stream's finished tasks: their files, committed together."""

    stream: str
    identifier: str
    parts: Sequence[Partition]
    outcomes: list[Any]
    #: The files a commit took (an overwrite's, once its table is replaced).
    committed: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [f for o in self.outcomes for f in o["files"]]


def _replace_tables(
    settings: Mapping[str, Any],
    state_id: str | None,
    state: dict[str, Any],
    replacements: Sequence[_Replacement],
    names: Any,
    result: RayRunResult,
) -> None:
    """``overwrite`` (a full refresh): every stream read, each table replaced by its tasks'
    files in one OVERWRITE snapshot carrying the run's final STATE, as the local engine's
    end-of-run commit does (the tables one after the other)."""
    from target_dativo_iceberg.files import commit_files, snapshot_properties

    clock = time.monotonic()
    final = copy.deepcopy(state)
    for replacement in replacements:
        commit_files(
            functools.partial(_load_table, settings, replacement.identifier),
            [d for o in replacement.outcomes for d in o["data_files"]],
            snapshot_properties(replacement.stream, state_id, final),
            retries=int(settings["commit_retries"]),
            replace=True,
        )
        replacement.committed = replacement.files
        result.state = final
        _count(result, replacement, "replacing the table's rows")
    result.commit_seconds += time.monotonic() - clock


def _count(result: RayRunResult, done: _Replacement, how: str) -> None:
    """A committed stream's tasks and rows in the run's result."""
    stats = result.streams.setdefault(done.stream, _stats())
    for part, outcome in zip(done.parts, done.outcomes, strict=True):
        result.tasks.append(
            TaskResult(
                done.stream,
                part.label,
                int(outcome["rows"]),
                list(outcome["files"]),
                float(outcome["seconds"]),
                str(outcome["node_id"]),
            )
        )
        stats.rows += int(outcome["rows"])
        stats.committed_rows += int(outcome["rows"])
    stats.files.extend(done.files)
    logger.info(
        "stream '%s': %d row(s) in %d file(s) from %d task(s), %s",
        done.stream,
        stats.rows,
        len(done.files),
        len(done.parts),
        how,
    )


def _run_parquet(
    ray: ModuleType,
    source: ArrowReader | type[ArrowReader],
    destination: type[ArrowWriter],
    *,
    source_config: Mapping[str, Any] | None,
    destination_config: Mapping[str, Any] | None,
    full_refresh: bool,
    ray_address: str | None,
    started: float,
    **kwargs: Any,
) -> RayRunResult:
    """run_with_ray into target-dativo-parquet (dativo_bridge.engines.ray_parquet)."""
    from dativo_bridge.engines.ray_parquet import parquet_settings, run_parquet

    settings = parquet_settings(destination_config)
    if full_refresh:  # the local engine's meaning: load_method overwrite, read from the start
        settings = dict(replacing(destination, settings) or settings)
    reader_cls = partitioned_reader(source)
    result = RayRunResult(state_id=kwargs.get("state_id"), state=None)
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    try:
        run_parquet(
            ray,
            reader_cls,
            destination,
            settings,
            source_config=dict(source_config or {}),
            result=result,
            **kwargs,
        )
    finally:
        if owned:
            ray.shutdown()
    result.elapsed = time.monotonic() - started
    return result


def target_bytes(settings: Mapping[str, Any]) -> int | None:
    """The target's file size in bytes (``target_file_size_mb``; both targets have it)."""
    size = settings.get("target_file_size_mb")
    return None if size is None else max(1, int(float(size) * 2**20))


def _load_table(settings: Mapping[str, Any], identifier: str) -> Any:
    from target_dativo_iceberg.writer import open_catalog

    return open_catalog(settings).load_table(identifier)


def _stats() -> Any:
    from dativo_bridge.delivery import StreamStats

    return StreamStats()


def _wait(
    ray: Any,
    refs: list[Any],
    progress: Callable[[int, int], None] | None,
    cancel: Cancellation | None,
    result: RunResult,
) -> list[Any]:
    """The tasks' results in plan order; a task that failed for good fails the run."""
    pending = list(refs)
    while pending:
        if cancel is not None and cancel.is_set():
            raise RunInterrupted(cancel.signum or signal.SIGINT, result)
        ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
        if not ready:
            if progress is not None:  # a periodic display shows the count meanwhile
                progress(len(refs) - len(pending), len(refs))
            continue
        try:
            ray.get(ready)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, DativoError):
                raise cause from None
            raise DativoError(f"a ray task failed after its retries: {cause or exc}") from None
        except ray.exceptions.RayError as exc:
            raise DativoError(f"a ray task was lost after its retries: {exc}") from None
        if progress is not None:
            progress(len(refs) - len(pending), len(refs))
    return list(ray.get(refs))


class RunTasks:
    """The run's task count across its streams: ``progress`` gets the earlier streams'
    tasks added to the running stream's (done, planned)."""

    def __init__(self) -> None:
        self.before = 0

    def add(self, tasks: int) -> None:
        self.before += tasks

    def __call__(self, progress: Callable[[int, int], None], done: int, total: int) -> None:
        progress(self.before + done, self.before + total)


class TasksDisplay:
    """The live display of a ray run, fed with (tasks done, tasks planned) as the run's
    tasks finish: on a terminal a live line; off one a ``progress:`` log line at most every
    ``interval`` seconds and when the planned tasks are all done, with ``tasks_done`` /
    ``tasks_total`` fields for ``--log-format json`` records (the local engine's
    ``progress_fields``).

    Use it as a context manager around the run (the terminal's live line is shown inside).
    """

    def __init__(self, console: Any, interval: float) -> None:
        self._console = console
        self._interval = float(interval)
        self._started = time.monotonic()
        self._last: float | None = None
        self._shown: tuple[int, int] | None = None
        self._live: Any = None

    def __enter__(self) -> TasksDisplay:
        self._started = time.monotonic()
        if self._console is not None and self._console.is_terminal:
            from rich.live import Live

            self._live = Live(console=self._console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def line(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self._started
        return f"progress: ray tasks {done}/{total} done, {elapsed:.1f}s elapsed"

    def fields(self, done: int, total: int) -> dict[str, Any]:
        return {
            "tasks_done": done,
            "tasks_total": total,
            "elapsed_seconds": round(time.monotonic() - self._started, 3),
        }

    def __call__(self, done: int, total: int) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(self.line(done, total)))
            return
        now = time.monotonic()
        finished = done >= total and self._shown != (done, total)
        due = self._interval > 0 and (self._last is None or now - self._last >= self._interval)
        if not (finished or due):
            return
        self._last, self._shown = now, (done, total)
        logger.info("%s", self.line(done, total), extra={"dativo_fields": self.fields(done, total)})


def _cancel(ray: Any, refs: Sequence[Any]) -> None:
    """Stop the tasks of ``refs`` that have not finished and wait for them to end.

    Finished tasks are left alone: Ray 2.60's driver can abort on a cancel that races with
    a task's completion ("Tried to complete task that was not pending" in task_manager.cc,
    seen in test_ray_parquet's failing-task test), so only tasks still running are
    cancelled; the race stays possible for a task that ends at that very moment.
    """
    if not refs:
        return
    _done, running = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    for ref in running:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # finished or already gone
            continue
    ray.wait(list(refs), num_returns=len(refs), timeout=10)
