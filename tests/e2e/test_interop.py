"""Interop with the Singer ecosystem, each peer in its own venv: meltanolabs-tap-postgres
into Dativo targets, and Dativo taps into meltanolabs-target-postgres."""

from __future__ import annotations

import decimal
import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from target_dativo_iceberg.writer import open_catalog
from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import REPO, env, peer_venv, pipe, read_parquet_dir, script


def _pg_settings(schemas: list[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """meltanolabs plugin settings for the test server; a unix socket goes in PGHOST (the
    plugins put `host` into a URL unescaped)."""
    info = conninfo_to_dict(pg_dsn())
    host = str(info.get("host") or "localhost")
    socket = host.startswith("/")
    config: dict[str, Any] = {
        "host": "" if socket else host,
        "port": int(info.get("port") or 5432),
        "user": info.get("user") or "postgres",
        "password": info.get("password") or "",
        "database": info.get("dbname") or "postgres",
    }
    if schemas:
        config["filter_schemas"] = schemas
    return config, ({"PGHOST": host} if socket else {})


@pytest.fixture(scope="module")
def source_table() -> str:
    fresh_schema("dativo_peer")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute("""CREATE TABLE dativo_peer.items (
            id int PRIMARY KEY, name text, price numeric(10,2), qty int,
            added timestamptz, tags text[], ok bool)""")
        conn.execute("""INSERT INTO dativo_peer.items
            SELECT g, 'item ' || g, g * 0.5, g % 7, timestamptz '2026-01-01' + g * interval '1 h',
                   ARRAY['a', 'b'], g % 2 = 0 FROM generate_series(1, 200) g""")
    return "dativo_peer-items"


def test_meltanolabs_tap_postgres_into_dativo_targets(source_table: str, tmp_path: Path) -> None:
    tap = peer_venv("meltanolabs-tap-postgres", "tap-postgres")
    config, extra_env = _pg_settings(["dativo_peer"])
    (tmp_path / "tap.json").write_text(json.dumps(config))
    run_env = {**env(), **extra_env}
    discovered = subprocess.run(
        [str(tap), "--config", "tap.json", "--discover"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    catalog = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            item["metadata"]["selected"] = entry["tap_stream_id"] == source_table
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    (tmp_path / "parquet.json").write_text(json.dumps({"path": str(tmp_path / "pq")}))
    (tmp_path / "iceberg.json").write_text(json.dumps({"warehouse": str(tmp_path / "ice")}))
    for target, cfg in (
        ("target-dativo-parquet", "parquet.json"),
        ("target-dativo-iceberg", "iceberg.json"),
    ):
        command = (
            f"{tap} --config tap.json --catalog catalog.json | {script(target)} --config {cfg}"
        )
        pipe(command, tmp_path, extra_env, timeout=300)
    rows = read_parquet_dir(tmp_path / "pq" / source_table).sort_by("id").to_pylist()
    assert len(rows) == 200
    assert rows[0]["name"] == "item 1" and rows[0]["tags"] == ["a", "b"]
    assert decimal.Decimal(str(rows[9]["price"])) == decimal.Decimal("5.00")
    iceberg = (
        open_catalog({"warehouse": str(tmp_path / "ice")})
        .load_table("singer.dativo_peer_items")
        .scan()
        .to_arrow()
    )
    assert sorted(iceberg.column("id").to_pylist()) == list(range(1, 201))


def test_dativo_tap_into_meltanolabs_target_postgres(tmp_path: Path) -> None:
    target = peer_venv("meltanolabs-target-postgres", "target-postgres")
    fresh_schema("dativo_landing")
    config, extra_env = _pg_settings()
    config["default_target_schema"] = "dativo_landing"
    (tmp_path / "target.json").write_text(json.dumps(config))
    (tmp_path / "tap.json").write_text(
        json.dumps(
            {
                "files": [
                    {
                        "stream": "orders",
                        "path": str(REPO / "demo" / "orders.csv"),
                        "key_properties": ["id"],
                    }
                ]
            }
        )
    )
    command = f"{script('tap-dativo-csv')} --config tap.json | {target} --config target.json"
    pipe(command, tmp_path, extra_env, timeout=300)
    with psycopg.connect(pg_dsn()) as conn:
        rows = conn.execute(
            "SELECT id, customer, amount, paid FROM dativo_landing.orders ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2][1] == "Edsger, W. Dijkstra" and rows[3][2] is None and rows[0][3] is True
