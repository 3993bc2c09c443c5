"""CSV streams as partitions (dativo_bridge.engines.partitions): one file each.

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

    def partitions(self, stream: StreamInfo, bookmark: Any | None) -> Sequence[Partition]:
        """The files after ``bookmark``, oldest first (each carries the bookmark its read
        completes, the newest modification time up to it)."""
        since = _as_datetime(bookmark)
        planned: list[Partition] = []
        for path in self._paths(self._specs[stream.name]):
            modified = _EPOCH + dt.timedelta(microseconds=path.stat().st_mtime_ns // 1000)
            if since is not None and modified <= since:
                continue
            planned.append(
                Partition(
                    stream,
                    len(planned),
                    path.name,
                    {"path": str(path), "modified": modified.isoformat()},
                    bookmark=modified.isoformat(),
                )
            )
        return planned

    def read_partition(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """The rows of one file, with its ``_sdc_source_file`` and ``_sdc_modified_at``."""
        stream = partition.stream
        spec = self._specs[stream.name]
        fields = [f for f in stream.schema if f.name not in (SOURCE_FILE, MODIFIED_AT)]
        parse_types = {f.name: (pa.string() if f.type == JSON_TYPE else f.type) for f in fields}
        read, parse = self._options(spec)
        modified = dt.datetime.fromisoformat(str(partition.spec["modified"]))
        yield from self._read_file(
            stream, Path(str(partition.spec["path"])), modified, parse_types, read, parse
        )
