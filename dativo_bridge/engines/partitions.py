"""The partition interface: how a reader lets an engine read one stream as independent
pieces, each on its own worker.

A reader opts in with two methods (:class:`PartitionedReader`): ``partitions(stream,
bookmark)``, called once on the driver, plans the pieces and holds whatever keeps them
consistent (PostgreSQL: the transaction that exported the snapshot every piece reads) until
the reader is closed (a reader that also takes ``target_bytes`` sizes them for the
target's file size: :func:`plan`); ``read_partition(partition)``, called on a worker by a
freshly opened reader, yields the piece's batches. Invariant: the union of the pieces is
exactly what ``read(stream, bookmark)`` would yield (each row in one piece), and a piece
read twice yields the same rows, so a retried task neither loses nor adds rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from dativo_bridge.interfaces import StreamInfo


@dataclass(frozen=True)
class Partition:
    """One piece of a stream's read: picklable, self-contained (a worker gets only it).

    Attributes:
        stream: The stream as the driver planned it (selected columns, metadata applied).
        index: The piece's position in the plan (0-based).
        label: What the piece is, for people (``ctid [0,128)``, a file name).
        spec: The reader's own description of the piece (plain, picklable values).
        bookmark: For an incremental stream, the bookmark a read of every partition up
            to this one (in plan order) completes; the run's STATE takes the last one's.
    """

    stream: StreamInfo
    index: int
    label: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    bookmark: Any = None


@runtime_checkable
class PartitionedReader(Protocol):
    """An ArrowReader whose streams can be read as partitions (see the module docstring)."""

    def partitions(self, stream: StreamInfo, bookmark: Any | None) -> Sequence[Partition]:
        """The pieces of ``stream`` read from ``bookmark`` (None: all of it)."""
        ...

    def read_partition(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """The batches of one piece, in the stream's declared schema."""
        ...


def plan(
    reader: PartitionedReader, stream: StreamInfo, bookmark: Any | None, target_bytes: int | None
) -> Sequence[Partition]:
    """``reader.partitions(stream, bookmark)``, sized for ``target_bytes`` (the target's
    file size) where the reader's ``partitions`` takes a ``target_bytes`` argument: each
    partition then holds about that much of the source's data by its size estimate, so a
    task writes about one file of at most the target size."""
    try:
        takes = "target_bytes" in inspect.signature(reader.partitions).parameters
    except (TypeError, ValueError):  # no signature to read: the plain call
        takes = False
    if takes and target_bytes is not None:
        return reader.partitions(stream, bookmark, target_bytes=target_bytes)  # type: ignore[call-arg]
    return reader.partitions(stream, bookmark)
