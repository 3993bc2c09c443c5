"""Run metrics for operators: Prometheus text and OpenTelemetry.

Per run and per stream: rows, bytes read (the Arrow memory of the batches) and written
(what the writers reported committing), batches, commits, seconds per stage (read: waiting
for the reader's next batch; write: handing batches to the destination, which for a Singer
target is encoding them; commit), retries, the expected rows, and for CDC the replication
slot's lag. Exported as

- Prometheus text: a file for node_exporter's textfile collector (written atomically, every
  ``interval`` seconds and at the end), and/or a plain HTTP PUT to a push gateway URL at the
  end of the run;
- OpenTelemetry metrics and one trace per run (a span for the run, one child span per
  stream), when the OpenTelemetry SDK is installed and configured by the standard
  ``OTEL_*`` variables, or when providers are given.

Everything is off by default, and costs nothing when off: nothing of OpenTelemetry is
imported unless it is configured (see :func:`otel_configured`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dativo_bridge.delivery import StreamStats

logger = logging.getLogger("dativo.metrics")

#: Exposition format of the text written and pushed.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The OTEL_* variables that turn OpenTelemetry export on (any of them set).
OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_EXPORTER",
)

STAGES = ("read", "write", "commit")


def otel_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the standard variables ask for OpenTelemetry export: an OTLP endpoint, or
    ``OTEL_METRICS_EXPORTER`` / ``OTEL_TRACES_EXPORTER`` other than ``none``; never with
    ``OTEL_SDK_DISABLED=true``. Reads only the environment (imports nothing)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    for name in OTEL_VARIABLES:
        value = env.get(name, "").strip()
        if value and value.lower() != "none":
            return True
    return False


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Text:
    """Prometheus text exposition, one HELP/TYPE block per metric."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self.base = dict(base)
        self.blocks: dict[str, list[str]] = {}

    def add(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        block = self.blocks.get(name)
        if block is None:
            block = self.blocks[name] = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        block.append(f"{name}{_labels({**self.base, **(labels or {})})} {_number(value)}")

    def text(self) -> str:
        return "".join("\n".join(lines) + "\n" for lines in self.blocks.values())


def render_prometheus(
    streams: Mapping[str, StreamStats],
    *,
    elapsed: float,
    labels: Mapping[str, str],
    status: str = "running",
    started_at: float | None = None,
    replication_lag: int | None = None,
    retries: int = 0,
) -> str:
    """The run's metrics in Prometheus text format (``status``: running, success, failed,
    interrupted)."""
    out = _Text(labels)
    if started_at is not None:
        out.add(
            "dativo_run_start_timestamp_seconds",
            "gauge",
            "When the run started (Unix time).",
            round(started_at, 3),
        )
    out.add("dativo_run_duration_seconds", "gauge", "Seconds the run has taken.", round(elapsed, 3))
    out.add(
        "dativo_run_running",
        "gauge",
        "1 while the run goes, 0 once it ended.",
        int(status == "running"),
    )
    if status != "running":
        out.add(
            "dativo_run_success",
            "gauge",
            "1 if the run completed, 0 if it failed or was interrupted.",
            int(status == "success"),
        )
    out.add(
        "dativo_run_info",
        "gauge",
        "The run's status (running, success, failed, interrupted) as a label.",
        1,
        {"status": status},
    )
    out.add("dativo_run_retries_total", "counter", "Operations the plugins retried.", retries)
    if replication_lag is not None:
        out.add(
            "dativo_run_replication_lag_bytes",
            "gauge",
            "WAL bytes the replication slot retains after the last acknowledged commit.",
            replication_lag,
        )
    per_stream: list[tuple[str, str, str, str]] = [
        ("dativo_stream_rows_total", "counter", "Rows read.", "rows"),
        ("dativo_stream_committed_rows_total", "counter", "Rows committed.", "committed_rows"),
        (
            "dativo_stream_read_bytes_total",
            "counter",
            "Arrow memory of the batches read.",
            "bytes",
        ),
        (
            "dativo_stream_written_bytes_total",
            "counter",
            "Bytes the destination reported committing.",
            "committed_bytes",
        ),
        ("dativo_stream_batches_total", "counter", "Batches read.", "batches"),
        ("dativo_stream_commits_total", "counter", "Commits of the stream's writer.", "commits"),
    ]
    for metric, kind, help_text, attribute in per_stream:
        for name, stats in streams.items():
            out.add(metric, kind, help_text, getattr(stats, attribute), {"stream": name})
    for name, stats in streams.items():
        out.add(
            "dativo_stream_files_total",
            "counter",
            "Files committed.",
            len(stats.files),
            {"stream": name},
        )
    for name, stats in streams.items():
        if stats.expected_rows is not None:
            out.add(
                "dativo_stream_expected_rows",
                "gauge",
                "The reader's estimate of the stream's rows.",
                stats.expected_rows,
                {"stream": name},
            )
    for name, stats in streams.items():
        for stage in STAGES:
            out.add(
                "dativo_stream_stage_seconds_total",
                "counter",
                "Seconds spent per stage (read, write, commit).",
                round(getattr(stats, f"{stage}_seconds"), 6),
                {"stream": name, "stage": stage},
            )
    return out.text()


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a temporary file in the same folder,
    whose name the textfile collector ignores, renamed over it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def push(url: str, text: str, timeout: float = 10.0) -> None:
    """PUT ``text`` to a Prometheus push gateway URL (e.g.
    ``http://gateway:9091/metrics/job/dativo/pipeline/x``): replaces the group's metrics."""
    request = urllib.request.Request(
        url, data=text.encode("utf-8"), method="PUT", headers={"Content-Type": CONTENT_TYPE}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


@dataclass
class MetricsConfig:
    """Where a run's metrics go (everything off by default).

    Attributes:
        file: A Prometheus text file (node_exporter's textfile collector: a ``.prom`` name
            in its directory), rewritten every ``interval`` seconds and at the end.
        push_url: A push gateway URL that gets one HTTP PUT at the end.
        interval: Seconds between two writes of ``file`` while the run goes.
        otel: OpenTelemetry export: None decides from the OTEL_* variables.
        meter_provider: An OpenTelemetry MeterProvider to use (e.g. the SDK's with an
            in-memory reader); None: one made from the OTEL_* variables.
        tracer_provider: An OpenTelemetry TracerProvider to use, likewise.
    """

    file: str | None = None
    push_url: str | None = None
    interval: float = 15.0
    otel: bool | None = None
    meter_provider: Any = None
    tracer_provider: Any = None

    @property
    def otel_enabled(self) -> bool:
        if self.otel is not None:
            return self.otel
        return (
            self.meter_provider is not None or self.tracer_provider is not None or otel_configured()
        )

    @property
    def enabled(self) -> bool:
        return bool(self.file or self.push_url or self.otel_enabled)


class RunMetrics:
    """The metrics of one run: :meth:`update` now and then, :meth:`finish` once.

    Args:
        config: Where they go.
        labels: Labels of every sample (``pipeline``, ``tap``, ``target``).
    """

    def __init__(self, config: MetricsConfig, labels: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.labels = dict(labels or {})
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._otel = _Otel(config, self.labels) if config.otel_enabled else None

    def watch(self, streams: Callable[[], Mapping[str, StreamStats]]) -> None:
        """Rewrite the metrics file every ``interval`` seconds from a timer thread until
        :meth:`finish`, also while no batch arrives (a slow first query, a stuck
        destination): ``dativo_run_duration_seconds`` keeps moving."""
        if not self.config.file or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.config.interval):
                try:
                    snapshot = dict(streams())
                except RuntimeError:  # a stream was added while copying: next time
                    continue
                self.update(snapshot, time.monotonic() - self.started_monotonic)

        self._thread = threading.Thread(target=loop, name="dativo-metrics", daemon=True)
        self._thread.start()

    def update(self, streams: Mapping[str, StreamStats], elapsed: float) -> None:
        """Rewrite the metrics file, at most every ``interval`` seconds (a failure to write
        it is a warning: metrics never fail a run)."""
        if not self.config.file:
            return
        with self._lock:
            now = time.monotonic()
            if self._finished or (
                self._last_write and now - self._last_write < self.config.interval
            ):
                return
            self._last_write = now
            self._write(self._text(streams, elapsed, "running", None, 0))

    def _text(
        self,
        streams: Mapping[str, StreamStats],
        elapsed: float,
        status: str,
        lag: int | None,
        retries: int,
    ) -> str:
        return render_prometheus(
            streams,
            elapsed=elapsed,
            labels=self.labels,
            status=status,
            started_at=self.started_at,
            replication_lag=lag,
            retries=retries,
        )

    def _write(self, text: str) -> None:
        assert self.config.file
        try:
            write_atomically(self.config.file, text)
        except OSError as exc:
            logger.warning("could not write the metrics file %s: %s", self.config.file, exc)

    def finish(
        self,
        streams: Mapping[str, StreamStats],
        elapsed: float,
        status: str,
        *,
        replication_lag: int | None = None,
        retries: int = 0,
    ) -> None:
        """The run ended (``status``: success, failed or interrupted): write the file,
        push, and export to OpenTelemetry. A failure is a warning."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        text = self._text(streams, elapsed, status, replication_lag, retries)
        with self._lock:
            self._finished = True
            if self.config.file:
                self._write(text)
        if self.config.push_url:
            try:
                push(self.config.push_url, text)
            except Exception as exc:
                logger.warning("could not push the metrics to %s: %s", self.config.push_url, exc)
        if self._otel is not None:
            try:
                self._otel.export(
                    streams,
                    self.started_at,
                    self.started_monotonic,
                    status,
                    replication_lag,
                    retries,
                )
            except Exception as exc:
                logger.warning("could not export OpenTelemetry metrics: %s", exc)


class _Otel:
    """OpenTelemetry metrics and the run's trace (imported only when configured)."""

    def __init__(self, config: MetricsConfig, labels: Mapping[str, str]) -> None:
        from opentelemetry.sdk.resources import Resource

        self.labels = {f"dativo.{k}": v for k, v in labels.items()}
        self._own: list[Any] = []  # providers made here: shut down (flushed) at the end
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "dativo")})
        self.meter_provider = config.meter_provider
        if self.meter_provider is None:
            self.meter_provider = _env_meter_provider(resource)
            if self.meter_provider is not None:
                self._own.append(self.meter_provider)
        self.tracer_provider = config.tracer_provider
        if self.tracer_provider is None:
            self.tracer_provider = _env_tracer_provider(resource)
            if self.tracer_provider is not None:
                self._own.append(self.tracer_provider)

    def export(
        self,
        streams: Mapping[str, StreamStats],
        started_at: float,
        started_monotonic: float,
        status: str,
        lag: int | None,
        retries: int,
    ) -> None:
        def wall_ns(monotonic: float | None) -> int:
            at = started_at if monotonic is None else started_at + monotonic - started_monotonic
            return int(at * 1e9)

        if self.meter_provider is not None:
            meter = self.meter_provider.get_meter("dativo")
            run_attributes = {**self.labels, "dativo.status": status}
            counters = {
                "rows": meter.create_counter("dativo.stream.rows", unit="{row}"),
                "committed_rows": meter.create_counter(
                    "dativo.stream.committed_rows", unit="{row}"
                ),
                "bytes": meter.create_counter("dativo.stream.read_bytes", unit="By"),
                "committed_bytes": meter.create_counter("dativo.stream.written_bytes", unit="By"),
                "batches": meter.create_counter("dativo.stream.batches", unit="{batch}"),
                "commits": meter.create_counter("dativo.stream.commits", unit="{commit}"),
            }
            stage = meter.create_counter("dativo.stream.stage.duration", unit="s")
            for name, stats in streams.items():
                attributes = {**run_attributes, "dativo.stream": name}
                for attribute, counter in counters.items():
                    counter.add(getattr(stats, attribute), attributes)
                for step in STAGES:
                    stage.add(
                        getattr(stats, f"{step}_seconds"), {**attributes, "dativo.stage": step}
                    )
            meter.create_counter("dativo.run.retries", unit="{retry}").add(retries, run_attributes)
            meter.create_gauge("dativo.run.duration", unit="s").set(
                time.time() - started_at, run_attributes
            )
            if lag is not None:
                meter.create_gauge("dativo.run.replication_lag", unit="By").set(lag, run_attributes)
        if self.tracer_provider is not None:
            from opentelemetry import trace
            from opentelemetry.trace import Status, StatusCode

            tracer = self.tracer_provider.get_tracer("dativo")
            root = tracer.start_span(
                "dativo run", start_time=wall_ns(None), attributes={**self.labels}
            )
            root.set_attribute("dativo.status", status)
            root.set_attribute("dativo.rows", sum(s.rows for s in streams.values()))
            if lag is not None:
                root.set_attribute("dativo.replication_lag_bytes", lag)
            context = trace.set_span_in_context(root)
            for name, stats in streams.items():
                span = tracer.start_span(
                    f"stream {name}",
                    context=context,
                    start_time=wall_ns(stats.started),
                    attributes={
                        "dativo.stream": name,
                        "dativo.rows": stats.rows,
                        "dativo.committed_rows": stats.committed_rows,
                        "dativo.read_bytes": stats.bytes,
                        "dativo.written_bytes": stats.committed_bytes,
                        "dativo.batches": stats.batches,
                        "dativo.commits": stats.commits,
                        **{f"dativo.{s}_seconds": getattr(stats, f"{s}_seconds") for s in STAGES},
                    },
                )
                span.end(end_time=wall_ns(stats.finished))
            if status != "success":
                root.set_status(Status(StatusCode.ERROR, status))
            root.end()
        for provider in self._own:
            provider.shutdown()


def _exporter_names(variable: str) -> list[str]:
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        # An OTLP endpoint alone means OTLP (the specification's default exporter).
        return ["otlp"] if _otlp_endpoint(variable) else []
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]


def _otlp_endpoint(variable: str) -> bool:
    signal = "METRICS" if "METRICS" in variable else "TRACES"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _env_meter_provider(resource: Any) -> Any:
    """A MeterProvider with the exporters OTEL_METRICS_EXPORTER names (console, otlp)."""
    names = _exporter_names("OTEL_METRICS_EXPORTER")
    if not names:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    readers = []
    for name in names:
        exporter: Any
        if name == "console":
            exporter = ConsoleMetricExporter()
        elif name == "otlp":
            exporter = _otlp("metric_exporter", "OTLPMetricExporter")
        else:
            logger.warning("OTEL_METRICS_EXPORTER: exporter %r is not supported", name)
            continue
        if exporter is not None:
            # One export, at shutdown (the end of the run).
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=3.6e6))
    return MeterProvider(metric_readers=readers, resource=resource) if readers else None


def _env_tracer_provider(resource: Any) -> Any:
    """A TracerProvider with the exporters OTEL_TRACES_EXPORTER names (console, otlp)."""
    names = _exporter_names("OTEL_TRACES_EXPORTER")
    if not names:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=resource)
    added = False
    for name in names:
        exporter: Any
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp("trace_exporter", "OTLPSpanExporter")
        else:
            logger.warning("OTEL_TRACES_EXPORTER: exporter %r is not supported", name)
            continue
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
            added = True
    return provider if added else None


def _otlp(module: str, cls: str) -> Any:
    """An OTLP exporter from opentelemetry-exporter-otlp (HTTP, else gRPC), configured by
    the OTEL_EXPORTER_OTLP_* variables; None (with a warning) if it is not installed."""
    import importlib

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    order = ["grpc", "http"] if protocol == "grpc" else ["http", "grpc"]
    for kind in order:
        try:
            found = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{kind}.{module}")
        except ImportError:
            continue
        return getattr(found, cls)()
    logger.warning(
        "OTLP export asked for, but opentelemetry-exporter-otlp is not installed "
        "(pip install opentelemetry-exporter-otlp)"
    )
    return None


#: The variables that turn a Dativo Singer plugin's metrics on (docs/operations.md: "Singer
#: mode"); OpenTelemetry is turned on by the OTEL_* variables, as for ``dativo run``.
SINGER_VARIABLES = {
    "DATIVO_METRICS_FILE": "Prometheus text file, rewritten while the plugin runs and at its "
    "end; {plugin} is replaced by the plugin's name",
    "DATIVO_METRICS_PUSH": "push gateway URL that gets one HTTP PUT at the end; {plugin} is "
    "replaced by the plugin's name",
    "DATIVO_METRICS_INTERVAL": "seconds between two writes of DATIVO_METRICS_FILE (default 15)",
}


def singer_metrics(
    plugin: str, role: str, env: Mapping[str, str] | None = None
) -> RunMetrics | None:
    """The metrics of a Dativo tap or target run as a Singer plugin (``role``: ``tap`` or
    ``target``, the label its name goes in), from ``DATIVO_METRICS_FILE``,
    ``DATIVO_METRICS_PUSH``, ``DATIVO_METRICS_INTERVAL`` and the OTEL_* variables; None
    when none of them asks for anything (then nothing is measured)."""
    env = os.environ if env is None else env

    def value(name: str) -> str | None:
        text = env.get(name, "").strip()
        return text.replace("{plugin}", plugin) if text else None

    interval = 15.0
    raw = env.get("DATIVO_METRICS_INTERVAL", "").strip()
    if raw:
        try:
            interval = float(raw)
        except ValueError:
            interval = 0.0
        if not interval > 0:
            logger.warning(
                "DATIVO_METRICS_INTERVAL must be a number of seconds above 0, not %r: using 15",
                raw,
            )
            interval = 15.0
    config = MetricsConfig(
        file=value("DATIVO_METRICS_FILE"),
        push_url=value("DATIVO_METRICS_PUSH"),
        interval=interval,
        otel=otel_configured(env),
    )
    if not config.enabled:
        return None
    return RunMetrics(config, {role: plugin})
