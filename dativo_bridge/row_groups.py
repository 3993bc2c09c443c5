"""Rows gathered into Parquet row groups by the file writers.

pyarrow writes every ``write_batch``/``write_table`` call as a row group of its own, and
readers yield small batches (a few MiB), so without gathering a file's row groups are as
small as the reader's batches whatever ``row_group_rows`` says. A writer keeps one
:class:`RowGroup` per open file and writes it when it holds ``row_group_rows`` rows, when
its rows reach the writer's memory bound (``row_group_mb``), or when the file would reach
its target size with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # row_group_settings is read by --about, which must not import pyarrow
    import pyarrow as pa

#: Default of the writers' ``row_group_mb`` setting.
ROW_GROUP_MB = 32
#: Row groups of Iceberg data files (no setting there): at most pyarrow's default row
#: count, ended early once the gathered rows take ROW_GROUP_MB of Arrow memory.
ICEBERG_ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = ROW_GROUP_MB * 1024 * 1024


def row_group_settings() -> dict[str, dict[str, object]]:
    """The JSON schema of ``row_group_rows`` and ``row_group_mb`` (one wording for every
    Parquet-writing target)."""
    return {
        "row_group_rows": {
            "type": "integer",
            "default": 1_000_000,
            "minimum": 1,
            "description": (
                "Rows per Parquet row group at most; a row group also ends once the rows "
                "gathered for it reach row_group_mb of Arrow memory, and when its file ends "
                "(a commit ends the open files)."
            ),
        },
        "row_group_mb": {
            "type": "number",
            "default": ROW_GROUP_MB,
            "exclusiveMinimum": 0,
            "description": (
                "Arrow memory the rows gathered for row groups may take, across all the "
                "stream's open files (partition_by folders): a row group ends early when "
                "the stream's gathered rows reach it, so the writer's memory stays bounded."
            ),
        },
    }


@dataclass
class RowGroup:
    """The rows gathered for the next row group of one open file."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    #: Arrow bytes already written to the file: with the file's size, its ratio of bytes
    #: written to Arrow bytes (what the gathered rows will add to it).
    flushed_bytes: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Gather ``batch`` (at most the rows the row group has room for)."""
        self.batches.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def take(self) -> pa.Table | None:
        """The gathered rows as one table (None if there are none); the group restarts."""
        if not self.batches:
            return None
        import pyarrow as pa

        table = pa.Table.from_batches(self.batches)
        self.flushed_bytes += self.bytes
        self.batches, self.rows, self.bytes = [], 0, 0
        return table

    def fills(self, written: int, target: int) -> bool:
        """Whether a file of ``written`` bytes reaches ``target`` with the gathered rows."""
        ratio = written / self.flushed_bytes if self.flushed_bytes else 1.0
        return written + self.bytes * ratio >= target
