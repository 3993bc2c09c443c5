"""pipelinewise-tap-postgres (from PyPI, in its own venv) into target-dativo-parquet:
its ``number`` + ``multipleOf`` numerics land as exact decimals and its ``$ref`` arrays as
lists (issue 16, "foreign taps' types")."""

from __future__ import annotations

import decimal
import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.conninfo import conninfo_to_dict

from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import env, peer_venv, pipe, read_parquet_dir, script


def _config() -> dict[str, Any]:
    info = conninfo_to_dict(pg_dsn())
    return {
        "host": str(info.get("host") or "localhost"),
        "port": int(info.get("port") or 5432),
        "user": info.get("user") or "postgres",
        "password": info.get("password") or "",
        "dbname": info.get("dbname") or "postgres",
        "filter_schemas": "dativo_pw",
    }


def test_pipelinewise_numerics_and_arrays_into_parquet_exactly(tmp_path: Path) -> None:
    tap = peer_venv("pipelinewise-tap-postgres", "tap-postgres")
    fresh_schema("dativo_pw")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE dativo_pw.items (id int PRIMARY KEY, price numeric(18,4), tags text[])"
        )
        conn.execute(
            "INSERT INTO dativo_pw.items VALUES (1, 99999999999999.9999, ARRAY['x', 'y']), "
            "(2, -0.0001, NULL), (3, NULL, ARRAY[]::text[])"
        )
    (tmp_path / "tap.json").write_text(json.dumps(_config()))
    discovered = subprocess.run(
        [str(tap), "--config", "tap.json", "--discover"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    catalog = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] == "dativo_pw-items"
                item["metadata"]["replication-method"] = "FULL_TABLE"
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    (tmp_path / "parquet.json").write_text(json.dumps({"path": str(tmp_path / "pq")}))
    pipe(f"{tap} --config tap.json --catalog catalog.json > tap.out", tmp_path, {}, timeout=300)
    messages = [json.loads(line) for line in (tmp_path / "tap.out").read_text().splitlines()]
    (sent,) = [m["schema"]["properties"] for m in messages if m["type"] == "SCHEMA"]
    # What this test is about: the tap's own spelling of numeric(18,4) and text[].
    assert sent["price"]["multipleOf"] == 0.0001 and "$ref" in sent["tags"]["items"]
    assert '"price": 99999999999999.9999' in (tmp_path / "tap.out").read_text()
    pipe(
        f"{script('target-dativo-parquet')} --config parquet.json < tap.out",
        tmp_path,
        {},
        timeout=300,
    )
    folder = tmp_path / "pq" / "dativo_pw-items"
    schema = pq.read_schema(next(folder.rglob("*.parquet")))
    assert schema.field("price").type == pa.decimal128(18, 4)
    assert schema.field("tags").type == pa.list_(pa.string())
    rows = read_parquet_dir(folder).sort_by("id").to_pylist()
    assert [(r["id"], r["price"], r["tags"]) for r in rows] == [
        (1, decimal.Decimal("99999999999999.9999"), ["x", "y"]),
        (2, decimal.Decimal("-0.0001"), []),  # the tap sends a NULL array as []
        (3, None, []),
    ]
