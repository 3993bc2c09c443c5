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


CDC_SCHEMA = "dativo_metrics_cdc"
CDC_SLOT = "dativo_mtest_cdc"  # not dativo_test_%: other tests drop those


def _drop_cdc(conn: psycopg.Connection) -> None:
    if conn.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [CDC_SLOT]
    ).fetchone():
        conn.execute("SELECT pg_drop_replication_slot(%s)", [CDC_SLOT])
    conn.execute(f"DROP PUBLICATION IF EXISTS {CDC_SLOT}")


def test_the_slot_lag_of_a_log_based_run_is_a_metric(tmp_path: Path) -> None:
    import pytest

    from dativo_bridge.state import LocalStateStore
    from target_dativo_parquet.writer import ParquetWriter
    from tests.integration.postgres.server import logical_decoding_missing

    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(CDC_SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        _drop_cdc(conn)
        conn.execute(f"CREATE TABLE {CDC_SCHEMA}.items (id int PRIMARY KEY, n int)")
        conn.execute(f"ALTER TABLE {CDC_SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"INSERT INTO {CDC_SCHEMA}.items SELECT g, g FROM generate_series(1, 100) g")
    store = LocalStateStore(tmp_path / "state")
    path = tmp_path / "m.prom"
    try:
        results = []
        for number in (1, 2):
            results.append(
                run(
                    PostgresReader,
                    ParquetWriter,
                    source_config={
                        "dsn": pg_dsn(),
                        "filter_schemas": [CDC_SCHEMA],
                        "replication_slot": CDC_SLOT,
                        "max_parallelism": 1,
                    },
                    destination_config={"path": str(tmp_path / f"out{number}")},
                    state_store=store,
                    state_id="test:metrics-cdc",
                    metadata={f"{CDC_SCHEMA}-*": {"replication-method": "LOG_BASED"}},
                    metrics=RunMetrics(MetricsConfig(file=str(path))),
                )
            )
            with psycopg.connect(pg_dsn(), autocommit=True) as conn:
                conn.execute(f"UPDATE {CDC_SCHEMA}.items SET n = n + 1 WHERE id <= 10")
        lag = results[1].replication_lag
        assert lag is not None
        text = path.read_text()
        assert f"dativo_run_replication_lag_bytes {lag}\n" in text, text
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            _drop_cdc(conn)
