"""The partition interface: how a reader lets an engine read one stream as independent
pieces, each on its own worker.

A reader opts in with two methods (:class:`PartitionedReader`): ``partitions(stream,
bookmark)``, called once on the driver, plans the pieces and holds whatever keeps them
consistent (PostgreSQL: the transaction that exported the snapshot every piece reads) until
the reader is closed; ``read_partition(partition)``, called on a worker by a freshly opened
reader, yields the piece's batches. Invariant: the union of the pieces is exactly what
``read(stream, bookmark)`` would yield (each row in one piece), and a piece read twice
yields the same rows, so a retried task neither loses nor adds rows.
"""

from __future__ import annotations

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
