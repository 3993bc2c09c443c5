"""tap-dativo-postgres --discover: the catalog's schema is the SCHEMA message's schema
(precision, scale, x-arrow-type kept), with singer-sdk's SQL-tap metadata, and a catalog
edited the way Meltano's select/metadata do it works when given back with --catalog."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.helpers import env, script

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_discovery"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DOMAIN {SCHEMA}.cents AS numeric(14,2)")
        conn.execute(f"CREATE TYPE {SCHEMA}.mood AS ENUM ('sad', 'happy')")
        conn.execute(f"""CREATE TABLE {SCHEMA}.orders (
            id int8 PRIMARY KEY, amount numeric(12,2), big numeric(50,10), loose numeric,
            price {SCHEMA}.cents, naive timestamp, aware timestamptz, day date, at time,
            doc jsonb, tags text[], amounts numeric(6,3)[], span interval, blob bytea,
            mood {SCHEMA}.mood, note varchar(20), ratio float8, flag bool, ref uuid)""")
        conn.execute(f"""INSERT INTO {SCHEMA}.orders VALUES (1, 12.34, 1.5, 7.25, 3.10,
            '2026-01-02 03:04:05', '2026-01-02 03:04:05+00', '2026-01-02', '10:11:12',
            '{{"a": 1}}', '{{x,y}}', '{{1.125}}', '1 day', '\\x00ff', 'happy', 'n', 0.5,
            true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')""")
        conn.execute(f"CREATE TABLE {SCHEMA}.pairs (a int, b int, PRIMARY KEY (b, a))")
        conn.execute(f"INSERT INTO {SCHEMA}.pairs VALUES (1, 2)")
        conn.execute(f"CREATE VIEW {SCHEMA}.big_orders AS SELECT id, amount FROM {SCHEMA}.orders")
        conn.execute(f"CREATE MATERIALIZED VIEW {SCHEMA}.days AS SELECT day FROM {SCHEMA}.orders")
    path = tmp_path_factory.mktemp("discovery") / "tap.json"
    path.write_text(json.dumps({"dsn": pg_dsn(), "filter_schemas": [SCHEMA]}))
    return path


def _tap(config: Path, *args: str) -> str:
    done = subprocess.run(
        [script("tap-dativo-postgres"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _messages(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _catalog(config: Path) -> dict[str, dict[str, Any]]:
    return {s["tap_stream_id"]: s for s in json.loads(_tap(config, "--discover"))["streams"]}


def _metadata(entry: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(m["breadcrumb"]): m["metadata"] for m in entry["metadata"]}


def test_the_catalog_schema_is_the_schema_message_schema(config: Path) -> None:
    catalog = _catalog(config)
    schemas = {m["stream"]: m["schema"] for m in _messages(_tap(config)) if m["type"] == "SCHEMA"}
    assert set(schemas) == set(catalog)
    for stream, entry in catalog.items():
        assert entry["schema"] == schemas[stream], stream
    props = catalog[f"{SCHEMA}-orders"]["schema"]["properties"]
    assert props["amount"]["precision"] == 12 and props["amount"]["scale"] == 2
    assert props["big"]["precision"] == 50 and props["price"]["scale"] == 2
    assert props["naive"]["x-arrow-type"] == "timestamp[us]"
    assert props["amounts"]["items"]["precision"] == 6


def test_the_catalog_has_the_sql_tap_metadata(config: Path) -> None:
    catalog = _catalog(config)
    orders = catalog[f"{SCHEMA}-orders"]
    assert orders["table_name"] == "orders" and orders["is_view"] is False
    assert orders["key_properties"] == ["id"]
    # A FULL_TABLE-by-default stream has no replication_method: singer-sdk would read it as
    # forced, and a replication-key set in the catalog would be ignored.
    assert "replication_method" not in orders
    meta = _metadata(orders)
    root = meta[()]
    assert root["schema-name"] == SCHEMA and root["is-view"] is False
    assert root["table-key-properties"] == ["id"]
    assert root["valid-replication-keys"] == [
        "id",
        "amount",
        "big",
        "price",
        "naive",
        "aware",
        "day",
        "ref",
    ]
    assert "replication-key" not in root and "forced-replication-method" not in root
    assert root["selected-by-default"] is True and root["inclusion"] == "available"
    sql_types = {b[1]: m.get("sql-datatype") for b, m in meta.items() if len(b) == 2}
    assert sql_types == {
        "id": "bigint",
        "amount": "numeric(12,2)",
        "big": "numeric(50,10)",
        "loose": "numeric",
        "price": f"{SCHEMA}.cents",
        "naive": "timestamp without time zone",
        "aware": "timestamp with time zone",
        "day": "date",
        "at": "time without time zone",
        "doc": "jsonb",
        "tags": "text[]",
        "amounts": "numeric(6,3)[]",
        "span": "interval",
        "blob": "bytea",
        "mood": f"{SCHEMA}.mood",
        "note": "character varying(20)",
        "ratio": "double precision",
        "flag": "boolean",
        "ref": "uuid",
    }
    assert meta[("properties", "id")]["inclusion"] == "automatic"
    assert meta[("properties", "amount")]["inclusion"] == "available"
    pairs = _metadata(catalog[f"{SCHEMA}-pairs"])
    assert pairs[()]["table-key-properties"] == ["b", "a"]
    assert {pairs[("properties", c)]["inclusion"] for c in "ab"} == {"automatic"}
    for view in ("big_orders", "days"):
        entry = catalog[f"{SCHEMA}-{view}"]
        assert entry["is_view"] is True and _metadata(entry)[()]["is-view"] is True, view


def test_an_edited_catalog_selects_columns_and_makes_the_stream_incremental(
    config: Path, tmp_path: Path
) -> None:
    """What Meltano does with `select:` and `metadata:` (selected flags, replication-key
    on the stream's metadata), given back with --catalog."""
    catalog = json.loads(_tap(config, "--discover"))
    for entry in catalog["streams"]:
        meta = _metadata(entry)
        meta[()]["selected"] = entry["tap_stream_id"] == f"{SCHEMA}-orders"
        if entry["tap_stream_id"] == f"{SCHEMA}-orders":
            meta[()]["replication-key"] = "aware"
            for column in ("doc", "blob", "span"):
                meta[("properties", column)]["selected"] = False
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    messages = _messages(_tap(config, "--catalog", str(path)))
    (schema,) = [m for m in messages if m["type"] == "SCHEMA"]
    assert schema["stream"] == f"{SCHEMA}-orders"
    props = schema["schema"]["properties"]
    assert not {"doc", "blob", "span"} & set(props)
    assert props["amount"]["precision"] == 12 and props["naive"]["x-arrow-type"] == "timestamp[us]"
    assert schema["bookmark_properties"] == ["aware"]
    bookmark = [m for m in messages if m["type"] == "STATE"][-1]["value"]["bookmarks"]
    assert bookmark[f"{SCHEMA}-orders"]["replication_key"] == "aware"
    assert bookmark[f"{SCHEMA}-orders"]["replication_key_value"].startswith("2026-01-02T03:04:05")
