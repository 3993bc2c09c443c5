"""tap-dativo-postgres LOG_BASED as a Singer tap (the CLI, as a shell pipe runs it): the
SCHEMA carries the change columns, STATE the LSN, and the slot is confirmed up to the LSN
of the state the tap was started with, never to what it merely read."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_cdc_singer"
STREAM = f"{SCHEMA}-orders"
SLOT = "dativo_test_cdc_singer"


@pytest.fixture()
def orders() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.orders (id int PRIMARY KEY, qty int NOT NULL)")
        conn.execute(f"INSERT INTO {SCHEMA}.orders SELECT g, g FROM generate_series(1, 50) g")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
        ).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _tap(tmp_path: Path, config: dict[str, Any], state: dict[str, Any] | None) -> list[dict]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = [
        sys.executable,
        "-c",
        "from tap_dativo_postgres.tap import TapDativoPostgres; TapDativoPostgres.cli()",
        "--config",
        str(tmp_path / "config.json"),
    ]
    if not (tmp_path / "catalog.json").exists():
        out = subprocess.run([*args, "--discover"], capture_output=True, check=True, text=True)
        catalog = json.loads(out.stdout)
        for entry in catalog["streams"]:
            entry["replication_method"] = "LOG_BASED"  # what singer-sdk reads
            for meta in entry["metadata"]:
                if not meta["breadcrumb"]:
                    meta["metadata"]["selected"] = entry["tap_stream_id"] == STREAM
                    meta["metadata"]["replication-method"] = "LOG_BASED"
        (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    args += ["--catalog", str(tmp_path / "catalog.json")]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        args += ["--state", str(tmp_path / "state.json")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _slot(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [SLOT],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _lsn(messages: list[dict]) -> int:
    state = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    bookmark = state["bookmarks"][STREAM]
    assert bookmark["replication_key"] == "_sdc_lsn"
    return int(bookmark["replication_key_value"])


def test_singer_tap_log_based(orders: str, tmp_path: Path) -> None:
    config = {"dsn": orders, "filter_schemas": [SCHEMA], "replication_slot": SLOT}
    first = _tap(tmp_path, config, None)
    schema = next(m for m in first if m["type"] == "SCHEMA")
    assert {"_sdc_lsn", "_sdc_deleted_at", "_sdc_committed_at"} <= set(
        schema["schema"]["properties"]
    )
    assert schema["bookmark_properties"] == ["_sdc_lsn"]
    records = [m["record"] for m in first if m["type"] == "RECORD"]
    assert sorted(r["id"] for r in records) == list(range(1, 51))
    copied = _lsn(first)
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.orders SET qty = 0 WHERE id = 1")
        conn.execute(f"DELETE FROM {SCHEMA}.orders WHERE id = 2")
    second = _tap(
        tmp_path,
        config,
        {"bookmarks": {STREAM: {"replication_key": "_sdc_lsn", "replication_key_value": copied}}},
    )
    changes = [m["record"] for m in second if m["type"] == "RECORD"]
    assert [(r["id"], r["_sdc_deleted_at"] is not None) for r in changes] == [(1, False), (2, True)]
    read = _lsn(second)
    assert read > copied
    # Started from `copied`: that is what the destination had made durable.
    assert _slot(orders) == copied
    third = _tap(
        tmp_path,
        config,
        {"bookmarks": {STREAM: {"replication_key": "_sdc_lsn", "replication_key_value": read}}},
    )
    assert [m for m in third if m["type"] == "RECORD"] == []
    assert _slot(orders) == read


def test_singer_tap_log_based_batch_files(orders: str, tmp_path: Path) -> None:
    import pyarrow.ipc as ipc

    config = {
        "dsn": orders,
        "filter_schemas": [SCHEMA],
        "replication_slot": SLOT,
        "batch_config": {
            "encoding": {"format": "arrow"},
            "batch_size": 1000,
            "storage": {"root": (tmp_path / "batches").as_uri()},
        },
    }
    first = _tap(tmp_path, config, None)
    copied = _lsn(first)
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {SCHEMA}.orders WHERE id = 3")
    state = {
        "bookmarks": {STREAM: {"replication_key": "_sdc_lsn", "replication_key_value": copied}}
    }
    second = _tap(tmp_path, config, state)
    assert [m for m in second if m["type"] == "RECORD"] == []
    files = [u for m in second if m["type"] == "BATCH" for u in m["manifest"]]
    assert len(files) == 1
    table = ipc.open_file(files[0].removeprefix("file://")).read_all()
    assert table.column("id").to_pylist() == [3]
    assert table.column("_sdc_deleted_at").null_count == 0
    assert _lsn(second) > copied
