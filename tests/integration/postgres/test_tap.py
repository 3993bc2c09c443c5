"""tap-dativo-postgres as a Singer tap: singer-sdk's standard suite, the shell pipe against
`dativo run`, and connection errors that never show the password."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from singer_sdk.testing import get_tap_test_class

from dativo_bridge.errors import ConfigError
from tap_dativo_postgres.reader import PostgresReader, connect
from tap_dativo_postgres.tap import TapDativoPostgres
from tests.e2e.helpers import dativo_run, pipe, read_parquet_dir, script, write_project

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_tap"


def _setup() -> dict:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {SCHEMA}.customers (
            id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), vip bool,
            joined timestamptz, tags text[])""")
        conn.execute(f"""INSERT INTO {SCHEMA}.customers
            SELECT g, 'customer ' || g, g * 1.5, g % 2 = 0,
                   timestamptz '2025-01-01' + g * interval '1 hour',
                   ARRAY['t' || g, NULL]
            FROM generate_series(1, 300) g""")
    return {"dsn": pg_dsn(), "filter_schemas": [SCHEMA]}


# singer-sdk's suite needs records in every stream and reads multi-type schemas (JSON
# columns) as numbers: the suite's schema holds one typical table; types are covered in
# test_types.py.
CONFIG = _setup()

TestTapDativoPostgres = get_tap_test_class(TapDativoPostgres, config=CONFIG)


def test_shell_pipe_and_dativo_run_agree(tmp_path: Path) -> None:
    (tmp_path / "tap.json").write_text(json.dumps(CONFIG))
    (tmp_path / "target.json").write_text(json.dumps({"path": str(tmp_path / "pipe")}))
    command = (
        f"{script('tap-dativo-postgres')} --config tap.json | "
        f"{script('target-dativo-parquet')} --config target.json"
    )
    pipe(command, tmp_path, timeout=300)
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-postgres", "config": CONFIG}],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "bridge")}}],
    )
    dativo_run(project, "tap-dativo-postgres", "target-dativo-parquet")
    stream = f"{SCHEMA}-customers"
    piped = read_parquet_dir(tmp_path / "pipe" / stream).sort_by("id")
    bridged = read_parquet_dir(tmp_path / "bridge" / stream).sort_by("id")
    assert piped.num_rows == 300
    assert piped.schema.remove_metadata() == bridged.schema.remove_metadata()
    assert piped.equals(bridged)
    assert str(piped.schema.field("balance").type) == "decimal128(12, 2)"


def test_connection_errors_are_clear_and_hide_the_password() -> None:
    secret = "s3cr3t-pa55word"
    with pytest.raises(ConfigError) as refused:
        connect(
            {
                "host": "127.0.0.1",
                "port": 1,
                "user": "alice",
                "password": secret,
                "database": "shop",
                "connect_timeout": 3,
            }
        )
    message = str(refused.value)
    assert "could not connect to PostgreSQL at 127.0.0.1" in message
    assert "user alice" in message and secret not in message
    with pytest.raises(ConfigError) as bad_dsn:
        connect({"dsn": f"postgresql://alice:{secret}@127.0.0.1:1/shop", "connect_timeout": 3})
    assert secret not in str(bad_dsn.value)


def test_empty_table_reads_no_rows() -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS dativo_empty CASCADE; CREATE SCHEMA dativo_empty")
        conn.execute("CREATE TABLE dativo_empty.nothing (id int PRIMARY KEY, note text)")
    reader = PostgresReader()
    reader.open({**CONFIG, "filter_schemas": ["dativo_empty"]})
    with reader:
        (info,) = reader.discover()
        assert list(reader.read(info, None)) == []


def test_custom_where_and_column_selection() -> None:
    reader = PostgresReader()
    reader.open(
        {**CONFIG, "stream_options": {f"{SCHEMA}-customers": {"custom_where": "vip AND id <= 10"}}}
    )
    with reader:
        info = {s.name: s for s in reader.discover()}[f"{SCHEMA}-customers"]
        rows = [
            r for b in reader.read(info.with_columns(["id", "vip"]), None) for r in b.to_pylist()
        ]
    assert rows == [{"id": i, "vip": True} for i in range(2, 11, 2)]
