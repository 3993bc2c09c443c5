"""The `dativo` command: run a tap into a target, in process where both allow it."""

from __future__ import annotations

import errno
import json
import logging
import re
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.state import STATE_STORE_MODES

# What a subcommand or a code path needs is imported where it is used, so that `dativo
# run` imports neither the other subcommands (decrypt's crypto and AWS modules, the
# testkit, the sandbox launcher) nor rich's table and live display off a terminal, and
# `dativo --help` or `dativo sandbox` not the runner (issue 22).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from dativo_bridge.delivery import StreamStats
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter
    from dativo_bridge.project import PluginDef, Project
    from dativo_bridge.redact import Redactor
    from dativo_bridge.runner import RunInterrupted, RunResult
    from dativo_bridge.state import StateStore

logger = logging.getLogger("dativo")

#: Settings that name a user class instead of a built-in plugin.
CLASS_SETTINGS = {"extractors": "reader_class", "loaders": "writer_class"}


#: Exit codes of ``dativo run`` (documented in its --help and docs/dativo-run.md).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def make_console(*, stderr: bool) -> Console:
    """A console for stdout or stderr; off a terminal (a file, a pipe, CI) it never wraps
    lines, so paths and messages are not split mid-word at 80 columns."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


def local_path(file: str) -> Path | None:
    """The local path of a committed file (a plain path or a ``file:`` URI); None for a
    file in an object store (``s3://...``)."""
    if file.startswith("file://"):
        return Path(file[len("file://") :])
    if file.startswith("file:"):
        return Path(file[len("file:") :])
    if "://" in file:
        return None
    return Path(file)


def landing_folders(files: list[str]) -> list[str]:
    """The folders the committed files are in: local ones resolved, URIs as they are."""
    folders = set()
    for file in files:
        path = local_path(file)
        if path is None:
            folders.add(file.rsplit("/", 1)[0])
        else:
            folders.add(str(path.parent.resolve()))
    return sorted(folders)


def _disk_bytes(files: list[str]) -> int | None:
    """Bytes on disk of the local committed files (None if none can be measured)."""
    total, seen = 0, False
    for file in files:
        path = local_path(file)
        if path is None:
            continue
        try:
            total += path.stat().st_size
            seen = True
        except OSError:
            continue
    return total if seen else None


#: Seconds a stream must have run before its ETA is shown (the first rate is noise).
ETA_AFTER_SECONDS = 3.0


def stream_progress(stats: StreamStats, now: float) -> tuple[float | None, float | None]:
    """(percent done, seconds left) of a stream whose reader estimated its rows; (None,
    None) without an estimate. The percentage stays at most 99 until the stream ends (an
    estimate may be low), and there is no ETA in the stream's first seconds, nor once it
    passed its estimate."""
    expected = stats.expected_rows
    if expected is None:
        return None, None
    if stats.finished is not None:
        return 100.0, 0.0
    if expected > 0:
        percent = min(99.0, 100.0 * stats.rows / expected)
    else:
        percent = 99.0 if stats.rows else 0.0
    ran = now - stats.started if stats.started is not None else 0.0
    remaining = expected - stats.rows
    if ran < ETA_AFTER_SECONDS or stats.rows <= 0 or remaining <= 0:
        return percent, None
    return percent, remaining / (stats.rows / ran)


def format_eta(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def stats_table(
    streams: Mapping[str, StreamStats], elapsed: float, title: str, now: float | None = None
) -> Table:
    """Rows, rows/s, Arrow memory, committed bytes on disk (where the files are local) and
    elapsed per stream; % and ETA for streams whose reader estimated their size."""
    from rich.table import Table

    now = time.monotonic() if now is None else now
    table = Table(title=title)
    on_disk = {name: _disk_bytes(s.files) for name, s in streams.items()}
    columns = ["stream", "rows", "rows/s", "memory"]
    if any(v is not None for v in on_disk.values()):
        columns.append("on disk")
    # % and ETA while a stream with an estimate runs (the summary at the end has none).
    sized = any(s.expected_rows is not None and s.finished is None for s in streams.values())
    if sized:
        columns += ["%", "ETA"]
    columns += ["files", "elapsed"]
    for column in columns:
        table.add_column(column, justify="left" if column == "stream" else "right")
    for name, s in streams.items():
        rate = s.rows / elapsed if elapsed > 0 else 0.0
        row = [name, f"{s.rows:,}", f"{rate:,.0f}", _human_bytes(s.bytes)]
        if "on disk" in columns:
            disk = on_disk[name]
            row.append("-" if disk is None else _human_bytes(disk))
        if sized:
            percent, eta = stream_progress(s, now)
            row.append("-" if percent is None else f"{percent:.0f}%")
            if s.finished is not None and percent is not None:
                row.append("done")
            else:
                row.append("-" if eta is None else format_eta(eta))
        row += [str(len(s.files)), f"{elapsed:.1f}s"]
        table.add_row(*row)
    return table


def progress_line(
    streams: Mapping[str, StreamStats], elapsed: float, now: float | None = None
) -> str:
    """One line of progress: rows, rows/s, Arrow memory and elapsed over all streams, then
    % and ETA of each running stream whose reader estimated its size."""
    now = time.monotonic() if now is None else now
    rows = sum(s.rows for s in streams.values())
    memory = sum(s.bytes for s in streams.values())
    committed = sum(s.committed_rows for s in streams.values())
    rate = rows / elapsed if elapsed > 0 else 0.0
    line = (
        f"progress: {rows:,} rows ({committed:,} committed), {rate:,.0f} rows/s, "
        f"{_human_bytes(memory)} memory, {elapsed:.1f}s elapsed"
    )
    for name, s in streams.items():
        if s.finished is not None:
            continue
        percent, eta = stream_progress(s, now)
        if percent is None:
            continue
        line += f"; '{name}' {percent:.0f}%"
        if eta is not None:
            line += f" ETA {format_eta(eta)}"
    return line


def progress_fields(
    streams: Mapping[str, StreamStats], elapsed: float, now: float | None = None
) -> dict[str, Any]:
    """The numbers of a progress line, for ``--log-format json`` records."""
    now = time.monotonic() if now is None else now
    rows = sum(s.rows for s in streams.values())
    per_stream: dict[str, Any] = {}
    for name, s in streams.items():
        percent, eta = stream_progress(s, now)
        per_stream[name] = {
            "rows": s.rows,
            "committed_rows": s.committed_rows,
            "memory_bytes": s.bytes,
            "expected_rows": s.expected_rows,
            "percent": None if percent is None else round(percent, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "done": s.finished is not None,
        }
    return {
        "rows": rows,
        "committed_rows": sum(s.committed_rows for s in streams.values()),
        "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 else 0.0,
        "memory_bytes": sum(s.bytes for s in streams.values()),
        "elapsed_seconds": round(elapsed, 3),
        "streams": per_stream,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "dativo_fields", None)
        if isinstance(fields, Mapping):  # a progress record's numbers (progress_fields)
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ConsoleHandler(logging.Handler):
    """Log records printed through a rich Console, so that on a terminal they appear above
    the live progress table instead of breaking it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(level: str, log_format: str, console: Console) -> logging.Handler:
    """The root logger at ``level``, writing text or JSON lines to stderr (through
    ``console`` on a terminal)."""
    handler: logging.Handler
    if console.is_terminal and log_format == "text":
        handler = ConsoleHandler(console)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


_ERRNO_HINTS = {
    errno.EACCES: "give the user running dativo write access there, or point {what} elsewhere",
    errno.EPERM: "give the user running dativo write access there, or point {what} elsewhere",
    errno.EROFS: "the file system is read-only: point {what} at a writable place",
    errno.ENOSPC: "the device is full: free space on it, or point {what} at another device",
    errno.EDQUOT: "the disk quota is exhausted: free space, or point {what} elsewhere",
    errno.ENOENT: "create the missing folder, or fix {what}",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix {what}",
    errno.EEXIST: "something is in the way at that path: move it, or fix {what}",
    errno.EISDIR: "the path is a folder where a file was expected: fix {what}",
}


def _strings(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, str) and value:
            out.append((name, value))
        elif isinstance(value, Mapping):
            out.extend(_strings(value, f"{name}."))
    return out


def _setting_for(filename: str, config: Mapping[str, Any], base: Path) -> str | None:
    """The setting whose value is ``filename`` or a folder above it."""
    target = Path(filename)
    for name, value in _strings(config):
        candidate = local_path(value)
        if candidate is None:
            continue
        if not candidate.is_absolute():
            candidate = base / candidate
        if target == candidate or candidate in target.parents:
            return name
    return None


def describe_error(
    exc: BaseException,
    plugins: Mapping[str, tuple[str, Mapping[str, Any]]],
    project_dir: Path,
) -> str:
    """One line a person can act on: which plugin, which setting or resource, what to do.

    ``plugins`` maps "source"/"destination" to (plugin name, its settings)."""
    side = getattr(exc, "dativo_side", None)
    plugin, config = plugins.get(side or "", ("", {}))
    who = f"plugin '{plugin}'" if plugin else "dativo"
    if isinstance(exc, DativoError):
        text = str(exc)
        return text if not plugin or plugin in text else f"{who}: {text}"
    if isinstance(exc, OSError):
        filename = exc.filename if isinstance(exc.filename, str) else None
        if filename is None:
            # pyarrow's file system errors name the path only in their message.
            quoted = re.search(r"'(/[^']*)'", str(exc))
            filename = quoted.group(1) if quoted else None
        setting = _setting_for(filename, config, project_dir) if filename else None
        what = f"setting '{setting}'" if setting else "the plugin's path setting"
        reason = exc.strerror or str(exc).split(". Detail:")[0]
        resource = f" at {filename}" if filename else ""
        setting_part = f" (setting '{setting}')" if setting else ""
        hint = _ERRNO_HINTS.get(exc.errno or -1, "check the resource and {what}").format(what=what)
        return f"{who}: {reason}{resource}{setting_part}: {hint}"
    if plugin:
        return f"{who} failed: {type(exc).__name__}: {exc} (the traceback: --log-level debug)"
    return (
        f"unexpected {type(exc).__name__}: {exc}; this is a bug in dativo: rerun with "
        "--log-level debug and report the traceback"
    )


def _run_on_ray(
    source: Any,
    destination: Any,
    *,
    refused: Mapping[str, Any],
    console: Console | None = None,
    progress_interval: float = 0.0,
    **kwargs: Any,
) -> RunResult:
    """``--engine ray``: the run's partitions as Ray tasks (dativo_bridge.engines); options
    the engine does not implement are refused, not ignored."""
    given = [name for name, value in refused.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not supported with --engine ray (one commit at the end, "
            "no periodic checkpoints or metrics yet): remove it or use --engine local"
        )
    from dativo_bridge.engines.ray_engine import TasksDisplay, run_with_ray

    with TasksDisplay(console, progress_interval) as tasks:  # tasks done / total
        result: RunResult = run_with_ray(source, destination, progress=tasks, **kwargs)
    return result


def resolve(plugin: PluginDef, project: Project) -> tuple[Any, dict[str, Any], list[str]]:
    """(class or Foreign plugin, config, schema-declared secrets) for a plugin definition.

    The config of a Dativo plugin or user class is validated against its settings and
    defaulted (a ConfigError names the plugin as meltano.yml does); a foreign plugin's is
    passed on as it is, for the plugin to check.
    """
    from dativo_bridge.foreign import ForeignTap, ForeignTarget
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter
    from dativo_bridge.loading import load_class, registered_plugin
    from dativo_bridge.redact import secret_values

    config = dict(plugin.config)
    setting = CLASS_SETTINGS[plugin.kind]
    in_process = (
        bool(config.get(setting))
        or registered_plugin(plugin.executable) is not None
        or registered_plugin(plugin.name) is not None
    )
    if plugin.sandbox and in_process:
        # In-process code under a sandbox runs out of process (docs/sandbox.md).
        from dativo_bridge.ipc_plugins import sandboxed_plugin_class

        sandboxed = sandboxed_plugin_class(plugin, config, setting, str(project.dir))
        return sandboxed, *_checked(plugin, sandboxed, config)
    base: type[ArrowReader] | type[ArrowWriter] = (
        ArrowReader if plugin.kind == "extractors" else ArrowWriter
    )
    if config.get(setting):
        dirs = config.pop("plugin_dirs", None) or []
        cls: type[ArrowReader] | type[ArrowWriter] = load_class(
            str(config.pop(setting)), base, allowed_dirs=dirs, project_dir=project.dir
        )
        return cls, *_checked(plugin, cls, config)
    registered = registered_plugin(plugin.executable) or registered_plugin(plugin.name)
    if registered is not None and issubclass(registered, base):
        return registered, *_checked(plugin, registered, config)
    command = plugin.command(project.dir)
    foreign_cls = ForeignTap if plugin.kind == "extractors" else ForeignTarget
    foreign = foreign_cls(
        name=plugin.name,
        command=command,
        config=config,
        select=plugin.select,
        metadata=plugin.metadata,
        cwd=str(project.dir),
        sandbox=plugin.sandbox,
    )
    return foreign, config, secret_values(config, None, plugin.sensitive)


def _checked(
    plugin: PluginDef, cls: type[ArrowReader] | type[ArrowWriter], config: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """(validated config, its secrets); the secrets are found before validating, so that
    they are masked even in a validation error."""
    from dativo_bridge.interfaces import ArrowWriter
    from dativo_bridge.redact import Redactor, secret_values
    from dativo_bridge.settings import target_schema, validated

    schema = cls.config_jsonschema
    if issubclass(cls, ArrowWriter):
        schema = target_schema(schema)
    secrets = secret_values(config, schema, plugin.sensitive)
    try:
        return validated(schema, config, plugin=plugin.name), secrets
    except ConfigError as exc:
        raise ConfigError(Redactor(secrets).redact(str(exc))) from None


#: The subcommands other than ``run``: name -> (module, attribute). Their modules are
#: imported when the command is called or listed (``dativo --help``), not by ``dativo run``.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "decrypt": ("dativo_bridge.decrypt_cli", "decrypt"),
    "sandbox": ("dativo_bridge.sandbox_cli", "sandbox"),
    "test-plugin": ("dativo_bridge.testkit.cli", "test_plugin"),
    "init": ("dativo_bridge.testkit.scaffold", "init"),
    "plugins": ("dativo_bridge.plugins_cli", "plugins"),
}


class LazyGroup(click.Group):
    """A click group whose LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            import importlib

            module, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="dativo")
def main() -> None:
    """Dativo: fast, type-faithful Singer taps and targets on Apache Arrow."""


@main.command("run")
@click.argument("tap")
@click.argument("target")
@click.option(
    "--project",
    "project_file",
    default="meltano.yml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The meltano.yml defining the plugins.",
)
@click.option("--environment", "-e", default=None, help="Meltano environment to apply.")
@click.option("--full-refresh", is_flag=True, help="Ignore saved state; read everything.")
@click.option(
    "--state-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Directory of the local state store [default: <project>/.dativo/state]; "
    "implies --state-store local.",
)
@click.option(
    "--state-store",
    type=click.Choice(STATE_STORE_MODES),
    default="auto",
    show_default=True,
    envvar="DATIVO_STATE_STORE",
    help="Where state is kept: meltano = Meltano's state backend for the project (what "
    "`meltano run` uses), local = .dativo/state, auto = Meltano's if the project uses "
    "Meltano (.meltano, state_backend or database_uri set), else local.",
)
@click.option("--state-id", default=None, help="Override the state id.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option(
    "--checkpoint-rows",
    type=int,
    default=None,
    help="Commit the destination after this many rows "
    "[default: the target's checkpoint_rows setting, else 1,000,000].",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    help="DEBUG also prints the traceback of an error.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per log line on stderr.",
)
@click.option(
    "--progress-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="Off a terminal, seconds between one-line progress reports on stderr (0: none).",
)
@click.option(
    "--metrics-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the run's metrics as Prometheus text to this file (for node_exporter's "
    "textfile collector), atomically, every --metrics-interval seconds and at the end "
    "[default: dativo: metrics_file: in meltano.yml, else none].",
)
@click.option(
    "--metrics-push",
    "metrics_push",
    default=None,
    help="PUT the run's metrics (Prometheus text) to this push gateway URL at the end, e.g. "
    "http://gateway:9091/metrics/job/dativo [default: dativo: metrics_push:, else none].",
)
@click.option(
    "--metrics-interval",
    type=float,
    default=None,
    help="Seconds between two writes of --metrics-file while the run goes "
    "[default: dativo: metrics_interval:, else 15].",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="local: this process; ray: partitions as tasks on a Ray cluster with one Iceberg "
    'commit (docs/scale-out.md; pip install "dativo[ray]") [default: dativo: engine:, '
    "else local].",
)
@click.option(
    "--ray-address",
    default=None,
    help="The Ray cluster to join [default: dativo: ray_address:, else RAY_ADDRESS, else a "
    "local Ray instance].",
)
def run_command(
    tap: str,
    target: str,
    project_file: str,
    environment: str | None,
    full_refresh: bool,
    state_dir: str | None,
    state_store: str,
    state_id: str | None,
    as_json: bool,
    checkpoint_rows: int | None,
    log_level: str,
    log_format: str,
    progress_interval: float,
    metrics_file: str | None,
    metrics_push: str | None,
    metrics_interval: float | None,
    engine: str | None,
    ray_address: str | None,
) -> None:
    """Run TAP into TARGET as defined in meltano.yml.

    Dativo plugins and ArrowReader/ArrowWriter classes run in this process with Arrow
    batches between them; any other Singer executable runs as a subprocess.

    Ctrl-C (SIGINT) or SIGTERM stops the run within seconds: what is not committed is
    discarded, and a rerun resumes from the last committed state.

    \b
    Exit codes:
      0    the run completed
      1    an error (one line names the plugin, the setting and what to do)
      2    usage: a bad option, or a plugin not defined in meltano.yml
      130  interrupted by SIGINT (Ctrl-C)
      143  terminated by SIGTERM
    """
    from rich.markup import escape

    from dativo_bridge.foreign import ForeignTap, ForeignTarget, remove_stale_private_dirs
    from dativo_bridge.meltano_state import MeltanoStateStore, choose_state_store
    from dativo_bridge.project import Project
    from dativo_bridge.redact import Redactor
    from dativo_bridge.runner import Cancellation, RunInterrupted, RunResult

    console = make_console(stderr=True)
    setup_logging(log_level, log_format, console)
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    redactor = Redactor()
    redactor.install()
    cancel = Cancellation()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # A second signal stops at once, the way it would without this handler.
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        cancel.request(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def fail(message: str, code: int) -> NoReturn:
        message = redactor.redact(message)
        if log_format == "json":
            logger.error("%s", message)
        else:
            # One line, however long (a narrow terminal must not wrap it into several).
            console.print(
                f"[bold red]error:[/] {escape(message)}",
                highlight=False,
                markup=True,
                soft_wrap=True,
            )
        sys.exit(code)

    remove_stale_private_dirs()
    plugins: dict[str, tuple[str, Mapping[str, Any]]] = {}
    project: Project | None = None
    store: StateStore | None = None
    sid = ""
    try:
        try:
            project = Project(project_file, environment)
            tap_def, target_def = project.plugin(tap), project.plugin(target)
            if tap_def.kind != "extractors" or target_def.kind != "loaders":
                names = project.plugin_names()
                raise ConfigError(
                    f"'{tap}' must be an extractor and '{target}' a loader "
                    f"(extractors: {', '.join(names['extractors']) or '(none)'}; "
                    f"loaders: {', '.join(names['loaders']) or '(none)'})"
                )
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        for plugin_def in (tap_def, target_def):
            for warning in plugin_def.check_env():
                logger.warning("%s", warning)
        plugins = {"source": (tap, tap_def.config), "destination": (target, target_def.config)}
        source, source_config, tap_secrets = resolve(tap_def, project)
        destination, dest_config, target_secrets = resolve(target_def, project)
        redactor.add(tap_secrets + target_secrets)
        try:
            store = choose_state_store(project, mode=state_store, state_dir=state_dir)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        sid = state_id or project.state_id(tap, target)
        mode = (
            "in process"
            if not isinstance(source, ForeignTap) and not isinstance(destination, ForeignTarget)
            else "with subprocess plugins"
        )
        logger.info("running %s -> %s %s (state id %s)", tap, target, mode, sid)
        try:
            metrics = _run_metrics(
                project, metrics_file, metrics_push, metrics_interval, sid, tap, target
            )
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        logger.info("state store: %s", store.describe(sid))
        run_settings = project.data.get("dativo") or {}
        run_settings = run_settings if isinstance(run_settings, dict) else {}
        if (engine or run_settings.get("engine") or "local") == "ray":
            result = _run_on_ray(
                source,
                destination,
                source_config=source_config,
                destination_config=dest_config,
                state_store=store,
                state_id=sid,
                select=tap_def.select,
                metadata=tap_def.metadata,
                full_refresh=full_refresh,
                ray_address=ray_address or run_settings.get("ray_address"),
                cancel=cancel,
                console=console,
                progress_interval=progress_interval,
                refused={
                    "--checkpoint-rows": checkpoint_rows,
                    "--metrics-file / --metrics-push (or dativo: metrics_*)": metrics,
                },
            )
        else:
            result = _run_with_display(
                console,
                source,
                destination,
                source_config=source_config,
                destination_config=dest_config,
                state_store=store,
                state_id=sid,
                select=tap_def.select,
                metadata=tap_def.metadata,
                full_refresh=full_refresh,
                checkpoint_rows=checkpoint_rows,
                redactor=redactor,
                project=project,
                cancel=cancel,
                progress_interval=progress_interval,
                metrics=metrics,
            )
        store.flush()
    except RunInterrupted as exc:
        _flush_state(store)
        _report_interrupt(console, exc, store, sid, redactor, log_format)
        sys.exit(EXIT_SIGTERM if exc.signum == signal.SIGTERM else EXIT_SIGINT)
    except SystemExit:
        raise
    except BaseException as exc:
        if cancel.is_set() and isinstance(exc, Exception | KeyboardInterrupt):
            signum = cancel.signum or signal.SIGINT
            interrupted = RunInterrupted(signum, RunResult(state_id=sid, state=None))
            _flush_state(store)
            _report_interrupt(console, interrupted, store, sid, redactor, log_format)
            sys.exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)
        if not isinstance(exc, Exception):
            raise
        _flush_state(store)
        if debug:
            logger.debug("%s", redactor.redact(traceback.format_exc()))
        base = project.dir if project is not None else Path.cwd()
        fail(describe_error(exc, plugins, base), EXIT_ERROR)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        summary = {
            **result.to_dict(),
            "state_store": {"kind": store.kind, "location": store.location(sid)},
            "plugins": {
                "source": plugin_version(tap, source),
                "destination": plugin_version(target, destination),
            },
        }
        if isinstance(store, MeltanoStateStore):
            summary["state_store"]["backend"] = store.backend
        click.echo(redactor.redact(json.dumps(summary, default=str)))
        return
    out = make_console(stderr=False)
    if result.streams:
        out.print(stats_table(result.streams, result.elapsed, f"{tap} -> {target}"))
    else:
        out.print(
            f"{tap} -> {target}: both ran as subprocesses, their Singer messages passed "
            f"straight through, so there are no per-stream counts; finished in "
            f"{result.elapsed:.1f}s" + ("" if result.state else "; the target reported no state"),
            highlight=False,
        )
    folders = landing_folders(result.files)
    if folders:
        out.print("Data landed in:", highlight=False)
        for folder in folders:
            out.print(f"  {redactor.redact(folder)}", highlight=False)
    out.print(
        redactor.redact(f"State saved under id '{sid}' in {store.describe(sid)}"), highlight=False
    )
    if result.replication_lag is not None:
        out.print(
            f"Replication slot lag after the last commit: {_human_bytes(result.replication_lag)} "
            "of WAL retained (docs/cdc.md: monitoring)",
            highlight=False,
        )


def _run_metrics(
    project: Project,
    file: str | None,
    push_url: str | None,
    interval: float | None,
    sid: str,
    tap: str,
    target: str,
) -> Any:
    """The run's metrics from the options, else meltano.yml's top-level ``dativo:``
    mapping (``metrics_file``, ``metrics_push``, ``metrics_interval``), and OpenTelemetry
    when the OTEL_* variables configure it; None when everything is off."""
    settings = project.data.get("dativo") or {}
    if not isinstance(settings, Mapping):
        raise ConfigError("meltano.yml: 'dativo:' must be a mapping")
    file = file or settings.get("metrics_file")
    push_url = push_url or settings.get("metrics_push")
    if interval is None:
        interval = float(settings.get("metrics_interval", 15.0))
    if interval <= 0:
        raise ConfigError(f"the metrics interval must be more than 0 seconds, not {interval}")
    from dativo_bridge.metrics import MetricsConfig, RunMetrics

    if file and not Path(str(file)).is_absolute():
        file = str(project.dir / str(file))
    config = MetricsConfig(file=file, push_url=push_url, interval=interval)
    if not config.enabled:
        return None
    return RunMetrics(config, {"pipeline": sid, "tap": tap, "target": target})


def plugin_version(name: str, plugin: Any) -> dict[str, Any]:
    """What ran as a plugin: its name, class, distribution and version (None where
    unknown: a user class outside any installed package, a foreign executable)."""
    from dativo_bridge.foreign import ForeignTap, ForeignTarget

    if isinstance(plugin, ForeignTap | ForeignTarget):
        return {
            "name": name,
            "command": plugin.command[0] if plugin.command else None,
            "version": None,
        }
    from importlib import metadata

    cls = plugin if isinstance(plugin, type) else type(plugin)
    top = cls.__module__.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    distribution = dists[0] if dists else None
    version = None
    if distribution is not None:
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = None
    return {
        "name": name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "distribution": distribution,
        "version": version,
    }


def _flush_state(store: StateStore | None) -> None:
    """Save a state the store left waiting, when the run ended with an error: the rows
    before it are committed."""
    try:
        if store is not None:
            store.flush()
    except Exception as exc:
        logger.error("the last committed state could not be saved: %s", exc)


def _report_interrupt(
    console: Console,
    exc: RunInterrupted,
    store: StateStore | None,
    sid: str,
    redactor: Redactor,
    log_format: str,
) -> None:
    """What an interrupted run committed (its last durable state) and that a rerun resumes."""
    from rich.markup import escape

    name = signal.Signals(exc.signum).name
    committed = {n: s.committed_rows for n, s in exc.result.streams.items()}
    if exc.result.state:
        rows = ", ".join(f"{n} {r:,} rows" for n, r in committed.items()) if committed else ""
        where = f" in {store.describe(sid)}" if store is not None and sid else ""
        what = (
            f"committed before it: {rows}; " if rows else "committed before it: "
        ) + f"state saved under id '{sid}'{where}"
        resume = "rerun the same command to resume from there"
    else:
        what = "nothing was committed"
        resume = "a rerun starts from the beginning"
    message = (
        f"interrupted by {name}: stopped, what was not committed is discarded; {what}; {resume}"
    )
    message = redactor.redact(message)
    if log_format == "json":
        logger.error("%s", message)
    else:
        console.print(f"[bold yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)


def _run_with_display(
    console: Console,
    source: Any,
    destination: Any,
    *,
    project: Project,
    progress_interval: float,
    **kwargs: Any,
) -> RunResult:
    from dativo_bridge.runner import run

    if not console.is_terminal:

        def line(streams: Mapping[str, StreamStats], elapsed: float) -> None:
            now = time.monotonic()
            logger.info(
                "%s",
                progress_line(streams, elapsed, now),
                extra={"dativo_fields": progress_fields(streams, elapsed, now)},
            )

        return run(
            source, destination, progress=line, progress_interval=progress_interval, **kwargs
        )
    from rich.live import Live

    with Live(console=console, refresh_per_second=4, transient=True) as live:

        def progress(streams: Mapping[str, StreamStats], elapsed: float) -> None:
            live.update(stats_table(streams, elapsed, "running"))

        return run(source, destination, progress=progress, **kwargs)


if __name__ == "__main__":  # pragma: no cover
    main()
