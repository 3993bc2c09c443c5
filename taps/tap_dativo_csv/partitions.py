"""CSV streams as partitions (dativo_bridge.engines.partitions): one file each, or
consecutive files grouped up to the target's file size.

The plan is the files a read from the bookmark would read (modified after it), in
modification-time order; the bookmark the run ends with is the newest modification time
planned, so a file written later (or with that same time, see the reader's bookmark) is
read by the next run. A file is read by whichever worker runs its partition: every node
must see the same paths (a shared file system).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from dativo_bridge.engines.partitions import Partition
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.schema import JSON_TYPE
from tap_dativo_csv.reader import _EPOCH, MODIFIED_AT, SOURCE_FILE, CsvReader, _as_datetime


class PartitionedCsvReader(CsvReader):
    """A CsvReader that plans and reads one partition per file."""

    def partitions(
        self, stream: StreamInfo, bookmark: Any | None, target_bytes: int | None = None
    ) -> Sequence[Partition]:
        """The files after ``bookmark``, oldest first: one partition per file, or, with
        ``target_bytes`` (the target's file size), consecutive files grouped while their
        sizes add up to at most that (a larger file is a partition of its own: a file is
        not split). Each partition carries the bookmark its read completes, the newest
        modification time up to it."""
        since = _as_datetime(bookmark)
        groups: list[list[tuple[Path, dt.datetime]]] = []
        group_bytes = 0
        for path in self._paths(self._specs[stream.name]):
            modified = _EPOCH + dt.timedelta(microseconds=path.stat().st_mtime_ns // 1000)
            if since is not None and modified <= since:
                continue
            size = path.stat().st_size
            if groups and target_bytes is not None and group_bytes + size <= target_bytes:
                groups[-1].append((path, modified))
                group_bytes += size
            else:
                groups.append([(path, modified)])
                group_bytes = size
        planned: list[Partition] = []
        for files in groups:
            label = files[0][0].name
            if len(files) > 1:
                label = f"{label} .. {files[-1][0].name} ({len(files)} files)"
            planned.append(
                Partition(
                    stream,
                    len(planned),
                    label,
                    {"files": [{"path": str(p), "modified": m.isoformat()} for p, m in files]},
                    bookmark=files[-1][1].isoformat(),
                )
            )
        return planned

    def read_partition(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """The rows of the partition's files, with their ``_sdc_source_file`` and
        ``_sdc_modified_at``."""
        stream = partition.stream
        spec = self._specs[stream.name]
        fields = [f for f in stream.schema if f.name not in (SOURCE_FILE, MODIFIED_AT)]
        parse_types = {f.name: (pa.string() if f.type == JSON_TYPE else f.type) for f in fields}
        read, parse = self._options(spec)
        for file in partition.spec["files"]:
            modified = dt.datetime.fromisoformat(str(file["modified"]))
            yield from self._read_file(
                stream, Path(str(file["path"])), modified, parse_types, read, parse
            )
