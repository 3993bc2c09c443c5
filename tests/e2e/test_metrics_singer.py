"""Metrics of the Dativo taps and targets run as plain Singer plugins (a shell pipe, as
Meltano runs them): DATIVO_METRICS_FILE / DATIVO_METRICS_PUSH, one set of metrics per
process, with the names `dativo run` uses (docs/operations.md: "Singer mode")."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pyarrow.parquet as pq

from .helpers import env, pipe, script

ROWS = 5_000


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _csv(path: Path, rows: int, start: int = 0) -> Path:
    path.write_text(
        "id,name,amount\n" + "".join(f"{i},n{i},{i}.25\n" for i in range(start, start + rows))
    )
    return path


def _configs(tmp_path: Path, pattern: str) -> str:
    (tmp_path / "tap.json").write_text(
        json.dumps({"files": [{"stream": "orders", "path": pattern, "key_properties": ["id"]}]})
    )
    (tmp_path / "target.json").write_text(json.dumps({"path": str(tmp_path / "out")}))
    return (
        f"{script('tap-dativo-csv')} --config tap.json | "
        f"{script('target-dativo-parquet')} --config target.json"
    )


def test_a_singer_pipe_writes_each_plugins_textfile_with_the_right_counts(tmp_path: Path) -> None:
    _csv(tmp_path / "orders.csv", ROWS)
    command = _configs(tmp_path, str(tmp_path / "orders.csv"))
    textfiles = tmp_path / "textfile"
    pipe(command, tmp_path, {"DATIVO_METRICS_FILE": f"{textfiles}/{{plugin}}.prom"})
    assert sorted(p.name for p in textfiles.iterdir()) == [
        "tap-dativo-csv.prom",
        "target-dativo-parquet.prom",
    ]  # and no temporary file left behind
    tap = _samples((textfiles / "tap-dativo-csv.prom").read_text())
    label = 'tap="tap-dativo-csv"'
    assert tap[f"dativo_run_success{{{label}}}"] == 1
    assert tap[f'dativo_run_info{{{label},status="success"}}'] == 1
    assert tap[f'dativo_stream_rows_total{{{label},stream="orders"}}'] == ROWS
    assert tap[f'dativo_stream_batches_total{{{label},stream="orders"}}'] >= 1
    assert tap[f'dativo_stream_read_bytes_total{{{label},stream="orders"}}'] > ROWS * 8
    read = tap[f'dativo_stream_stage_seconds_total{{{label},stream="orders",stage="read"}}']
    write = tap[f'dativo_stream_stage_seconds_total{{{label},stream="orders",stage="write"}}']
    assert read > 0 and write > 0  # reading the file; encoding and printing the lines

    files = sorted((tmp_path / "out").rglob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == ROWS
    target = _samples((textfiles / "target-dativo-parquet.prom").read_text())
    label = 'target="target-dativo-parquet"'
    assert target[f"dativo_run_success{{{label}}}"] == 1
    assert target[f'dativo_stream_rows_total{{{label},stream="orders"}}'] == ROWS
    assert target[f'dativo_stream_committed_rows_total{{{label},stream="orders"}}'] == ROWS
    assert target[f'dativo_stream_commits_total{{{label},stream="orders"}}'] >= 1
    assert target[f'dativo_stream_files_total{{{label},stream="orders"}}'] == len(files)
    written = target[f'dativo_stream_written_bytes_total{{{label},stream="orders"}}']
    assert written == sum(f.stat().st_size for f in files)
    stage = f'dativo_stream_stage_seconds_total{{{label},stream="orders",stage='
    assert target[stage + '"write"}'] > 0 and target[stage + '"commit"}'] > 0


def test_a_failed_tap_alone_reports_failed(tmp_path: Path) -> None:
    _csv(tmp_path / "a.csv", 300)
    (tmp_path / "b.csv").write_text("id,name,amount\n300,n,1.5\n301,n,2.5,9\n")
    _configs(tmp_path, str(tmp_path / "*.csv"))
    prom = tmp_path / "tap.prom"
    done = subprocess.run(
        [script("tap-dativo-csv"), "--config", "tap.json"],
        cwd=tmp_path,
        env={**env(), "DATIVO_METRICS_FILE": str(prom)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    samples = _samples(prom.read_text())
    label = 'tap="tap-dativo-csv"'
    assert samples[f"dativo_run_success{{{label}}}"] == 0
    assert samples[f'dativo_run_info{{{label},status="failed"}}'] == 1
    records = [line for line in done.stdout.splitlines() if line.startswith(b'{"type":"RECORD"')]
    assert samples[f'dativo_stream_rows_total{{{label},stream="orders"}}'] == len(records)


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, str]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_each_plugin_pushes_to_its_own_group(tmp_path: Path) -> None:
    _csv(tmp_path / "orders.csv", 1_200)
    command = _configs(tmp_path, str(tmp_path / "orders.csv"))
    _Gateway.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics/job/dativo/plugin/{{plugin}}"
        pipe(command, tmp_path, {"DATIVO_METRICS_PUSH": url})
    finally:
        server.shutdown()
        server.server_close()
    pushed = {path: (kind, body) for path, kind, body in _Gateway.received}
    assert sorted(pushed) == [
        "/metrics/job/dativo/plugin/tap-dativo-csv",
        "/metrics/job/dativo/plugin/target-dativo-parquet",
    ]
    kind, body = pushed["/metrics/job/dativo/plugin/target-dativo-parquet"]
    assert kind.startswith("text/plain; version=0.0.4")
    samples = _samples(body)
    assert (
        samples[
            'dativo_stream_committed_rows_total{target="target-dativo-parquet",stream="orders"}'
        ]
        == 1_200
    )
    samples = _samples(pushed["/metrics/job/dativo/plugin/tap-dativo-csv"][1])
    assert samples['dativo_stream_rows_total{tap="tap-dativo-csv",stream="orders"}'] == 1_200


def test_about_lists_the_metrics_variables() -> None:
    for plugin in ("tap-dativo-csv", "target-dativo-parquet"):
        done = subprocess.run(
            [script(plugin), "--about"], capture_output=True, text=True, env=env(), check=True
        )
        for name in ("DATIVO_METRICS_FILE", "DATIVO_METRICS_PUSH", "DATIVO_METRICS_INTERVAL"):
            assert f"  - {name}: " in done.stdout


def test_a_singer_pipe_exports_both_sides_over_otlp(tmp_path: Path) -> None:
    from tests.unit.test_metrics_otlp import otlp_receiver

    _csv(tmp_path / "orders.csv", 2_500)
    command = _configs(tmp_path, str(tmp_path / "orders.csv"))
    clean = {k: "" for k in env() if k.startswith("OTEL_")}
    with otlp_receiver() as (endpoint, received):
        pipe(command, tmp_path, {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    rows = {
        (p.metric, p.attributes.get("dativo.tap") or p.attributes.get("dativo.target")): p.value
        for p in received.points()
        if p.attributes.get("dativo.stream") == "orders"
    }
    assert rows[("dativo.stream.rows", "tap-dativo-csv")] == 2_500
    assert rows[("dativo.stream.rows", "target-dativo-parquet")] == 2_500
    assert rows[("dativo.stream.committed_rows", "target-dativo-parquet")] == 2_500
    assert rows[("dativo.stream.commits", "target-dativo-parquet")] >= 1
    roots = [s for s in received.spans() if s.name == "dativo run"]
    assert len(roots) == 2  # one trace per plugin process


def test_a_failed_target_reports_failed_with_what_it_committed(tmp_path: Path) -> None:
    (tmp_path / "target.json").write_text(
        json.dumps({"path": str(tmp_path / "out"), "checkpoint_rows": 1})
    )
    schema = {
        "type": "SCHEMA",
        "stream": "orders",
        "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "key_properties": ["id"],
    }
    lines = [
        schema,
        *({"type": "RECORD", "stream": "orders", "record": {"id": i}} for i in range(7)),
    ]
    lines += [{"type": "STATE", "value": {"at": 7}}]  # a commit of the 7 rows
    lines += [{"type": "RECORD", "stream": "orders", "record": {"id": 8}}]
    lines += [{"type": "RECORD", "stream": "other", "record": {"id": 1}}]  # no SCHEMA: fails
    prom = tmp_path / "target.prom"
    done = subprocess.run(
        [script("target-dativo-parquet"), "--config", "target.json"],
        cwd=tmp_path,
        input="".join(json.dumps(line) + "\n" for line in lines),
        env={**env(), "DATIVO_METRICS_FILE": str(prom)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == '{"at":7}'
    samples = _samples(prom.read_text())
    label = 'target="target-dativo-parquet"'
    assert samples[f"dativo_run_success{{{label}}}"] == 0
    assert samples[f'dativo_run_info{{{label},status="failed"}}'] == 1
    assert samples[f'dativo_stream_committed_rows_total{{{label},stream="orders"}}'] == 7
    assert samples[f'dativo_stream_commits_total{{{label},stream="orders"}}'] == 1
