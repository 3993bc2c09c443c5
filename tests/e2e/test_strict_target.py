"""Valid on the wire: every RECORD of tap-dativo-postgres validates against its SCHEMA under
a strict third-party target (meltanolabs-target-csv, which runs singer-sdk's record
validation), on the values that have broken Singer pipelines: ±infinity in numeric, float
and timestamps, `24:00:00`, years 1 and 9999, NaN, JSON null, numerics beyond 38 digits."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import REPO, env, peer_venv, script

_ROWS = """INSERT INTO dativo_strict.edges VALUES
 (1, 'infinity', 1234567890123456789012345678.0123456789, 'infinity', '24:00:00',
  '0001-01-01', 'infinity', '-infinity', 'null', 'null', '1 day', '\\x00ff'),
 (2, '-infinity', -0.0000000001, '-infinity', '00:00:00', '9999-12-31', '-infinity',
  'infinity', '{"a": [1, 2.5, null]}', '[]', '-1 mon', ''),
 (3, 'NaN', 0, 'NaN', '23:59:59.999999', '2000-02-29', '0001-01-01 00:00:00',
  '9999-12-31 23:59:59.999999+00', '"x"', '1e400', '0', NULL),
 (4, 123456789012345678901234567890123456789012345678901234567890.123456789,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""


@pytest.fixture(scope="module")
def edges() -> None:
    fresh_schema("dativo_strict")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute("""CREATE TABLE dativo_strict.edges (
            id int PRIMARY KEY, n numeric, n2 numeric(38,10), f float8, t time, d date,
            ts timestamp, tz timestamptz, j jsonb, js json, i interval, b bytea)""")
        conn.execute(_ROWS)


def _strict_target() -> Path:
    return peer_venv("meltanolabs-target-csv==0.5.0", "target-csv")


def _run_into_csv(tmp_path: Path, tap_config: dict[str, object]) -> list[dict[str, str]]:
    target = _strict_target()
    (tmp_path / "tap.json").write_text(json.dumps(tap_config))
    (tmp_path / "target.json").write_text(json.dumps({"output_path": str(tmp_path / "out")}))
    (tmp_path / "out").mkdir()
    tap = subprocess.run(
        [str(script("tap-dativo-postgres")), "--config", "tap.json"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert tap.returncode == 0, tap.stderr.decode()[-3000:]
    done = subprocess.run(
        [str(target), "--config", "target.json"],
        input=tap.stdout,
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    # A record that breaks its schema stops singer-sdk's target with a non-zero exit.
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"records" in done.stderr
    with (tmp_path / "out" / "dativo_strict-edges.csv").open(newline="") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: int(row["id"]))


@pytest.mark.usefixtures("edges")
def test_every_edge_value_is_accepted_by_a_strict_target(tmp_path: Path) -> None:
    rows = _run_into_csv(tmp_path, {"dsn": pg_dsn(), "filter_schemas": ["dativo_strict"]})
    assert [row["id"] for row in rows] == ["1", "2", "3", "4", "5"]
    first, second, third, big, empty = rows
    # numeric without a typmod is exact text, infinities and NaN included
    assert (first["n"], second["n"], third["n"]) == ("Infinity", "-Infinity", "NaN")
    assert big["n"] == "123456789012345678901234567890123456789012345678901234567890.123456789"
    assert first["n2"] == "1234567890123456789012345678.0123456789"
    assert second["n2"] == "-0.0000000001"
    # float8 infinities and NaN reach the target as floats
    assert (first["f"], second["f"], third["f"]) == ("inf", "-inf", "nan")
    # 24:00:00 and ±infinity timestamps are clamped (infinity_values: clamp)
    assert first["t"] == "23:59:59.999999"
    assert (first["d"], second["d"]) == ("0001-01-01", "9999-12-31")
    assert first["ts"] == "9999-12-31 23:59:59.999999"
    assert first["tz"].startswith("0001-01-01 00:00:00")
    assert second["tz"].startswith("9999-12-31 23:59:59.999999")
    # JSON null is JSON null, not the string 'null'
    assert first["j"] == "" and first["js"] == ""
    assert third["j"] == "x"
    assert all(value == "" for key, value in empty.items() if key != "id")


@pytest.mark.usefixtures("edges")
def test_infinity_as_null_is_accepted_by_a_strict_target(tmp_path: Path) -> None:
    rows = _run_into_csv(
        tmp_path,
        {"dsn": pg_dsn(), "filter_schemas": ["dativo_strict"], "infinity_values": "null"},
    )
    first, second = rows[0], rows[1]
    assert first["t"] == "" and first["ts"] == "" and first["tz"] == ""
    assert second["ts"] == "" and second["tz"] == ""
    # years 1 and 9999 themselves are real values, not infinities
    assert (first["d"], second["d"]) == ("0001-01-01", "9999-12-31")


def test_csv_tap_rows_are_accepted_by_a_strict_target(tmp_path: Path) -> None:
    target = _strict_target()
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
    (tmp_path / "target.json").write_text(json.dumps({"output_path": str(tmp_path)}))
    command = f"{script('tap-dativo-csv')} --config tap.json | {target} --config target.json"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    source = (REPO / "demo" / "orders.csv").read_text().splitlines()
    landed = (tmp_path / "orders.csv").read_text().splitlines()
    assert len(landed) == len(source)
