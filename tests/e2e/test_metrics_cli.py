"""`dativo run` metrics for operators: --metrics-file / meltano.yml's `dativo: metrics_file:`
(Prometheus text for node_exporter's textfile collector), and the --json summary's plugin
versions and file sizes."""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import yaml

from .helpers import dativo_run, write_project

PLUGINS = Path(__file__).parent / "plugins"


def _project(tmp_path: Path, dativo: dict | None = None) -> Path:
    shutil.copytree(PLUGINS, tmp_path / "plugins", dirs_exist_ok=True)
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-slow",
                "config": {
                    "reader_class": "e2e_readers:SlowCounterReader",
                    "plugin_dirs": ["plugins"],
                    "total": 3_000,
                    "batch_rows": 1_000,
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    if dativo is not None:
        data = yaml.safe_load(project.read_text())
        data["dativo"] = dativo
        project.write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_file_option_and_json_summary(tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "dativo.prom"
    done = dativo_run(
        _project(tmp_path),
        "tap-slow",
        "target-dativo-parquet",
        "--state-dir",
        str(tmp_path / "state"),
        "--metrics-file",
        str(prom),
        "--json",
    )
    summary = json.loads(done.stdout)
    samples = _samples(prom.read_text())
    labels = 'pipeline="test:tap-slow-to-target-dativo-parquet",tap="tap-slow",target="target-dativo-parquet"'
    assert samples[f"dativo_run_success{{{labels}}}"] == 1
    assert samples[f'dativo_stream_rows_total{{{labels},stream="counter"}}'] == 3_000
    assert samples[f'dativo_stream_committed_rows_total{{{labels},stream="counter"}}'] == 3_000
    written = samples[f'dativo_stream_written_bytes_total{{{labels},stream="counter"}}']
    assert written > 0
    # The --json summary: plugin versions and the committed files with their sizes.
    plugins = summary["plugins"]
    assert plugins["destination"]["distribution"] == "dativo"
    assert plugins["destination"]["version"] == metadata.version("dativo")
    assert plugins["source"]["class"] == "e2e_readers:SlowCounterReader"
    assert plugins["source"]["version"] is None  # a user class outside any package
    stream = summary["streams"]["counter"]
    sizes = stream["file_sizes"]
    assert sizes and set(sizes) == set(stream["files"])
    for path, size in sizes.items():
        assert size == os.path.getsize(path.removeprefix("file:"))
    assert stream["commits"] >= 1 and set(stream["stage_seconds"]) == {"read", "write", "commit"}
    assert stream["committed_bytes"] == written


def test_metrics_file_from_meltano_yml_is_relative_to_the_project(tmp_path: Path) -> None:
    project = _project(tmp_path, {"metrics_file": "metrics/run.prom", "metrics_interval": 1})
    dativo_run(project, "tap-slow", "target-dativo-parquet", "--state-dir", str(tmp_path / "s"))
    text = (tmp_path / "metrics" / "run.prom").read_text()
    assert "# TYPE dativo_stream_rows_total counter" in text
    assert 'stream="counter"} 3000' in text


def test_a_bad_metrics_interval_is_a_usage_error(tmp_path: Path) -> None:
    project = _project(tmp_path, {"metrics_file": "m.prom", "metrics_interval": 0})
    done = dativo_run(project, "tap-slow", "target-dativo-parquet", check=False)
    assert done.returncode == 2, done.stderr
    assert "metrics interval" in done.stderr


def test_metrics_push_option_puts_to_the_gateway(tmp_path: Path) -> None:
    import http.server
    import threading

    received: list[tuple[str, bytes]] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics/job/dativo"
        dativo_run(
            _project(tmp_path, {"metrics_push": "http://127.0.0.1:9/not-this-one"}),
            "tap-slow",
            "target-dativo-parquet",
            "--state-dir",
            str(tmp_path / "state"),
            "--metrics-push",
            url,  # the option wins over meltano.yml
        )
    finally:
        server.shutdown()
    assert [path for path, _ in received] == ["/metrics/job/dativo"]
    assert 'stream="counter"} 3000' in received[0][1].decode()
