"""``--engine ray`` into target-dativo-parquet: tasks write a stream's files under hidden
in-progress names, the driver publishes them with the local engine's rule.

The driver opens one ParquetWriter per stream, as the local engine does (which removes
what dead runs left: target_dativo_parquet.leftovers), and its tasks write their files
under that writer's run id into the folder it publishes from
(target_dativo_parquet.files). Once every task of the stream is done, the driver hands
the files to its writer and commits it:

- append: the stream's files are published (renamed to their final names), then the STATE
  is recorded in the state store, so a run that dies before it is read again from the
  previous STATE (at least once, as the local engine's Parquet target);
- overwrite: the stream's folder is replaced once, with the run's files, after every
  stream of the run has been read (the local engine's end-of-run commit); every stream is
  read from its start.

Nothing a task writes is visible before the commit: a failed run deletes its files, and a
killed driver's are removed by the next run's open (their names carry its pid).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dativo_bridge.engines.partitions import Partition, PartitionedReader, plan
from dativo_bridge.errors import ConfigError
from dativo_bridge.interfaces import ArrowReader, ArrowWriter
from dativo_bridge.reading import check_batch
from dativo_bridge.runner import Cancellation
from dativo_bridge.settings import load_method, with_defaults
from dativo_bridge.sources import (
    bookmark_state,
    finished_by_resumed_run,
    selected_streams,
    starting_bookmark,
)
from dativo_bridge.state import RUN_KEY, StateStore

logger = logging.getLogger("dativo.run")


def parquet_settings(destination_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """target-dativo-parquet's settings with defaults; upsert is refused as the local
    writer refuses it."""
    from target_dativo_parquet.writer import CONFIG_JSONSCHEMA, ParquetWriter

    settings = with_defaults(CONFIG_JSONSCHEMA, dict(destination_config or {}))
    load_method(settings, ("append", "overwrite"), ParquetWriter.name)
    if not settings.get("path"):
        raise ConfigError(
            "target-dativo-parquet needs the setting 'path' (a directory or s3://bucket/prefix)"
        )
    return settings


def _parquet_task(
    reader_cls: type[ArrowReader],
    source_config: Mapping[str, Any],
    partition: Partition,
    destination_config: Mapping[str, Any],
    run: str,
) -> dict[str, Any]:
    """One partition read and written as unpublished Parquet files (runs on a worker)."""
    import ray

    from target_dativo_parquet.files import TaskFiles

    started = time.monotonic()
    files = TaskFiles(run, partition.index)
    files.open(destination_config, partition.stream)
    reader = reader_cls()
    reader.open(source_config)
    try:
        assert isinstance(reader, PartitionedReader)
        for batch in reader.read_partition(partition):
            batch = check_batch(partition.stream, batch)
            if batch.num_rows:
                files.write(batch)
        finished = files.finished()
    finally:
        try:
            reader.close()
        finally:
            files.close()  # deletes what was not handed over (a failed attempt's files)
    return {
        "rows": sum(int(f["rows"]) for f in finished),
        "finished": finished,
        "seconds": time.monotonic() - started,
        "node_id": ray.get_runtime_context().get_node_id(),
    }


def run_parquet(
    ray: Any,
    reader_cls: type[ArrowReader],
    destination: type[ArrowWriter],
    settings: Mapping[str, Any],
    *,
    source_config: Mapping[str, Any],
    state_id: str | None,
    select: Sequence[str] | None,
    metadata: Mapping[str, Mapping[str, Any]] | None,
    max_retries: int,
    progress: Callable[[int, int], None] | None,
    state_store: StateStore | None,
    cancel: Cancellation | None,
    result: Any,
) -> None:
    """The Parquet run of :func:`~dativo_bridge.engines.ray_engine.run_with_ray` (Ray is
    initialised, ``result`` a RayRunResult filled in here)."""
    from dativo_bridge.engines.ray_engine import (
        RunTasks,
        TaskResult,
        _cancel,
        _wait,
        target_bytes,
    )
    from target_dativo_parquet.files import adopt, remove_run_leftovers, run_id

    overwrite = load_method(settings, ("append", "overwrite"), "target-dativo-parquet") == (
        "overwrite"
    )
    start = state_store.get(state_id) if state_store is not None and state_id else None
    if start and overwrite:
        logger.info("load_method overwrite: every stream is read from its start")
        start = None
    result.state = start
    state: dict[str, Any] = copy.deepcopy(dict(start or {}))
    state.pop("currently_syncing", None)
    previous = state.pop(RUN_KEY, None)
    remote = ray.remote(_parquet_task)
    counted = RunTasks()
    reader = reader_cls()
    reader.open(dict(source_config))
    #: Overwrite writers wait for the end of the run, with their tasks' results.
    waiting: list[tuple[ArrowWriter, str, list[TaskResult]]] = []
    try:
        assert isinstance(reader, PartitionedReader)
        streams = selected_streams(reader, select, metadata)
        stream_names = [s.name for s in streams]
        done = finished_by_resumed_run(previous, stream_names)
        completed = list(done)
        for stream in streams:
            if stream.name in done:
                logger.info("stream '%s': finished by the run this one resumes", stream.name)
                continue
            writer = destination()
            writer.state_id = state_id
            writer.open(settings, stream)  # removes dead runs' leftovers, as locally
            refs: list[Any] = []
            kept = False
            try:
                clock = time.monotonic()
                bookmark = None if overwrite else starting_bookmark(state, stream)
                parts = plan(reader, stream, bookmark, target_bytes(settings))
                result.plan_seconds += time.monotonic() - clock
                clock = time.monotonic()
                run = run_id(writer)  # type: ignore[arg-type]
                refs = [
                    remote.options(
                        max_retries=max_retries,
                        retry_exceptions=True,
                        scheduling_strategy="SPREAD",
                    ).remote(reader_cls, dict(source_config), part, dict(settings), run)
                    for part in parts
                ]
                report = None if progress is None else functools.partial(counted, progress)
                outcomes = _wait(ray, refs, report, cancel, result)
                counted.add(len(parts))
                result.tasks_seconds += time.monotonic() - clock
                handed = [f for o in outcomes for f in o["finished"]]
                adopt(writer, handed)  # type: ignore[arg-type]
                remove_run_leftovers(writer, [str(f["temp"]) for f in handed])  # type: ignore[arg-type]
                tasks = [
                    TaskResult(
                        stream.name,
                        part.label,
                        int(o["rows"]),
                        [str(f["final"]) for f in o["finished"]],
                        float(o["seconds"]),
                        str(o["node_id"]),
                    )
                    for part, o in zip(parts, outcomes, strict=True)
                ]
                ends = [p.bookmark for p in parts if p.bookmark is not None]
                if ends and stream.replication_key:
                    bookmark_state(state, stream.name, stream.replication_key, ends[-1])
                completed.append(stream.name)
                if writer.publishes_at_end:
                    waiting.append((writer, stream.name, tasks))
                    kept = True
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
                _publish(writer, stream.name, tasks, result)
                result.state = staged
                if state_store is not None and state_id:
                    state_store.put(state_id, staged)
            except BaseException:
                _cancel(ray, refs)
                remove_run_leftovers(writer)  # type: ignore[arg-type]
                raise
            finally:
                if not kept:
                    writer.close()
        for writer, name, tasks in waiting:  # overwrite: every folder replaced at the end
            _publish(writer, name, tasks, result)
        if waiting:
            result.state = copy.deepcopy(state)
            if state_store is not None and state_id:
                state_store.put(state_id, result.state)
    finally:
        for writer, _name, _tasks in waiting:
            try:
                remove_run_leftovers(writer)  # type: ignore[arg-type]
            finally:
                writer.close()  # an overwrite not published: its staged folder goes
        reader.close()


def _publish(writer: ArrowWriter, stream: str, tasks: list[Any], result: Any) -> None:
    """Commit the driver's writer (the tasks' files it adopted) and count the stream."""
    clock = time.monotonic()
    committed = writer.commit()
    result.commit_seconds += time.monotonic() - clock
    published = list(committed.paths)
    # Where each file was published (s3://... on S3; the live folder after an overwrite).
    by_name = {p.rsplit("/", 1)[-1]: p for p in published}
    for task in tasks:
        task.files = [by_name.get(f.rsplit("/", 1)[-1], f) for f in task.files]
    stats = result.streams.setdefault(stream, _stats_of())
    for task in tasks:
        result.tasks.append(task)
        stats.rows += task.rows
    stats.committed_rows += committed.rows
    stats.committed_bytes += committed.bytes
    stats.commits += 1
    stats.files.extend(published)
    logger.info(
        "stream '%s': %d row(s) in %d file(s) from %d task(s), published",
        stream,
        committed.rows,
        len(published),
        len(tasks),
    )


def _stats_of() -> Any:
    from dativo_bridge.delivery import StreamStats

    return StreamStats()
