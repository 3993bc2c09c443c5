"""PostgreSQL reads as partitions (dativo_bridge.engines.partitions): ctid page ranges
(FULL_TABLE) or replication-key ranges (INCREMENTAL), all read under one snapshot that
the driver exported and holds open.

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
        #: pages_per_partition given in the settings wins over sizing for the target.
        self._pages_given = "pages_per_partition" in (config or {})

    def partitions(
        self, stream: StreamInfo, bookmark: Any | None, target_bytes: int | None = None
    ) -> Sequence[Partition]:
        """The stream's partitions under one new exported snapshot: ctid ranges of
        ``step`` pages for a FULL_TABLE read; for an INCREMENTAL read, replication-key
        ranges from ``bookmark`` (``>=``) to the largest key the snapshot holds (the
        bookmark the run ends with), split at quantiles into pieces of about as many rows
        as ``step`` pages hold, and the NULL keys on a first read.

        ``step`` is ``pages_per_partition`` when the settings give it; otherwise, with
        ``target_bytes`` (the target's file size), as many pages as hold that many bytes
        of the table (its relation size is the size estimate), so each partition is about
        one target file before compression; else the setting's default.

        Raises:
            ConfigError: A LOG_BASED stream, or a view (not partitioned yet).
        """
        if stream.replication_method not in ("FULL_TABLE", "INCREMENTAL"):
            raise ConfigError(
                f"stream '{stream.name}': the ray engine reads FULL_TABLE and INCREMENTAL "
                f"streams, not {stream.replication_method}; use the local engine"
            )
        table = self._table(stream)
        if table.kind not in ("r", "m"):
            raise ConfigError(
                f"stream '{stream.name}' is a view: partitions need a table; use the local engine"
            )
        coordinator = connect(self.config)
        _repeatable_read(coordinator)
        exported = coordinator.execute("SELECT pg_export_snapshot()").fetchone()
        assert exported is not None
        snapshot = str(exported[0])
        self._coordinators.append(coordinator)
        size = coordinator.execute(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "
            "greatest(c.reltuples, 0) / greatest(c.relpages, 1), "
            "current_setting('block_size')::int "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [table.schema, table.table],
        ).fetchone()
        npages, per_page, block = (
            (int(size[0]), float(size[1]), int(size[2])) if size else (0, 0.0, 8192)
        )
        step = self.pages_per_partition(target_bytes, block)
        if stream.replication_method == "INCREMENTAL" and stream.replication_key:
            rows = max(1, int(step * (per_page or 100.0)))
            planned = self._key_ranges(coordinator, stream, bookmark, snapshot, rows)
        else:
            planned = self._ctid_ranges(stream, npages, snapshot, step)
        logger.info(
            "stream '%s': %d partition(s) of %d page(s) (%.1f MiB) of %d under snapshot %s",
            stream.name,
            len(planned),
            step,
            step * block / 2**20,
            npages,
            snapshot,
        )
        return planned

    def pages_per_partition(self, target_bytes: int | None, block_size: int = 8192) -> int:
        """The pages a partition spans (see :meth:`partitions`)."""
        if self._pages_given or target_bytes is None:
            return self._pages_per_partition
        return max(1, -(-int(target_bytes) // max(1, block_size)))

    def _ctid_ranges(
        self, stream: StreamInfo, npages: int, snapshot: str, step: int
    ) -> list[Partition]:
        bounds = list(range(0, max(npages, 1), step))
        planned = []
        for i, lo in enumerate(bounds):
            hi = bounds[i + 1] if i + 1 < len(bounds) else None
            label = f"ctid [{lo},{hi if hi is not None else 'end'})"
            planned.append(Partition(stream, i, label, {"snapshot": snapshot, "lo": lo, "hi": hi}))
        return planned

    def _key_ranges(
        self,
        coordinator: psycopg.Connection,
        stream: StreamInfo,
        bookmark: Any | None,
        snapshot: str,
        rows_per_partition: int,
    ) -> list[Partition]:
        table = self._table(stream)
        relation = sql.Identifier(table.schema, table.table)
        key = sql.Identifier(str(stream.replication_key))
        where = _and([*self._where(stream, bookmark), sql.SQL("{k} IS NOT NULL").format(k=key)])
        assert where is not None
        found = coordinator.execute(
            sql.SQL("SELECT count(*), max({k}) FROM {r} WHERE {w}").format(
                k=key, r=relation, w=where
            )
        ).fetchone()
        count, newest = (int(found[0]), found[1]) if found else (0, None)
        bounds: list[Any] = [bookmark]
        pieces = -(-count // rows_per_partition)
        if pieces > 1:
            fractions = [i / pieces for i in range(1, pieces)]
            cuts = coordinator.execute(
                sql.SQL(
                    "SELECT percentile_disc({f}::float8[]) WITHIN GROUP (ORDER BY {k}) "
                    "FROM {r} WHERE {w}"
                ).format(f=sql.Literal(fractions), k=key, r=relation, w=where)
            ).fetchone()
            for cut in (cuts[0] if cuts else None) or []:
                if cut is not None and cut != bounds[-1]:
                    bounds.append(cut)
        spec = {"snapshot": snapshot, "nulls": False}
        planned = []
        if bookmark is None:  # a first read also delivers the rows without a key
            planned.append(Partition(stream, 0, "key IS NULL", {**spec, "nulls": True}))
        if count:
            for i, lo in enumerate(bounds):
                hi = bounds[i + 1] if i + 1 < len(bounds) else None
                label = (
                    f"key [{lo if lo is not None else 'start'},{hi if hi is not None else newest}]"
                )
                planned.append(
                    Partition(
                        stream, len(planned), label, {**spec, "from": lo, "below": hi}, newest
                    )
                )
        return planned

    def read_partition(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """The rows of one ctid range as of the driver's snapshot."""
        stream = partition.stream
        table = self._table(stream)
        plans = [table.column(name) for name in stream.schema.names]
        relation = sql.Identifier(table.schema, table.table)
        snapshot = partition.spec["snapshot"]
        condition = _and(self._where(stream, None) + _bounds(stream, partition))
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


def _bounds(stream: StreamInfo, partition: Partition) -> list[sql.Composable]:
    """The conditions that make one partition (see PartitionedPostgresReader.partitions)."""
    spec = partition.spec
    if "lo" in spec:
        ctid: list[sql.Composable] = [
            sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({spec['lo']},0)"))
        ]
        if spec["hi"] is not None:
            ctid.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({spec['hi']},0)")))
        return ctid
    key = sql.Identifier(str(stream.replication_key))
    if spec["nulls"]:
        return [sql.SQL("{k} IS NULL").format(k=key)]
    conditions: list[sql.Composable] = [sql.SQL("{k} IS NOT NULL").format(k=key)]
    if spec["from"] is not None:
        conditions.append(sql.SQL("{k} >= {v}").format(k=key, v=sql.Literal(spec["from"])))
    if spec["below"] is not None:
        conditions.append(sql.SQL("{k} < {v}").format(k=key, v=sql.Literal(spec["below"])))
    return conditions
