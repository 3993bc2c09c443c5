"""tap-dativo-postgres with stream maps (stream alias, property alias, computed properties,
``__NULL__``) and flattening, on the PostgreSQL values that broke Singer pipelines
(numeric with scale, numerics beyond 38 digits, NaN in numeric, naive timestamps,
timestamptz, jsonb with JSON null, ±infinity, ``24:00:00``, years 1 and 9999, arrays):
into a strict third-party target (meltanolabs-target-csv, singer-sdk's validation), into
target-dativo-parquet over a pipe, and under ``dativo run``; every record is accepted and
every value exact."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import dativo_run, env, peer_venv, read_parquet_dir, script, write_project

D = decimal.Decimal
SCHEMA = "dativo_maps"
STREAM = f"{SCHEMA}-edges"
ALIAS = "edges_mapped"
_ROWS = f"""INSERT INTO {SCHEMA}.edges VALUES
 (1, 'infinity', 1234567890123456789012345678.0123456789, '24:00:00', '0001-01-01',
  'infinity', '-infinity', 'null', '{{a,b}}', 'Ada', 'drop me'),
 (2, 'NaN', -0.0000000001, '00:00:00', '9999-12-31', '0001-01-01 00:00:00',
  '9999-12-31 23:59:59.999999+00', '{{"a": [1, 2.50, null]}}', '{{}}', 'Grace', 'x'),
 (3, 123456789012345678901234567890123456789012345678901234567890.123456789,
  99999999999999999999999999.9999999999, '23:59:59.999999', '2000-02-29',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+00', '1.10', NULL, 'Edsger', NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'Barbara', NULL)"""
MAPS: dict[str, Any] = {
    "stream_maps": {
        STREAM: {
            "__alias__": ALIAS,
            "amount": "n2",
            "label": "name + '#' + str(id)",
            "id_x10": "id * 10",
            "secret": None,
        }
    },
    "flattening_enabled": True,
    "flattening_max_depth": 1,
}


@pytest.fixture(scope="module")
def edges() -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {SCHEMA}.edges (
            id int PRIMARY KEY, n numeric, n2 numeric(38,10), t time, d date,
            ts timestamp, tz timestamptz, j jsonb, tags text[], name text NOT NULL,
            secret text)""")
        conn.execute(_ROWS)


def _tap_config() -> dict[str, Any]:
    return {"dsn": pg_dsn(), "filter_schemas": [SCHEMA], **MAPS}


def _tap_output(tmp_path: Path, **more: Any) -> bytes:
    (tmp_path / "tap.json").write_text(json.dumps({**_tap_config(), **more}))
    tap = subprocess.run(
        [script("tap-dativo-postgres"), "--config", "tap.json"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert tap.returncode == 0, tap.stderr.decode()[-3000:]
    assert b"row path" not in tap.stderr  # every map ran on the Arrow batches
    return tap.stdout


def _into(target: str, config: dict[str, Any], tmp_path: Path, tap_stdout: bytes) -> str:
    (tmp_path / "target.json").write_text(json.dumps(config))
    done = subprocess.run(
        [target, "--config", "target.json"],
        input=tap_stdout,
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    # A record that breaks its schema stops a singer-sdk target with a non-zero exit.
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stderr.decode()


@pytest.mark.usefixtures("edges")
def test_the_mapped_schema_keeps_exact_types(tmp_path: Path) -> None:
    messages = [json.loads(line) for line in _tap_output(tmp_path).splitlines()]
    (schema,) = [m for m in messages if m["type"] == "SCHEMA"]
    assert schema["stream"] == ALIAS
    props = schema["schema"]["properties"]
    assert "secret" not in props
    assert props["amount"] == props["n2"]
    assert (props["amount"]["precision"], props["amount"]["scale"]) == (38, 10)
    assert props["ts"]["x-arrow-type"] == "timestamp[us]"
    assert props["j"]["type"] == ["object", "array", "string", "number", "boolean", "null"]
    assert props["tags"]["type"] == ["string", "null"]  # an array, flattened to JSON text
    assert props["id_x10"]["type"] == ["integer", "null"]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert {m["stream"] for m in messages if m["type"] == "RECORD"} == {ALIAS}
    assert [r["label"] for r in records] == ["Ada#1", "Grace#2", "Edsger#3", "Barbara#4"]


def _strict_target() -> Path:
    return peer_venv("meltanolabs-target-csv==0.5.0", "target-csv")


@pytest.mark.usefixtures("edges")
def test_a_strict_target_accepts_every_mapped_record_with_exact_values(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    config = {"output_path": str(tmp_path / "out")}
    log = _into(str(_strict_target()), config, tmp_path, _tap_output(tmp_path))
    assert "records" in log
    _check_csv(tmp_path / "out" / f"{ALIAS}.csv")


@pytest.mark.usefixtures("edges")
def test_dativo_run_into_a_strict_target_sends_the_mapped_stream(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-postgres", "config": _tap_config()}],
        [
            {
                "name": "target-csv",
                "executable": str(_strict_target()),
                "config": {"output_path": str(tmp_path / "out")},
            }
        ],
    )
    dativo_run(project, "tap-dativo-postgres", "target-csv")
    _check_csv(tmp_path / "out" / f"{ALIAS}.csv")


def _check_csv(path: Path) -> None:
    with path.open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["id"]))
    assert [row["id"] for row in rows] == ["1", "2", "3", "4"]
    first, second, third, empty = rows
    assert "secret" not in first
    assert (first["n"], second["n"]) == ("Infinity", "NaN")
    assert third["n"] == "123456789012345678901234567890123456789012345678901234567890.123456789"
    assert first["amount"] == first["n2"] == "1234567890123456789012345678.0123456789"
    assert second["amount"] == "-0.0000000001"
    assert third["amount"] == "99999999999999999999999999.9999999999"
    assert first["t"] == "23:59:59.999999"  # 24:00:00, clamped
    assert (first["d"], second["d"]) == ("0001-01-01", "9999-12-31")
    assert first["ts"] == "9999-12-31 23:59:59.999999"
    assert third["ts"] == "2024-02-29 12:34:56.789012"
    assert first["tz"].startswith("0001-01-01 00:00:00")
    assert first["j"] == ""  # JSON null
    assert json.loads(first["tags"]) == ["a", "b"] and json.loads(second["tags"]) == []
    assert [row["id_x10"] for row in rows] == ["10", "20", "30", "40"]
    assert all(empty[k] == "" for k in ("n", "n2", "amount", "t", "d", "ts", "tz", "j", "tags"))


def _check_parquet(table: pa.Table) -> None:
    assert "secret" not in table.column_names
    assert table.schema.field("amount").type == pa.decimal128(38, 10)
    assert table.schema.field("ts").type == pa.timestamp("us")
    assert table.schema.field("id_x10").type == pa.int64()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["amount"] for r in rows] == [
        D("1234567890123456789012345678.0123456789"),
        D("-0.0000000001"),
        D("99999999999999999999999999.9999999999"),
        None,
    ]
    assert [r["amount"] for r in rows] == [r["n2"] for r in rows]
    assert rows[2]["ts"] == dt.datetime(2024, 2, 29, 12, 34, 56, 789012)
    assert rows[0]["d"] == dt.date(1, 1, 1) and rows[1]["d"] == dt.date(9999, 12, 31)
    assert rows[2]["tz"] == dt.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=dt.UTC)
    assert json.loads(rows[1]["j"], parse_float=D) == {"a": [1, D("2.50"), None]}
    assert rows[0]["j"] == "null" and rows[3]["j"] is None  # JSON null vs SQL NULL
    assert rows[0]["n"] == "Infinity" and rows[1]["n"] == "NaN"
    assert [r["label"] for r in rows] == ["Ada#1", "Grace#2", "Edsger#3", "Barbara#4"]
    assert [r["tags"] for r in rows] == ['["a","b"]', "[]", None, None]


@pytest.mark.usefixtures("edges")
def test_target_dativo_parquet_gets_exact_types_after_maps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _into(script("target-dativo-parquet"), {"path": str(out)}, tmp_path, _tap_output(tmp_path))
    _check_parquet(read_parquet_dir(out / ALIAS))


@pytest.mark.usefixtures("edges")
def test_batch_files_carry_the_mapped_stream_into_target_dativo_parquet(tmp_path: Path) -> None:
    batches = {"encoding": {"format": "arrow"}, "storage": {"root": (tmp_path / "b").as_uri()}}
    output = _tap_output(tmp_path, batch_config=batches)
    kinds = [(m["type"], m.get("stream")) for m in map(json.loads, output.splitlines())]
    assert ("BATCH", ALIAS) in kinds and ("RECORD", ALIAS) not in kinds
    out = tmp_path / "out"
    _into(script("target-dativo-parquet"), {"path": str(out)}, tmp_path, output)
    _check_parquet(read_parquet_dir(out / ALIAS))


@pytest.mark.usefixtures("edges")
def test_dativo_run_applies_the_maps_in_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-postgres", "config": _tap_config()}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    done = dativo_run(project, "tap-dativo-postgres", "target-dativo-parquet")
    assert ALIAS in done.stdout + done.stderr
    _check_parquet(read_parquet_dir(out / ALIAS))
    assert not (out / STREAM).exists()
