"""What `dativo run` tells a user when a LOG_BASED stream cannot be read: one line naming
the missing piece and the SQL that adds it (docs/cdc.md)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.server import fresh_schema, logical_decoding_missing, pg_dsn

from .helpers import dativo_run, write_project

SCHEMA = "dativo_cdcerr"
STREAM = f"{SCHEMA}-notes"


@pytest.mark.parametrize(
    ("setup", "settings", "expected"),
    [
        ("", {"publication": "dativo_no_such_pub"}, 'CREATE PUBLICATION "dativo_no_such_pub"'),
        (
            f"ALTER TABLE {SCHEMA}.notes REPLICA IDENTITY DEFAULT",
            {},
            f'ALTER TABLE "{SCHEMA}"."notes" REPLICA IDENTITY FULL',
        ),
        (f"ALTER TABLE {SCHEMA}.notes REPLICA IDENTITY NOTHING", {}, "REPLICA IDENTITY NOTHING"),
    ],
    ids=["publication", "toastable-default", "nothing"],
)
def test_dativo_run_names_what_is_missing(
    tmp_path: Path, setup: str, settings: dict[str, str], expected: str
) -> None:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.notes (id int PRIMARY KEY, body text)")
        conn.execute(f"ALTER TABLE {SCHEMA}.notes REPLICA IDENTITY FULL")
        if setup:
            conn.execute(setup)
    tap = {
        "name": "tap-dativo-postgres",
        "config": {
            "dsn": pg_dsn(),
            "filter_schemas": [SCHEMA],
            "replication_slot": "dativo_test_cdcerr",
            **settings,
        },
        "metadata": {STREAM: {"replication-method": "LOG_BASED"}},
    }
    target = {"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}
    project = write_project(tmp_path, [tap], [target])
    done = dativo_run(
        project,
        "tap-dativo-postgres",
        "target-dativo-parquet",
        "--state-dir",
        str(tmp_path / "state"),
        check=False,
    )
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'dativo_test_cdcerr'"
        ).fetchone():
            conn.execute("SELECT pg_drop_replication_slot('dativo_test_cdcerr')")
        conn.execute("DROP PUBLICATION IF EXISTS dativo_test_cdcerr")
