"""OpenTelemetry export over OTLP/HTTP, for real: the exporters made from the OTEL_*
variables POST to a tiny receiver on 127.0.0.1 (here, also used by
tests/e2e/test_metrics_singer.py), which decodes the protobuf requests with
opentelemetry-proto; the tests check the metric names, units, values and the trace."""

from __future__ import annotations

import gzip
import http.server
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dativo_bridge.delivery import StreamStats
from dativo_bridge.metrics import MetricsConfig, RunMetrics


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    """OTLP attributes (repeated KeyValue) as a dict."""
    return {kv.key: _value(kv.value) for kv in key_values}


@dataclass
class Point:
    """One data point of a metric: its value, attributes and the resource's."""

    metric: str
    kind: str
    unit: str
    value: float
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class Received:
    """What the receiver got: the decoded requests, and the content types."""

    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def points(self) -> list[Point]:
        found = []
        for request in self.metrics:
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            number = point.WhichOneof("value")
                            found.append(
                                Point(
                                    metric.name,
                                    kind,
                                    metric.unit,
                                    getattr(point, number),
                                    attributes(point.attributes),
                                    resource,
                                )
                            )
        return found

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.traces
            for resource_spans in request.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
        ]


class _Handler(http.server.BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        response: Any
        with self.received.lock:
            self.received.content_types.add(self.headers.get("Content-Type", ""))
            if self.path == "/v1/metrics":
                self.received.metrics.append(ExportMetricsServiceRequest.FromString(body))
                response = ExportMetricsServiceResponse()
            elif self.path == "/v1/traces":
                self.received.traces.append(ExportTraceServiceRequest.FromString(body))
                response = ExportTraceServiceResponse()
            else:
                self.send_response(404)
                self.end_headers()
                return
        data = response.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """Serve on 127.0.0.1 (a free port); yields the endpoint URL and what it received."""
    received = Received()
    handler = type("Handler", (_Handler,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


# The tests: the exporters Dativo makes from the OTEL_* variables, against the receiver.


def _stats(rows: int, batches: int, commits: int) -> StreamStats:
    return StreamStats(
        rows=rows,
        bytes=rows * 8,
        batches=batches,
        committed_rows=rows,
        commits=commits,
        committed_bytes=rows * 3,
        read_seconds=0.5,
        write_seconds=0.25,
        commit_seconds=0.125,
        started=time.monotonic() - 1,
        finished=time.monotonic(),
    )


def _otlp_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dativo-test")


def test_a_runs_metrics_and_trace_arrive_over_otlp_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as (endpoint, received):
        _otlp_env(monkeypatch, endpoint)
        config = MetricsConfig()
        assert config.otel_enabled  # from the endpoint alone
        metrics = RunMetrics(config, {"pipeline": "dev:a-to-b", "tap": "a", "target": "b"})
        streams = {"orders": _stats(1_000, 4, 2), "users": _stats(30, 1, 1)}
        metrics.finish(streams, 2.5, "success", replication_lag=4096, retries=3)
    assert received.content_types == {"application/x-protobuf"}
    points = received.points()
    assert {p.resource.get("service.name") for p in points} == {"dativo-test"}
    by_name: dict[tuple[str, str | None], Point] = {}
    for point in points:
        key = (point.metric, point.attributes.get("dativo.stream"))
        if point.metric == "dativo.stream.stage.duration":
            key = (point.metric, f"{key[1]}/{point.attributes['dativo.stage']}")
        assert key not in by_name, key
        by_name[key] = point
        assert point.attributes["dativo.pipeline"] == "dev:a-to-b"
        assert point.attributes["dativo.tap"] == "a"
        assert point.attributes["dativo.status"] == "success"

    def value(metric: str, stream: str | None = None) -> float:
        return by_name[(metric, stream)].value

    assert value("dativo.stream.rows", "orders") == 1_000
    assert value("dativo.stream.rows", "users") == 30
    assert value("dativo.stream.committed_rows", "orders") == 1_000
    assert value("dativo.stream.read_bytes", "orders") == 8_000
    assert value("dativo.stream.written_bytes", "users") == 90
    assert value("dativo.stream.batches", "orders") == 4
    assert value("dativo.stream.commits", "orders") == 2
    assert value("dativo.stream.stage.duration", "orders/read") == 0.5
    assert value("dativo.stream.stage.duration", "users/commit") == 0.125
    assert value("dativo.run.retries") == 3
    assert value("dativo.run.replication_lag") == 4096
    assert value("dativo.run.duration") > 0
    assert by_name[("dativo.stream.rows", "orders")].kind == "sum"
    assert by_name[("dativo.stream.rows", "orders")].unit == "{row}"
    assert by_name[("dativo.run.replication_lag", None)].kind == "gauge"
    assert by_name[("dativo.stream.read_bytes", "orders")].unit == "By"

    spans = {span.name: span for span in received.spans()}
    assert sorted(spans) == ["dativo run", "stream orders", "stream users"]
    root = spans["dativo run"]
    assert attributes(root.attributes)["dativo.rows"] == 1_030
    assert attributes(root.attributes)["dativo.replication_lag_bytes"] == 4096
    for name in ("stream orders", "stream users"):
        assert spans[name].parent_span_id == root.span_id
        assert spans[name].trace_id == root.trace_id
    assert attributes(spans["stream orders"].attributes)["dativo.commits"] == 2


def test_a_failed_run_exports_an_error_span(monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as (endpoint, received):
        _otlp_env(monkeypatch, endpoint)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # traces only
        RunMetrics(MetricsConfig(), {"tap": "a"}).finish(
            {"orders": _stats(10, 1, 0)}, 1.0, "failed"
        )
    assert received.metrics == []
    (root,) = [s for s in received.spans() if s.name == "dativo run"]
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert root.status.message == "failed"
    assert attributes(root.attributes)["dativo.status"] == "failed"
