"""Meltano's `select:` and `metadata:` on tap-dativo-postgres's discovered catalog: the
catalog Meltano gives back with --catalog selects columns, keeps exact types, and makes
the stream incremental (a second `meltano run` reads only the new rows). And `dativo run`
warns, once per plugin, when meltano.yml does not declare the capabilities that make
Meltano pass --catalog and --state."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
import yaml

from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import BIN, dativo_run, peer_venv, read_parquet_dir, script, write_project

SCHEMA = "dativo_disc_melt"
STREAM = f"{SCHEMA}-orders"


@pytest.fixture(scope="module")
def meltano() -> Path:
    beside = BIN / "meltano"
    return beside if beside.exists() else peer_venv("meltano>=4,<5", "meltano", "uv")


def _meltano(exe: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(exe), "--environment", "test", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done


def _project(root: Path) -> None:
    """Plugins already installed (this Python's console scripts): no pip_url to install."""
    data = {
        "version": 1,
        "default_environment": "test",
        "environments": [{"name": "test"}],
        "plugins": {
            "extractors": [
                {
                    "name": "tap-dativo-postgres",
                    "namespace": "tap_dativo_postgres",
                    "executable": script("tap-dativo-postgres"),
                    "capabilities": ["catalog", "state", "discover", "about"],
                    "config": {"dsn": pg_dsn(), "filter_schemas": [SCHEMA]},
                    "select": [f"{STREAM}.id", f"{STREAM}.amount", f"{STREAM}.updated_at"],
                    "metadata": {STREAM: {"replication-key": "updated_at"}},
                }
            ],
            "loaders": [
                {
                    "name": "target-dativo-parquet",
                    "namespace": "target_dativo_parquet",
                    "executable": script("target-dativo-parquet"),
                    "capabilities": ["about"],
                    "config": {"path": str(root / "out")},
                }
            ],
        },
    }
    (root / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))


def _insert(first: int, last: int) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.orders SELECT g, g * 1.25, 'n' || g, "
            "timestamptz '2026-01-01' + g * interval '1 minute' "
            "FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )


def test_meltano_select_and_metadata_round_trip(meltano: Path, tmp_path: Path) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.orders (id int PRIMARY KEY, amount numeric(12,2), "
            "note text, updated_at timestamptz)"
        )
        conn.execute(f"CREATE VIEW {SCHEMA}.notes AS SELECT id, note FROM {SCHEMA}.orders")
    _insert(1, 100)
    _project(tmp_path)

    dumped = _meltano(meltano, tmp_path, "invoke", "--dump=catalog", "tap-dativo-postgres")
    catalog = {s["tap_stream_id"]: s for s in json.loads(dumped.stdout)["streams"]}
    orders = catalog[STREAM]
    assert orders["schema"]["properties"]["amount"]["precision"] == 12
    meta = {tuple(m["breadcrumb"]): m["metadata"] for m in orders["metadata"]}
    assert meta[()]["selected"] is True and meta[()]["replication-key"] == "updated_at"
    assert meta[("properties", "note")]["selected"] is False
    assert meta[("properties", "amount")]["sql-datatype"] == "numeric(12,2)"
    notes = {tuple(m["breadcrumb"]): m["metadata"] for m in catalog[f"{SCHEMA}-notes"]["metadata"]}
    assert notes[()]["selected"] is False and notes[()]["is-view"] is True

    _meltano(meltano, tmp_path, "run", "tap-dativo-postgres", "target-dativo-parquet")
    _insert(101, 120)
    _meltano(meltano, tmp_path, "run", "tap-dativo-postgres", "target-dativo-parquet")
    table = read_parquet_dir(tmp_path / "out" / STREAM)
    assert table.schema.names == ["id", "amount", "updated_at"]
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    ids = sorted(table.column("id").to_pylist())
    # Incremental: the second run resumes at >= the bookmark (row 100 again), no more.
    assert ids == [*range(1, 101), *range(100, 121)], "the second run re-read the table"


def test_dativo_run_warns_once_per_plugin_lacking_capabilities(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("id,amount\n1,2.5\n")
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-csv", "config": {"files": [{"stream": "o", "path": "orders.csv"}]}}],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    done = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet")
    warned = [line for line in done.stderr.splitlines() if "does not declare the capab" in line]
    # The loader lacks only descriptive capabilities: Meltano invokes it the same way.
    assert len(warned) == 1, done.stderr
    (tap_line,) = warned
    assert "plugin 'tap-dativo-csv'" in tap_line and "without --catalog/--state" in tap_line
    assert "capabilities: [catalog, state, discover" in tap_line
    assert read_parquet_dir(tmp_path / "out" / "o").num_rows == 1
