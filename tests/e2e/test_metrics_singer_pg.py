"""tap-dativo-postgres as a plain Singer tap with DATIVO_METRICS_FILE: a LOG_BASED stream's
rows and the replication slot's lag are metrics, as in `dativo run`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from tests.integration.postgres.server import fresh_schema, logical_decoding_missing, pg_dsn

from .helpers import pipe, script

SCHEMA = "dativo_metrics_singer_cdc"
SLOT = "dativo_msinger_cdc"  # not dativo_test_%: other tests drop those


def _drop(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]).fetchone():
        conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
    conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _last_state(output: str) -> dict:
    states = [json.loads(line) for line in output.splitlines() if '"type":"STATE"' in line]
    assert states, output[-2000:]
    return states[-1]["value"]


def test_a_log_based_singer_tap_reports_its_rows_and_the_slot_lag(tmp_path: Path) -> None:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        _drop(conn)
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, n int)")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"INSERT INTO {SCHEMA}.items SELECT g, g FROM generate_series(1, 100) g")
    config = {
        "dsn": pg_dsn(),
        "filter_schemas": [SCHEMA],
        "replication_slot": SLOT,
        "max_parallelism": 1,
    }
    (tmp_path / "tap.json").write_text(json.dumps(config))
    tap = script("tap-dativo-postgres")
    catalog = json.loads(pipe(f"{tap} --config tap.json --discover", tmp_path).stdout)
    (stream,) = catalog["streams"]
    stream["replication_method"] = "LOG_BASED"
    for entry in stream["metadata"]:
        if entry["breadcrumb"] == []:
            entry["metadata"].update({"selected": True, "replication-method": "LOG_BASED"})
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    prom = tmp_path / "tap.prom"
    metrics_env = {"DATIVO_METRICS_FILE": str(prom)}
    try:
        first = pipe(f"{tap} --config tap.json --catalog catalog.json", tmp_path, metrics_env)
        samples = _samples(prom.read_text())
        name = stream["tap_stream_id"]
        label = 'tap="tap-dativo-postgres"'
        assert samples[f'dativo_stream_rows_total{{{label},stream="{name}"}}'] == 100
        assert f"dativo_run_replication_lag_bytes{{{label}}}" in samples

        (tmp_path / "state.json").write_text(json.dumps(_last_state(first.stdout)))
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"UPDATE {SCHEMA}.items SET n = n + 1 WHERE id <= 10")
        second = pipe(
            f"{tap} --config tap.json --catalog catalog.json --state state.json",
            tmp_path,
            metrics_env,
        )
        changes = [line for line in second.stdout.splitlines() if '"type":"RECORD"' in line]
        samples = _samples(prom.read_text())
        assert samples[f'dativo_stream_rows_total{{{label},stream="{name}"}}'] == len(changes)
        assert len(changes) == 10
        # At the end of the read nothing of this run is confirmed yet: the updates' WAL
        # (at least) is retained for the slot.
        lag = samples[f"dativo_run_replication_lag_bytes{{{label}}}"]
        assert lag > 0 and lag == int(lag)
        logged = re.search(rf"replication slot {SLOT}: (\d+) byte", second.stderr)
        assert logged, second.stderr[-2000:]  # the lag after the tap confirmed at close
        assert samples[f"dativo_run_success{{{label}}}"] == 1
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            _drop(conn)
