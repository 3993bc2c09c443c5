"""PostgreSQL full-table reads as partitions (dativo_bridge.engines.partitions): ctid page
ranges, all read under one snapshot that the driver exported and holds open.

``partitions`` opens a coordinator connection, exports its snapshot and keeps the
transaction open until the reader is closed: a worker's ``read_partition`` imports that
snapshot (``SET TRANSACTION SNAPSHOT``), so every range sees the same table state however
late or how often (a retry) it runs. Once the coordinator is gone, a range that has not run
fails (``invalid snapshot identifier``) instead of reading another state of the table. The
last range is open-ended: pages added after planning are rows the snapshot does not see.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from dativo_bridge.engines.partitions import Partition
from dativo_bridge.errors import ConfigError
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres import accel
from tap_dativo_postgres import copy as pgcopy
from tap_dativo_postgres.batches import finite_values
from tap_dativo_postgres.reader import PostgresReader, _and, _repeatable_read, connect

logger = logging.getLogger("dativo.postgres")


class PartitionedPostgresReader(PostgresReader):
    """A PostgresReader that also plans and reads ctid-range partitions."""

    def open(self, config: Any) -> None:
        super().open(config)
        self._coordinators: list[psycopg.Connection] = []

    def partitions(self, stream: StreamInfo, bookmark: Any | None) -> Sequence[Partition]:
        """ctid ranges of ``pages_per_partition`` pages under one new exported snapshot.

        Raises:
            ConfigError: The stream is not a FULL_TABLE read of a table (views and
                incremental or log-based reads are not partitioned yet).
        """
        if stream.replication_method != "FULL_TABLE":
            raise ConfigError(
                f"stream '{stream.name}': the ray engine reads FULL_TABLE streams only so "
                f"far, not {stream.replication_method}; use the local engine"
            )
        table = self._table(stream)
        if table.kind not in ("r", "m"):
            raise ConfigError(
                f"stream '{stream.name}' is a view: ctid ranges need a table; use the local engine"
            )
        coordinator = connect(self.config)
        _repeatable_read(coordinator)
        exported = coordinator.execute("SELECT pg_export_snapshot()").fetchone()
        assert exported is not None
        snapshot = str(exported[0])
        self._coordinators.append(coordinator)
        pages = coordinator.execute(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [table.schema, table.table],
        ).fetchone()
        npages = int(pages[0]) if pages else 0
        step = self._pages_per_partition
        bounds = list(range(0, max(npages, 1), step))
        planned = []
        for i, lo in enumerate(bounds):
            hi = bounds[i + 1] if i + 1 < len(bounds) else None
            label = f"ctid [{lo},{hi if hi is not None else 'end'})"
            planned.append(Partition(stream, i, label, {"snapshot": snapshot, "lo": lo, "hi": hi}))
        logger.info(
            "stream '%s': %d pages in %d ctid range(s) under snapshot %s",
            stream.name,
            npages,
            len(planned),
            snapshot,
        )
        return planned

    def read_partition(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """The rows of one ctid range as of the driver's snapshot."""
        stream = partition.stream
        table = self._table(stream)
        plans = [table.column(name) for name in stream.schema.names]
        relation = sql.Identifier(table.schema, table.table)
        lo, hi, snapshot = partition.spec["lo"], partition.spec["hi"], partition.spec["snapshot"]
        ctid: list[sql.Composable] = [sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({lo},0)"))]
        if hi is not None:
            ctid.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({hi},0)")))
        condition = _and(self._where(stream, None) + ctid)
        where = f"stream '{stream.name}', {partition.label}"
        finite = finite_values(stream.schema, self._infinity)
        set_snapshot = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
        if self._rust_dsn is not None:
            setup = [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                set_snapshot.as_string(self._conn),
            ]
            query = accel.copy_query(relation, plans, condition, None)
            for batch in accel.read_copy_parallel(
                self._rust_dsn, [query], plans, self._batch_bytes, where, 1, setup, self._rust_tls
            ):
                yield finite(batch)
            return
        conn = connect(self.config)
        try:
            _repeatable_read(conn)
            conn.execute(set_snapshot)
            query = pgcopy.copy_query(relation, plans, condition, None)
            for batch in pgcopy.read_copy(conn, query, plans, self._batch_bytes, where):
                yield finite(batch)
            conn.rollback()
        finally:
            conn.close()

    def close(self) -> None:
        """Release the exported snapshots, then close as a PostgresReader does."""
        for coordinator in getattr(self, "_coordinators", []):
            with contextlib.suppress(psycopg.Error):
                coordinator.rollback()
            coordinator.close()
        self._coordinators = []
        super().close()
