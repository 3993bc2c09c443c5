"""`dativo run` of tap-dativo-postgres LOG_BASED into target-dativo-iceberg (upsert +
hard_delete) killed with SIGKILL at random moments (during the initial copy, the change
read, a commit) while a churn of concurrent changes goes on, resumed each time: the slot
is never confirmed past what Iceberg committed, the committed LSN never goes back, and
once the churn stops the table equals the source table value for value."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from target_dativo_iceberg.writer import IcebergWriter, open_catalog
from tests.integration.postgres.server import fresh_schema, logical_decoding_missing, pg_dsn

from .helpers import dativo_run, env, script, write_project

SCHEMA = "dativo_cdckill"
STREAM = f"{SCHEMA}-items"
SLOT = "dativo_test_cdckill"
TRIALS = 20
KEYS = 3000
SEED = 1818


@pytest.fixture()
def source() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
        ).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")
        conn.execute(f"""CREATE TABLE {SCHEMA}.items (
            id bigint PRIMARY KEY, name text NOT NULL, n int, price numeric(12, 2))""")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"""INSERT INTO {SCHEMA}.items
            SELECT g, repeat('r', 200) || g, g, g * 0.25 FROM generate_series(1, {KEYS}) g""")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(50):  # a killed run's backend may hold the slot for a moment
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
            ).fetchone()
            if row is None or row[0] is None:
                break
            time.sleep(0.2)
        if conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
        ).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _churn(dsn: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Random inserts, updates (some of the key), deletes, multi-row and rolled-back
    transactions until ``stop``."""
    rng = random.Random(SEED)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            for _ in range(rng.randint(1, 5)):
                key = rng.randint(1, KEYS + 500)
                op = rng.random()
                if op < 0.4:
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.items VALUES (%s, %s, %s, %s) ON CONFLICT (id) "
                        "DO UPDATE SET name = EXCLUDED.name, n = EXCLUDED.n",
                        [key, f"ins {counts['txns']}", rng.randint(0, 99), rng.randint(0, 999)],
                    )
                elif op < 0.75:
                    conn.execute(
                        f"UPDATE {SCHEMA}.items SET n = n + 1, price = %s WHERE id = %s",
                        [rng.randint(0, 999), key],
                    )
                elif op < 0.8:
                    conn.execute(
                        f"UPDATE {SCHEMA}.items SET id = %s WHERE id = %s AND NOT EXISTS "
                        f"(SELECT 1 FROM {SCHEMA}.items WHERE id = %s)",
                        [key + 10_000, key, key + 10_000],
                    )
                else:
                    conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id = %s", [key])
            if rng.random() < 0.1:
                conn.rollback()
            else:
                conn.commit()
                counts["txns"] += 1
            time.sleep(0.002)


def _table_rows(warehouse: Path) -> dict[int, tuple[Any, ...]]:
    table = open_catalog({"warehouse": str(warehouse)}).load_table("singer.dativo_cdckill_items")
    rows = table.scan().to_arrow().to_pylist()
    mirror = {r["id"]: (r["name"], r["n"], r["price"]) for r in rows}
    assert len(mirror) == len(rows), "a key is in the table twice"
    assert all(r["_sdc_deleted_at"] is None for r in rows), "a deleted row is in the table"
    return mirror


def _source_rows(dsn: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT id, name, n, price FROM {SCHEMA}.items").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _slot_lsn(dsn: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [SLOT],
        ).fetchone()
    return int(row[0]) if row else None


def test_log_based_into_iceberg_killed_at_random_moments(source: str, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    target = {"warehouse": str(warehouse), "load_method": "upsert", "hard_delete": True}
    tap = {
        "name": "tap-dativo-postgres",
        "config": {
            "dsn": source,
            "filter_schemas": [SCHEMA],
            "replication_slot": SLOT,
            "batch_size_bytes": 64 * 1024,
            "max_parallelism": 2,
            "pages_per_partition": 20,
        },
        "select": [f"{STREAM}.*"],
        "metadata": {STREAM: {"replication-method": "LOG_BASED"}},
    }
    project = write_project(tmp_path, [tap], [{"name": "target-dativo-iceberg", "config": target}])
    args = ["--state-dir", str(tmp_path / "state"), "--checkpoint-rows", "500"]
    state_id = "test:tap-dativo-postgres-to-target-dativo-iceberg"
    command = [script("dativo"), "run", "tap-dativo-postgres", "target-dativo-iceberg"]
    command += ["--project", str(project), *args]
    rng = random.Random(SEED)
    stop = threading.Event()
    counts = {"txns": 0}
    churn = threading.Thread(target=_churn, args=(source, stop, counts), daemon=True)
    churn.start()
    committed: list[int] = [0]
    finished: list[float] = []  # seconds a run took when it was not killed
    kills = 0
    stalled = 0  # trials in a row that committed nothing new while no run has finished
    try:
        for trial in range(TRIALS):
            launched = time.monotonic()
            proc = subprocess.Popen(
                command,
                cwd=tmp_path,
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            # A moment within a run: runs that finished show how long one takes here
            # (about 1 s idle, several under load), so kills land mid-way either way.
            # On a loaded box even a whole window can pass before the first commit: while
            # no run has finished or committed, each such trial widens the next window.
            longest = 0.9 * min(finished) if finished else min(60.0, 3.5 * 1.5**stalled)
            time.sleep(rng.uniform(0.3, max(0.6, longest)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
            else:
                err = proc.stderr.read().decode() if proc.stderr else ""
                assert proc.returncode == 0, f"trial {trial}: {err[-3000:]}"
                finished.append(time.monotonic() - launched)
            state = IcebergWriter.recover_state({"warehouse": str(warehouse)}, state_id) or {}
            entry = (state.get("bookmarks") or {}).get(STREAM) or {}
            lsn = int(entry.get("replication_key_value") or 0)
            assert lsn >= committed[-1], f"trial {trial}: the committed LSN went back"
            stalled = stalled + 1 if lsn == committed[-1] and not finished else 0
            committed.append(lsn)
            slot = _slot_lsn(source)
            if lsn and slot is not None:
                assert slot <= lsn, (
                    f"trial {trial}: the slot was confirmed to {slot}, past the LSN Iceberg "
                    f"committed ({lsn})"
                )
    finally:
        stop.set()
        churn.join(timeout=30)
    assert kills >= TRIALS // 2, f"only {kills} of {TRIALS} runs were killed mid-way"
    assert committed[-1] > 0, "no run committed anything"
    assert counts["txns"] > 100, "the churn did not run"
    dativo_run(project, "tap-dativo-postgres", "target-dativo-iceberg", *args)
    assert _table_rows(warehouse) == _source_rows(source)


def test_dativo_run_confirms_the_slot_to_what_it_committed(source: str, tmp_path: Path) -> None:
    """After a completed run the slot is confirmed up to the LSN Iceberg committed (the
    runner acknowledges each durable STATE), not left at the LSN the run started from,
    and the summary reports the lag."""
    import json

    warehouse = tmp_path / "warehouse"
    target = {"warehouse": str(warehouse), "load_method": "upsert", "hard_delete": True}
    tap = {
        "name": "tap-dativo-postgres",
        "config": {"dsn": source, "filter_schemas": [SCHEMA], "replication_slot": SLOT},
        "select": [f"{STREAM}.*"],
        "metadata": {STREAM: {"replication-method": "LOG_BASED"}},
    }
    project = write_project(tmp_path, [tap], [{"name": "target-dativo-iceberg", "config": target}])
    args = ["--state-dir", str(tmp_path / "state"), "--json"]
    dativo_run(project, "tap-dativo-postgres", "target-dativo-iceberg", *args)  # the copy
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.items SET n = n + 1 WHERE id <= 100")
        conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id > {KEYS - 10}")
    done = dativo_run(project, "tap-dativo-postgres", "target-dativo-iceberg", *args)
    summary = json.loads(done.stdout)
    entry = summary["state"]["bookmarks"][STREAM]
    committed = int(entry["replication_key_value"])
    assert _slot_lsn(source) == committed
    assert isinstance(summary["replication_lag_bytes"], int)
    assert summary["replication_lag_bytes"] < 1024 * 1024
    assert _table_rows(warehouse) == _source_rows(source)
