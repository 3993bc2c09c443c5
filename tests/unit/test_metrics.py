"""Run metrics (dativo_bridge.metrics): Prometheus text in a file and to a push gateway,
OpenTelemetry metrics and one trace per run, and nothing of OpenTelemetry when off."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from dativo_bridge.delivery import StreamStats
from dativo_bridge.errors import WriteError
from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.metrics import (
    MetricsConfig,
    RunMetrics,
    otel_configured,
    render_prometheus,
    write_atomically,
)
from dativo_bridge.runner import run

SCHEMA = pa.schema([pa.field("id", pa.int64())])
SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')


class Numbers(ArrowReader):
    name = "numbers"
    config_jsonschema = {
        "type": "object",
        "properties": {
            "batches": {"type": "integer"},
            "pause": {"type": "number"},
            "prom": {"type": "string"},
        },
    }

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("one", SCHEMA), StreamInfo("two", SCHEMA)]

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        return 10 * int(self.config.get("batches", 3)) if stream.name == "one" else None

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        for i in range(int(self.config.get("batches", 3))):
            time.sleep(float(self.config.get("pause", 0)))
            yield pa.record_batch([pa.array(range(i * 10, i * 10 + 10), pa.int64())], SCHEMA)


class Memory(ArrowWriter):
    def write(self, batch: pa.RecordBatch) -> None:
        self.pending = getattr(self, "pending", 0) + batch.num_rows

    def commit(self) -> CommitResult:
        rows, self.pending = getattr(self, "pending", 0), 0
        return CommitResult(rows=rows, bytes=rows * 8)


class Broken(Memory):
    def write(self, batch: pa.RecordBatch) -> None:
        raise WriteError("disk on fire")


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, checking every line is HELP, TYPE or a valid sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            continue
        assert SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    for key, value in samples.items():
        metric = key.split("{", 1)[0]
        if metric == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    raise KeyError(f"{name} {labels} not in {sorted(samples)}")


def test_prometheus_text_has_every_metric_and_escapes_labels() -> None:
    stats = StreamStats(
        rows=30, bytes=240, batches=3, committed_rows=30, expected_rows=30, commits=2
    )
    stats.committed_bytes, stats.read_seconds, stats.commit_seconds = 99, 0.5, 0.25
    text = render_prometheus(
        {'odd"name\\x': stats},
        elapsed=1.5,
        labels={"pipeline": "dev:a-to-b"},
        status="success",
        started_at=1_700_000_000.0,
        replication_lag=4096,
        retries=2,
    )
    samples = _samples(text)
    stream = 'odd\\"name\\\\x'
    assert _value(samples, "dativo_stream_rows_total", stream=stream) == 30
    assert _value(samples, "dativo_stream_read_bytes_total") == 240
    assert _value(samples, "dativo_stream_written_bytes_total") == 99
    assert _value(samples, "dativo_stream_commits_total") == 2
    assert _value(samples, "dativo_stream_batches_total") == 3
    assert _value(samples, "dativo_stream_expected_rows") == 30
    assert _value(samples, "dativo_stream_stage_seconds_total", stage="read") == 0.5
    assert _value(samples, "dativo_stream_stage_seconds_total", stage="commit") == 0.25
    assert _value(samples, "dativo_stream_stage_seconds_total", stage="write") == 0
    assert _value(samples, "dativo_run_replication_lag_bytes", pipeline="dev:a-to-b") == 4096
    assert _value(samples, "dativo_run_retries_total") == 2
    assert _value(samples, "dativo_run_success") == 1
    assert _value(samples, "dativo_run_running") == 0
    # One HELP and one TYPE per metric.
    names = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(names) == len(set(names))


def test_prometheus_text_parses_with_the_reference_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    text = render_prometheus(
        {"s": StreamStats(rows=5, expected_rows=9)},
        elapsed=2.0,
        labels={"pipeline": 'a"b'},
        status="failed",
    )
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    # The client's parser names counters without their _total suffix.
    rows = families["dativo_stream_rows"].samples[0]
    assert rows.value == 5 and rows.labels == {"pipeline": 'a"b', "stream": "s"}
    assert families["dativo_run_success"].samples[0].value == 0


def test_a_run_writes_the_metrics_file_as_it_goes_and_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "dativo.prom"
    seen: list[str] = []

    def progress(streams: Any, elapsed: float) -> None:
        if path.exists():
            seen.append(path.read_text())

    metrics = RunMetrics(MetricsConfig(file=str(path), interval=0.05), {"pipeline": "p"})
    result = run(
        Numbers,
        Memory,
        source_config={"batches": 6, "pause": 0.05},
        progress=progress,
        progress_interval=0.01,
        metrics=metrics,
    )
    assert result.rows == 120
    running = [t for t in seen if "dativo_run_running{" in t]
    assert running and all(_value(_samples(t), "dativo_run_running") == 1 for t in running)
    assert len({t for t in running}) >= 2, "the file was not rewritten while the run went"
    final = _samples(path.read_text())
    assert _value(final, "dativo_run_success", pipeline="p") == 1
    assert _value(final, "dativo_stream_rows_total", stream="one") == 60
    assert _value(final, "dativo_stream_committed_rows_total", stream="two") == 60
    assert _value(final, "dativo_stream_written_bytes_total", stream="two") == 480
    assert _value(final, "dativo_stream_expected_rows", stream="one") == 60
    assert _value(final, "dativo_stream_stage_seconds_total", stream="one", stage="read") >= 0.25
    # Atomic: no temporary file is left next to it.
    assert [p.name for p in path.parent.iterdir()] == ["dativo.prom"]


def test_an_interrupted_run_says_so(tmp_path: Path) -> None:
    from dativo_bridge.runner import Cancellation, RunInterrupted

    path = tmp_path / "dativo.prom"
    cancel = Cancellation()

    def progress(streams: Any, elapsed: float) -> None:
        if sum(s.rows for s in streams.values()) >= 20:
            cancel.request()

    with pytest.raises(RunInterrupted):
        run(
            Numbers,
            Memory,
            source_config={"batches": 50, "pause": 0.01},
            cancel=cancel,
            progress=progress,
            progress_interval=1e-6,
            metrics=RunMetrics(MetricsConfig(file=str(path))),
        )
    samples = _samples(path.read_text())
    assert _value(samples, "dativo_run_info", status="interrupted") == 1
    assert _value(samples, "dativo_run_success") == 0


class SlowStart(Numbers):
    """A source whose first batch takes a while (a slow first query)."""

    seen: ClassVar[list[str]] = []

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        path = Path(str(self.config["prom"]))
        for _ in range(10 if stream.name == "one" else 0):
            time.sleep(0.1)
            if path.exists():
                self.seen.append(path.read_text())
        yield from super().read(stream, bookmark)


def test_the_metrics_file_moves_while_no_batch_arrives(tmp_path: Path) -> None:
    path = tmp_path / "dativo.prom"
    metrics = RunMetrics(MetricsConfig(file=str(path), interval=0.1))
    run(SlowStart, Memory, source_config={"prom": str(path)}, metrics=metrics)
    durations = [_value(_samples(t), "dativo_run_duration_seconds") for t in SlowStart.seen]
    assert len(set(durations)) >= 3, durations
    assert all(_value(_samples(t), "dativo_run_running") == 1 for t in SlowStart.seen)
    # The end wins over the timer: the last file is the final one.
    assert _value(_samples(path.read_text()), "dativo_run_success") == 1


def test_a_failed_run_still_writes_its_metrics(tmp_path: Path) -> None:
    path = tmp_path / "dativo.prom"
    metrics = RunMetrics(MetricsConfig(file=str(path)), {"pipeline": "p"})
    with pytest.raises(WriteError):
        run(Numbers, Broken, metrics=metrics)
    samples = _samples(path.read_text())
    assert _value(samples, "dativo_run_success") == 0
    assert _value(samples, "dativo_run_running") == 0
    assert _value(samples, "dativo_run_info", status="failed") == 1


def test_write_atomically_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_atomically(path, "a 1\n")
    inode = path.stat().st_ino
    write_atomically(path, "a 2\n")
    assert path.read_text() == "a 2\n" and path.stat().st_ino != inode
    assert oct(path.stat().st_mode & 0o777) == "0o644"


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, str, bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.command, self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_metrics_are_pushed_to_a_gateway_with_one_put() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics/job/dativo/pipeline/p"
        run(Numbers, Memory, metrics=RunMetrics(MetricsConfig(push_url=url), {"pipeline": "p"}))
    finally:
        server.shutdown()
    assert len(_Gateway.received) == 1
    method, path, content_type, body = _Gateway.received[0]
    assert method == "PUT" and path == "/metrics/job/dativo/pipeline/p"
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(body.decode())
    assert _value(samples, "dativo_stream_rows_total", stream="one") == 30
    assert _value(samples, "dativo_run_success") == 1


def test_an_unreachable_gateway_is_a_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = RunMetrics(MetricsConfig(push_url="http://127.0.0.1:9/metrics/job/x"))
    result = run(Numbers, Memory, metrics=metrics)
    assert result.rows == 60
    assert "could not push the metrics" in caplog.text


def test_opentelemetry_metrics_and_one_trace_per_run() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    config = MetricsConfig(
        meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider
    )
    run(Numbers, Memory, metrics=RunMetrics(config, {"pipeline": "p"}))
    points: dict[tuple[str, str | None], float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    stream = point.attributes.get("dativo.stream")
                    points[(metric.name, stream)] = point.value
                    assert point.attributes["dativo.pipeline"] == "p"
    assert points[("dativo.stream.rows", "one")] == 30
    assert points[("dativo.stream.written_bytes", "two")] == 240
    assert points[("dativo.stream.commits", "one")] >= 1
    assert ("dativo.stream.stage.duration", "one") in points
    assert ("dativo.run.duration", None) in points
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.parent is None]
    assert [s.name for s in roots] == ["dativo run"]
    root = roots[0]
    children = sorted(s.name for s in finished if s.parent is not None)
    assert children == ["stream one", "stream two"]
    assert all(s.context.trace_id == root.context.trace_id for s in finished)
    assert root.attributes["dativo.rows"] == 60
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in finished)


def test_otel_configured_reads_only_the_standard_variables() -> None:
    assert not otel_configured({})
    assert otel_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otel_configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not otel_configured({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
    assert not otel_configured({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    assert not otel_configured({"OTEL_SERVICE_NAME": "x"})


PROBE = """
import json, sys
sys.path.insert(0, {here!r})
from test_metrics import Numbers, Memory
from dativo_bridge.metrics import MetricsConfig, RunMetrics
from dativo_bridge.runner import run
import dativo_bridge.cli
config = MetricsConfig(file={file!r})
run(Numbers, Memory, metrics=RunMetrics(config) if config.enabled else None)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
"""


def _probe(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = PROBE.format(here=str(Path(__file__).parent), file=str(tmp_path / "m.prom"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_no_opentelemetry_import_unless_configured(tmp_path: Path) -> None:
    assert _probe(tmp_path)[0] == []
    assert (tmp_path / "m.prom").exists()
    loaded, printed = _probe(
        tmp_path, OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console"
    )
    assert "opentelemetry.sdk.trace" in loaded and "opentelemetry.sdk.metrics" in loaded
    # The console exporters, made from the variables, printed the run's span and metrics.
    assert '"name": "dativo run"' in printed and "dativo.stream.rows" in printed


SLOW_SINGER_TAP = """
import json, sys, time
def out(message):
    sys.stdout.write(json.dumps(message) + "\\n"); sys.stdout.flush()
out({"type": "SCHEMA", "stream": "s", "schema": {"type": "object",
     "properties": {"id": {"type": "integer"}}}, "key_properties": ["id"]})
for i in range(4):
    time.sleep(0.15)
    out({"type": "RECORD", "stream": "s", "record": {"id": i}})
out({"type": "STATE", "value": {"done": True}})
"""


def test_a_foreign_taps_stages_are_measured(tmp_path: Path) -> None:
    from dativo_bridge.foreign import ForeignTap

    script = tmp_path / "tap.py"
    script.write_text(SLOW_SINGER_TAP)
    path = tmp_path / "m.prom"
    tap = ForeignTap(name="tap-slow-singer", command=[sys.executable, str(script)])
    result = run(tap, Memory, metrics=RunMetrics(MetricsConfig(file=str(path))))
    stats = result.streams["s"]
    assert stats.rows == 4 and stats.committed_rows == 4
    # Waiting for the tap's lines (and decoding them) is the read stage.
    assert stats.read_seconds >= 0.3, stats
    assert stats.write_seconds > 0 and stats.commit_seconds > 0
    samples = _samples(path.read_text())
    assert _value(samples, "dativo_stream_stage_seconds_total", stream="s", stage="read") >= 0.3
