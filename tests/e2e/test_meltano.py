"""`meltano run` on a copy of this project: the demo pair, PostgreSQL -> Iceberg with
Meltano keeping the state, Arrow BATCH files, and a catalog from catalogs/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pyarrow.dataset as ds
import pytest
import yaml

from target_dativo_iceberg.writer import open_catalog
from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import BIN, REPO, peer_venv

COPY = [
    "pyproject.toml",
    "README.md",
    "meltano.yml",
    "dativo_bridge",
    "taps",
    "targets",
    "demo",
    "catalogs",
]


@pytest.fixture(scope="session")
def meltano() -> Path:
    """The Meltano the set-up installed next to dativo (scripts/test.sh), else Meltano
    (with uv for fast plugin installs) in its own venv, cached."""
    beside = BIN / "meltano"
    if beside.exists() and (BIN / "uv").exists():
        return beside
    return peer_venv("meltano>=4,<5", "meltano", "uv")


@pytest.fixture(scope="session")
def project(meltano: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with every plugin installed by `meltano install`."""
    root = tmp_path_factory.mktemp("meltano-project")
    for name in COPY:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, root / name)
    data = yaml.safe_load((root / "meltano.yml").read_text())
    for plugin in data["plugins"]["extractors"]:
        if plugin["name"] == "tap-dativo-csv":
            plugin["config"]["files"][0]["path"] = "data/*.csv"
        if plugin["name"] == "tap-dativo-postgres":
            plugin["metadata"] = {
                "dativo_melt-orders": {"replication-method": "INCREMENTAL", "replication-key": "id"}
            }
    (root / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / "data").mkdir()
    shutil.copy2(REPO / "demo" / "orders.csv", root / "data" / "orders-1.csv")
    _meltano(meltano, root, "install")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    env["DATIVO_PG_DSN"] = pg_dsn()
    env["TAP_DATIVO_POSTGRES_FILTER_SCHEMAS"] = '["dativo_melt"]'
    return env


def _meltano(exe: Path, root: Path, *args: str) -> str:
    done = subprocess.run(
        [str(exe), *args],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stdout


def _state(exe: Path, root: Path, state_id: str) -> dict:
    out = _meltano(exe, root, "--environment", "test", "state", "get", state_id)
    return json.loads(out.strip().splitlines()[-1])["singer_state"]


def _parquet_ids(folder: Path) -> list[int]:
    files = [str(p) for p in folder.rglob("*.parquet") if not p.name.startswith(".")]
    return ds.dataset(files).to_table().column("id").to_pylist()


def test_meltano_run_csv_to_parquet_keeps_state(meltano: Path, project: Path) -> None:
    _meltano(
        meltano, project, "--environment", "test", "run", "tap-dativo-csv", "target-dativo-parquet"
    )
    assert sorted(_parquet_ids(project / "output" / "parquet" / "orders")) == [1, 2, 3, 4, 5]
    state = _state(meltano, project, "test:tap-dativo-csv-to-target-dativo-parquet")
    assert state["bookmarks"]["orders"]["replication_key"] == "_sdc_modified_at"
    # A second run reads only the new file.
    (project / "data" / "orders-2.csv").write_text(
        "id,customer,amount,ordered_at,paid\n6,Margaret Hamilton,99.5,2026-02-01T00:00:00Z,true\n"
    )
    os.utime(project / "data" / "orders-2.csv", (2_000_000_000, 2_000_000_000))
    _meltano(
        meltano, project, "--environment", "test", "run", "tap-dativo-csv", "target-dativo-parquet"
    )
    assert sorted(_parquet_ids(project / "output" / "parquet" / "orders")) == [1, 2, 3, 4, 5, 6]


def test_meltano_run_with_a_catalog_from_catalogs(meltano: Path, project: Path) -> None:
    _meltano(
        meltano,
        project,
        "--environment",
        "test",
        "run",
        "tap-dativo-csv--catalog",
        "target-dativo-iceberg",
    )
    table = (
        open_catalog({"warehouse": str(project / "output" / "iceberg")})
        .load_table("singer.orders")
        .scan()
        .to_arrow()
    )
    assert "_sdc_source_file" not in table.schema.names  # deselected in the catalog
    assert table.num_rows >= 5


@pytest.mark.parametrize("tap", ["tap-dativo-postgres", "tap-dativo-postgres--arrow"])
def test_meltano_run_postgres_to_iceberg_incremental(
    meltano: Path, project: Path, tap: str
) -> None:
    fresh_schema("dativo_melt")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE dativo_melt.orders (id int PRIMARY KEY, amount numeric(10,2), note text)"
        )
        conn.execute(
            "INSERT INTO dativo_melt.orders SELECT g, g * 1.25, 'n' || g "
            "FROM generate_series(1, 2500) g"
        )
    warehouse = project / "output" / f"iceberg-{tap}"
    env_name = "TARGET_DATIVO_ICEBERG_WAREHOUSE"
    os.environ[env_name] = str(warehouse)
    try:
        _meltano(meltano, project, "--environment", "test", "run", tap, "target-dativo-iceberg")
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO dativo_melt.orders SELECT g, g * 1.25, 'n' || g "
                "FROM generate_series(2501, 2600) g"
            )
        _meltano(meltano, project, "--environment", "test", "run", tap, "target-dativo-iceberg")
    finally:
        del os.environ[env_name]
    table = open_catalog({"warehouse": str(warehouse)}).load_table("singer.dativo_melt_orders")
    ids = table.scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(1, 2601)), "the second run must read only new rows"
    snapshots = table.snapshots()
    assert len(snapshots) == 2  # one checkpoint per run
    state = _state(meltano, project, f"test:{tap}-to-target-dativo-iceberg")
    assert state["bookmarks"]["dativo_melt-orders"]["replication_key_value"] == 2600
    batches = project / "output" / "batches"
    assert not batches.exists() or not any(batches.iterdir()), "batch files left behind"
