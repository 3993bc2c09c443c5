"""Parquet files written by engine tasks and published by the run's driver (the ray
engine, dativo_bridge.engines.ray_parquet).

A task writes its partition's rows with :class:`TaskFiles`, a ParquetWriter opened under
the *driver's* run id: its files get the hidden in-progress names the driver's writer would
give them, in the folder it publishes from (the stream folder for append, the hidden
staged folder for overwrite), and nothing is published. The task
returns each file's metadata (:func:`TaskFiles.finished`); the driver hands them to its
own ParquetWriter (:func:`adopt`), whose ``commit`` publishes them with the local
engine's rule. Because every name carries the driver's host and pid, what a killed driver
leaves is removed by the next run's open (target_dativo_parquet.leftovers), and
:func:`remove_run_leftovers` deletes what failed attempts of a live driver's tasks left.

Each task numbers its files from ``(index + 1) * FILES_PER_TASK``, so the names of two
tasks never meet and a retried attempt reuses its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.fs as pafs

from dativo_bridge.interfaces import StreamInfo
from target_dativo_parquet.storage import Storage
from target_dativo_parquet.writer import CONFIG_JSONSCHEMA, ParquetWriter, _Finished

#: Files one task may write before its numbers reach the next task's.
FILES_PER_TASK = 100_000


class TaskFiles(ParquetWriter):
    """One task's Parquet files, left unpublished under the driver's run names.

    Args:
        run: The driver's run id (its ParquetWriter's).
        index: The task's partition index.
    """

    def __init__(self, run: str, index: int) -> None:
        super().__init__()
        self._run = run
        self._seq = (index + 1) * FILES_PER_TASK

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        """Open as the driver's writer did, under its run id: the same folder (the staged
        one for overwrite, which this writer never removes: it is the driver's)."""
        super().open(config, stream)
        self._swapped = True  # close() must not remove the driver's staged folder

    def finished(self) -> list[dict[str, Any]]:
        """Close the open files and hand over every file written (plain values); they
        are then the driver's to publish or delete."""
        for key in list(self._files):
            self._finish(key)
        handed = [vars(done).copy() for done in self._finished]
        self._finished = []
        return handed


def adopt(writer: ParquetWriter, files: Iterable[Mapping[str, Any]]) -> None:
    """Give tasks' files to the driver's writer: its next ``commit`` publishes them, its
    ``close`` without a commit deletes them."""
    writer._finished.extend(_Finished(**dict(f)) for f in files)


def run_id(writer: ParquetWriter) -> str:
    """The run id an opened writer names its files with."""
    return writer._run


def remove_run_leftovers(writer: ParquetWriter, keep: Iterable[str] = ()) -> list[str]:
    """Delete the in-progress files of ``writer``'s run under its folder, but ``keep``
    (temp paths): what attempts of tasks that failed or lost their worker left. On S3 the
    run's unfinished multipart uploads are aborted too (a task killed mid-file leaves one,
    billed until a bucket lifecycle rule aborts it); only the run's own, by its run id in
    the name. Call it once no task of the run is writing any more. Returns the paths
    deleted."""
    storage: Storage = writer._storage
    kept = set(keep)
    marker = f".part-{writer._run}-"
    if not storage.local:
        storage.abort_uploads(
            writer._root + "/",
            lambda key, _initiated: (
                key.rsplit("/", 1)[-1].startswith(marker) and key.endswith(".parquet.inprogress")
            ),
        )
    selector = pafs.FileSelector(writer._root, recursive=True, allow_not_found=True)
    removed = []
    for info in storage.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.path in kept:
            continue
        name = info.base_name
        if name.startswith(marker) and name.endswith(".parquet.inprogress"):
            storage.delete(info.path)
            removed.append(info.path)
    return removed


__all__ = [
    "CONFIG_JSONSCHEMA",
    "FILES_PER_TASK",
    "TaskFiles",
    "adopt",
    "remove_run_leftovers",
    "run_id",
]
