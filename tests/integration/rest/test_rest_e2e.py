"""`dativo run tap-dativo-rest target-dativo-parquet` end to end, twice: a full first run,
then an incremental one that sends the stored bookmark and lands only the new rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from dativo_bridge.state import LocalStateStore
from tests.e2e.helpers import dativo_run, env, read_parquet_dir, script, write_project

from .server import API_KEY, BEARER_TOKEN, ORDERS_SCHEMA, make_order, shared_server

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SERVER = shared_server()


def test_dativo_run_lands_parquet_and_resumes_from_state(tmp_path: Path) -> None:
    SERVER.state.set_dataset("e2e", [make_order(i) for i in range(1, 24)])
    out = tmp_path / "lake"
    tap_config = {
        # The entry point is not registered yet, so the runner loads the class by name.
        "reader_class": "tap_dativo_rest.reader:RestReader",
        "api_url": SERVER.url,
        "auth": {"type": "bearer", "token": BEARER_TOKEN},
        "requests_per_second": 50,
        "streams": [
            {
                "name": "orders",
                "path": "/v1/orders",
                "records_path": "$.data[*]",
                "primary_keys": ["id"],
                "replication_key": "updated_at",
                "bookmark_param": "updated_since",
                "params": {"ds": "e2e"},
                "pagination": {"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
            }
        ],
    }
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-rest", "config": tap_config}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    state_dir = tmp_path / "state"
    args = ("--state-dir", str(state_dir), "--json", "--log-level", "DEBUG")

    first = dativo_run(project, "tap-dativo-rest", "target-dativo-parquet", *args, timeout=120)
    summary = json.loads(first.stdout)
    assert summary["rows"] == 23
    table = read_parquet_dir(out / "orders")
    assert sorted(table.column("id").to_pylist()) == list(range(1, 24))
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("amount").type == pa.float64()
    bookmark = "2024-01-01T23:00:00+00:00"
    assert summary["state"]["bookmarks"]["orders"]["replication_key_value"] == bookmark
    stored = LocalStateStore(state_dir).get("test:tap-dativo-rest-to-target-dativo-parquet")
    assert stored == summary["state"]

    SERVER.state.add_records("e2e", [make_order(i) for i in range(24, 27)])
    second = dativo_run(project, "tap-dativo-rest", "target-dativo-parquet", *args, timeout=120)
    assert json.loads(second.stdout)["rows"] == 3
    sent = [r.query.get("updated_since") for r in SERVER.state.log if r.query.get("ds") == "e2e"]
    # Run 1: the schema sample (first page), then pages of 10, 10 and 3 rows.
    # Run 2: the schema sample again (inference happens once per run), then one page.
    assert sent == [None, None, None, None, None, bookmark]
    assert sorted(read_parquet_dir(out / "orders").column("id").to_pylist()) == list(range(1, 27))

    for done in (first, second):
        assert BEARER_TOKEN not in done.stdout + done.stderr


def test_tap_cli_pipes_into_the_parquet_target(tmp_path: Path) -> None:
    """The Singer way: the tap's CLI (run as a module, the console script is not installed
    in this environment) piped into target-dativo-parquet; secrets stay out of stderr."""
    SERVER.state.set_dataset("e2e-pipe", [make_order(i) for i in range(1, 13)])
    tap_config = {
        "api_url": SERVER.url,
        "auth": {"type": "api_key", "api_key": API_KEY, "in": "query"},
        "streams": [
            {
                "name": "orders",
                "path": "/secure/apikey-query/page",
                "records_path": "$.data[*]",
                "primary_keys": ["id"],
                "schema": ORDERS_SCHEMA,
                "params": {"ds": "e2e-pipe"},
            }
        ],
    }
    (tmp_path / "tap.json").write_text(json.dumps(tap_config))
    (tmp_path / "target.json").write_text(json.dumps({"path": str(tmp_path / "out")}))
    tap = (
        f"{sys.executable} -c 'from tap_dativo_rest.tap import TapDativoRest; TapDativoRest.cli()'"
    )
    command = (
        f"{tap} --config {tmp_path / 'tap.json'} | "
        f"{script('target-dativo-parquet')} --config {tmp_path / 'target.json'}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env={**env(), "LOGLEVEL": "DEBUG"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_parquet_dir(tmp_path / "out" / "orders")
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3]  # /secure serves 3 rows
    assert table.schema.field("customer").type == pa.struct(
        [("name", pa.string()), ("vip", pa.bool_())]
    )
    assert SERVER.state.requests_to("/secure/apikey-query/page")[-1].query["api_key"] == API_KEY
    # urllib3 logs each request URL at DEBUG: it shows up, with the key masked.
    assert (
        '"GET /secure/apikey-query/page?ds=e2e-pipe&api_key=******** HTTP/1.1" 200' in done.stderr
    )
    assert API_KEY not in done.stderr + done.stdout
