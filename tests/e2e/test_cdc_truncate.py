"""`dativo run` (the CLI) of tap-dativo-postgres LOG_BASED into target-dativo-iceberg
(upsert + hard_delete) across a TRUNCATE: the mirror is emptied where the source was, and
the changes after it land (docs/cdc.md, 'TRUNCATE')."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from target_dativo_iceberg.writer import open_catalog
from tests.integration.postgres.server import fresh_schema, logical_decoding_missing, pg_dsn

from .helpers import dativo_run, write_project

SCHEMA = "dativo_e2e_truncate"
STREAM = f"{SCHEMA}-items"
SLOT = "dativo_test_e2e_truncate"


def _drop(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]).fetchone():
        conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
    conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


@pytest.fixture()
def source() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop(conn)
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, name text, n int)")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(
            f"INSERT INTO {SCHEMA}.items SELECT g, 'r' || g, g FROM generate_series(1, 500) g"
        )
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop(conn)


def test_dativo_run_applies_a_truncate_mid_stream(source: str, tmp_path: Path) -> None:
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
    with psycopg.connect(source) as conn:
        conn.execute(f"UPDATE {SCHEMA}.items SET n = -1 WHERE id <= 10")
        conn.commit()
        conn.execute(f"TRUNCATE {SCHEMA}.items")
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (7, 'seven', 7), (8, 'eight', 8)")
        conn.commit()
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (9, 'nine', 9)")
        conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id = 8")
        conn.commit()
    done = dativo_run(project, "tap-dativo-postgres", "target-dativo-iceberg", *args)
    summary = json.loads(done.stdout)
    assert summary["state"]["bookmarks"][STREAM]["replication_key"] == "_sdc_lsn"
    rows = open_catalog(target).load_table(f"singer.{SCHEMA}_items").scan().to_arrow()
    mirror = sorted((r["id"], r["name"], r["n"]) for r in rows.to_pylist())
    with psycopg.connect(source) as conn:
        expected = sorted(conn.execute(f"SELECT id, name, n FROM {SCHEMA}.items").fetchall())
    assert mirror == expected == [(7, "seven", 7), (9, "nine", 9)]
