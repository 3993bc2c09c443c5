"""A connection lost mid-read (the reading backend terminated from another connection), on
the Python and Rust paths and in parallel reads: an incremental read resumes after its last
key; a full-table or parallel read fails with one DativoError naming the stream and the
rows read; the first real error is the one reported."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dativo_bridge.errors import DativoError
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres.reader import PostgresReader

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_loss"
ROWS = 300_000
STREAM = f"{SCHEMA}-big"

ACCELERATORS = [
    "python",
    pytest.param(
        "rust",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("dativo_accel") is None,
            reason="the dativo_accel extension is not installed",
        ),
    ),
]


@pytest.fixture(scope="module", autouse=True)
def big_table() -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.big (id int PRIMARY KEY, k int NOT NULL, t text)")
        conn.execute(
            f"INSERT INTO {SCHEMA}.big SELECT g, g / 10, repeat('x', 200) "
            f"FROM generate_series(1, {ROWS}) g"
        )
        conn.execute(f"ANALYZE {SCHEMA}.big")


def _kill(query: str, state: str) -> None:
    """Terminate one backend of this database whose statement starts with ``query``."""
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND query LIKE %s AND state = %s LIMIT 1) AS one",
            [query, state],
        ).fetchall()
    assert killed == [(True,)], f"no backend running {query!r} ({state}) to terminate"


def kill_copy() -> None:
    _kill(f'COPY (SELECT %"{SCHEMA}"."big"%', "active")


def kill_snapshot_holder() -> None:
    """Once all 4 workers run their COPY (so all imported the snapshot)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE %s",
                [f'COPY (SELECT %"{SCHEMA}"."big"%'],
            ).fetchone()
            if row and row[0] >= 4:
                break
            time.sleep(0.05)
    _kill("SELECT pg_export_snapshot()", "idle in transaction")


@pytest.fixture
def open_reader() -> Iterator[Any]:
    readers: list[PostgresReader] = []

    def make(accelerator: str, **settings: Any) -> tuple[PostgresReader, StreamInfo]:
        reader = PostgresReader()
        reader.open(
            {
                "dsn": pg_dsn(),
                "filter_schemas": [SCHEMA],
                "accelerator": accelerator,
                "batch_size_bytes": 64 * 1024,
                "max_parallelism": 1,
                **settings,
            }
        )
        readers.append(reader)
        [info] = reader.discover()
        return reader, info

    yield make
    for reader in readers:
        reader.close()


def read_killing(reader: PostgresReader, info: StreamInfo, kill: Any = kill_copy) -> list[int]:
    """Every id read, terminating a backend once the first batch has arrived."""
    ids: list[int] = []
    for number, batch in enumerate(reader.read(info, None)):
        ids.extend(batch.column("id").to_pylist())
        if number == 0:
            kill()
    return ids


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_an_incremental_read_resumes_after_its_last_key_group(
    accelerator: str, open_reader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reader, info = open_reader(accelerator)
    info = dataclasses.replace(info, replication_key="k", replication_method="INCREMENTAL")
    with caplog.at_level(logging.WARNING, logger="dativo.postgres"):
        ids = read_killing(reader, info)
    # Batches hold whole key groups: resuming after the last one yielded repeats nothing.
    assert sorted(ids) == list(range(1, ROWS + 1))
    [warning] = [r.getMessage() for r in caplog.records if "reconnected" in r.getMessage()]
    assert f"stream '{STREAM}'" in warning
    assert "resuming after k = " in warning


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_an_incremental_read_gives_up_after_max_reconnects(
    accelerator: str, open_reader: Any
) -> None:
    reader, info = open_reader(accelerator, max_reconnects=0)
    info = dataclasses.replace(info, replication_key="k", replication_method="INCREMENTAL")
    with pytest.raises(DativoError) as caught:
        read_killing(reader, info)
    message = str(caught.value)
    assert message.startswith(f"stream '{STREAM}': the connection to PostgreSQL was lost")
    assert "max_reconnects 0" in message
    assert "\n" not in message


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_a_full_table_read_fails_with_one_clear_line(accelerator: str, open_reader: Any) -> None:
    reader, info = open_reader(accelerator)
    with pytest.raises(DativoError) as caught:
        read_killing(reader, info)
    message = str(caught.value)
    assert message.startswith(f"stream '{STREAM}': the connection to PostgreSQL was lost")
    assert "row(s) had been read" in message
    assert "cannot resume mid-way without duplicates" in message
    assert "\n" not in message


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_a_parallel_read_reports_the_lost_connection(accelerator: str, open_reader: Any) -> None:
    reader, info = open_reader(accelerator, max_parallelism=4, pages_per_partition=2000)
    with pytest.raises(DativoError) as caught:
        read_killing(reader, info)
    message = str(caught.value)
    assert message.startswith(f"stream '{STREAM}': the connection to PostgreSQL was lost")
    assert "a parallel read" in message
    assert "\n" not in message


def test_losing_the_snapshot_holder_after_the_workers_started_loses_nothing(
    open_reader: Any,
) -> None:
    """Python workers hold the imported snapshot themselves; the dead coordinator's
    ROLLBACK at the end must not turn a complete read into an AdminShutdown."""
    reader, info = open_reader("python", max_parallelism=4, pages_per_partition=2000)
    ids = read_killing(reader, info, kill=kill_snapshot_holder)
    assert sorted(ids) == list(range(1, ROWS + 1))


def test_a_worker_slow_to_start_still_gets_the_snapshot(
    open_reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No batch is yielded before every worker imported the snapshot: a worker whose
    connection comes late is not left without it when the coordinator dies after the
    first batch (it was an error whenever the kill came before the last import)."""
    import tap_dativo_postgres.reader as module

    reader, info = open_reader("python", max_parallelism=4, pages_per_partition=2000)
    real = module.connect
    calls: list[str] = []
    lock = threading.Lock()

    def slow_last(config: Any) -> Any:
        with lock:
            calls.append(threading.current_thread().name)
            late = threading.current_thread().name == "dativo-pg-3"
        if late:
            time.sleep(1.5)
        return real(config)

    monkeypatch.setattr(module, "connect", slow_last)

    def kill_now() -> None:
        _kill("SELECT pg_export_snapshot()", "idle in transaction")

    ids = read_killing(reader, info, kill=kill_now)
    assert "dativo-pg-3" in calls
    assert sorted(ids) == list(range(1, ROWS + 1))
