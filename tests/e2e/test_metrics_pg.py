"""The run's metrics count a PostgreSQL reader's reconnects as retries: a connection lost
mid-read (its backend terminated) and resumed shows as dativo_run_retries_total 1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa

from dativo_bridge.interfaces import ArrowWriter, CommitResult
from dativo_bridge.metrics import MetricsConfig, RunMetrics
from dativo_bridge.runner import run
from tap_dativo_postgres.reader import PostgresReader
from tests.integration.postgres.server import fresh_schema, pg_dsn

SCHEMA = "dativo_metrics_pg"
ROWS = 200_000


class SlowMemory(ArrowWriter):
    """Holds the reader back (the run's queue is bounded), so its COPY is still running."""

    def write(self, batch: pa.RecordBatch) -> None:
        time.sleep(0.002)
        self.pending = getattr(self, "pending", 0) + batch.num_rows

    def commit(self) -> CommitResult:
        rows, self.pending = getattr(self, "pending", 0), 0
        return CommitResult(rows=rows)


def _kill_copy() -> bool:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND query LIKE %s AND state = 'active' LIMIT 1) AS one",
            [f'COPY (SELECT %"{SCHEMA}"."big"%'],
        ).fetchall()
    return killed == [(True,)]


def test_a_reconnect_is_counted_as_a_retry(tmp_path: Path) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.big (id int PRIMARY KEY, t text)")
        conn.execute(
            f"INSERT INTO {SCHEMA}.big SELECT g, repeat('x', 200) FROM generate_series(1, {ROWS}) g"
        )
    killed: list[bool] = []

    def progress(streams: Any, elapsed: float) -> None:
        if not killed and sum(s.rows for s in streams.values()) > 0:
            killed.append(_kill_copy())

    path = tmp_path / "m.prom"
    result = run(
        PostgresReader,
        SlowMemory,
        source_config={
            "dsn": pg_dsn(),
            "filter_schemas": [SCHEMA],
            "batch_size_bytes": 64 * 1024,
            "max_parallelism": 1,
        },
        metadata={f"{SCHEMA}-big": {"replication-method": "INCREMENTAL", "replication-key": "id"}},
        progress=progress,
        progress_interval=1e-6,
        metrics=RunMetrics(MetricsConfig(file=str(path))),
    )
    assert killed == [True]
    assert result.rows >= ROWS
    assert result.retries == 1
    assert "dativo_run_retries_total 1\n" in path.read_text()
