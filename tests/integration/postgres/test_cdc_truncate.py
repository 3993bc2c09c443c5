"""A TRUNCATE in a LOG_BASED stream of tap-dativo-postgres: a truncate record (every key
null, ``_sdc_deleted_at`` set) at its place among its transaction's changes. In process
(`run`) target-dativo-iceberg empties the mirror there and target-dativo-parquet logs it;
the Singer tap refuses it with a ReadError and its state never passes it (docs/cdc.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_iceberg.writer import IcebergWriter, open_catalog
from target_dativo_parquet.writer import ParquetWriter

from .server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_cdc_truncate"
STREAM = f"{SCHEMA}-items"
SLOT = "dativo_test_cdc_truncate"
METADATA = {STREAM: {"replication-method": "LOG_BASED"}}


def _drop(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]).fetchone():
        conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
    conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


@pytest.fixture()
def items() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop(conn)
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, name text, qty int)")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(
            f"INSERT INTO {SCHEMA}.items SELECT g, 'item ' || g, g FROM generate_series(1, 200) g"
        )
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop(conn)


def _execute(dsn: str, *transactions: list[str]) -> None:
    """Each list of statements in one transaction."""
    with psycopg.connect(dsn) as conn:
        for statements in transactions:
            for statement in statements:
                conn.execute(statement)
            conn.commit()


#: Changes before, around and after a TRUNCATE: a transaction that changes rows and then
#: truncates (its earlier changes must vanish), one that truncates and then inserts (its
#: later rows stay), and one after.
CHURN = (
    [
        f"UPDATE {SCHEMA}.items SET qty = -1 WHERE id = 1",
        f"DELETE FROM {SCHEMA}.items WHERE id = 2",
    ],
    [
        f"INSERT INTO {SCHEMA}.items VALUES (1000, 'doomed', 0)",
        f"TRUNCATE {SCHEMA}.items",
        f"INSERT INTO {SCHEMA}.items VALUES (1, 'after', 10), (2, 'after', 20)",
    ],
    [
        f"INSERT INTO {SCHEMA}.items VALUES (3, 'later', 30)",
        f"UPDATE {SCHEMA}.items SET qty = 11 WHERE id = 1",
    ],
)


def _source(dsn: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT id, name, qty FROM {SCHEMA}.items").fetchall()
    return {r[0]: tuple(r) for r in rows}


def _config(dsn: str) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "filter_schemas": [SCHEMA],
        "accelerator": "python",
        "replication_slot": SLOT,
        "max_parallelism": 1,
    }


def test_a_truncate_mid_stream_empties_the_iceberg_mirror_there(items: str, tmp_path: Path) -> None:
    target = {"warehouse": str(tmp_path / "wh"), "load_method": "upsert", "hard_delete": True}
    store = LocalStateStore(tmp_path / "state")

    def once() -> None:
        run(
            PostgresReader,
            IcebergWriter,
            source_config=_config(items),
            destination_config=target,
            state_store=store,
            state_id="test:truncate",
            metadata=METADATA,
        )

    once()
    _execute(items, *CHURN)
    once()
    rows = open_catalog(target).load_table(f"singer.{SCHEMA}_items").scan().to_arrow()
    mirror = {r["id"]: (r["id"], r["name"], r["qty"]) for r in rows.to_pylist()}
    assert rows.num_rows == len(mirror)
    assert (
        mirror == _source(items) == {1: (1, "after", 11), 2: (2, "after", 20), 3: (3, "later", 30)}
    )
    # Later changes still apply after the truncate, on the next run too.
    _execute(items, [f"DELETE FROM {SCHEMA}.items WHERE id = 2"], [f"TRUNCATE {SCHEMA}.items"])
    once()
    assert open_catalog(target).load_table(f"singer.{SCHEMA}_items").scan().to_arrow().num_rows == 0


def test_a_truncate_is_a_row_of_the_parquet_change_log(items: str, tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    for n in (1, 2):
        if n == 2:
            _execute(items, *CHURN)
        run(
            PostgresReader,
            ParquetWriter,
            source_config=_config(items),
            destination_config={"path": str(tmp_path / f"out{n}")},
            state_store=store,
            state_id="test:truncate",
            metadata=METADATA,
        )
    files = [str(p) for p in (tmp_path / "out2").rglob("*.parquet") if not p.name.startswith(".")]
    log = ds.dataset(files).to_table().to_pylist()  # the files keep the change order
    truncates = [r for r in log if r["id"] is None]
    assert len(truncates) == 1
    assert truncates[0]["_sdc_deleted_at"] is not None and truncates[0]["name"] is None
    mirror: dict[int, tuple[Any, ...]] = {}
    for row in sorted(log, key=lambda r: r["_sdc_lsn"]):  # stable: a transaction's order
        if row["_sdc_deleted_at"] is None:
            mirror[row["id"]] = (row["id"], row["name"], row["qty"])
        elif row["id"] is None:
            mirror.clear()
        else:
            mirror.pop(row["id"], None)
    assert mirror == _source(items)


def _tap(tmp_path: Path, state: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    config = {"dsn": pg_dsn(), "filter_schemas": [SCHEMA], "replication_slot": SLOT}
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
            entry["replication_method"] = "LOG_BASED"
            for meta in entry["metadata"]:
                if not meta["breadcrumb"]:
                    meta["metadata"]["selected"] = entry["tap_stream_id"] == STREAM
                    meta["metadata"]["replication-method"] = "LOG_BASED"
        (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    args += ["--catalog", str(tmp_path / "catalog.json")]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        args += ["--state", str(tmp_path / "state.json")]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _messages(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_the_singer_tap_stops_at_a_truncate_with_a_clear_error(items: str, tmp_path: Path) -> None:
    first = _tap(tmp_path, None)
    assert first.returncode == 0, first.stderr[-2000:]
    state = [m for m in _messages(first) if m["type"] == "STATE"][-1]["value"]
    copied = state["bookmarks"][STREAM]["replication_key_value"]
    _execute(items, *CHURN)
    second = _tap(tmp_path, state)
    assert second.returncode != 0
    assert "truncated" in second.stderr and "a Singer record cannot carry a TRUNCATE" in (
        second.stderr
    )
    messages = _messages(second)
    assert all(m["record"]["id"] is not None for m in messages if m["type"] == "RECORD")
    # The state never passes the TRUNCATE: here it stays where the run started.
    lsns = [
        m["value"]["bookmarks"][STREAM]["replication_key_value"]
        for m in messages
        if m["type"] == "STATE"
    ]
    assert lsns and set(lsns) == {copied}


def test_a_keyless_tables_truncate_is_an_all_null_row_of_its_log(
    items: str, tmp_path: Path
) -> None:
    _execute(
        items,
        [
            f"CREATE TABLE {SCHEMA}.events (kind text NOT NULL, n int)",
            f"ALTER TABLE {SCHEMA}.events REPLICA IDENTITY FULL",
            f"INSERT INTO {SCHEMA}.events VALUES ('a', 1)",
        ],
    )
    store = LocalStateStore(tmp_path / "state")
    stream = f"{SCHEMA}-events"
    for n in (1, 2):
        if n == 2:
            _execute(
                items,
                [f"TRUNCATE {SCHEMA}.events", f"INSERT INTO {SCHEMA}.events VALUES ('b', 2)"],
            )
        run(
            PostgresReader,
            ParquetWriter,
            source_config=_config(items),
            destination_config={"path": str(tmp_path / f"out{n}")},
            state_store=store,
            state_id="test:truncate-keyless",
            metadata={stream: {"replication-method": "LOG_BASED"}},
            select=[f"{stream}.*"],
        )
    files = [str(p) for p in (tmp_path / "out2").rglob("*.parquet") if stream in str(p)]
    log = ds.dataset(files).to_table().to_pylist()
    assert [(r["kind"], r["n"], r["_sdc_deleted_at"] is not None) for r in log] == [
        (None, None, True),
        ("b", 2, False),
    ]
