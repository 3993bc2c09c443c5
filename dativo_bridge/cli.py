"""The `dativo` command: run a tap into a target, in process where both allow it."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from dativo_bridge.decrypt_cli import decrypt
from dativo_bridge.delivery import StreamStats
from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.foreign import ForeignTap, ForeignTarget, remove_stale_private_dirs
from dativo_bridge.interfaces import ArrowReader, ArrowWriter
from dativo_bridge.loading import load_class, registered_plugin
from dativo_bridge.project import PluginDef, Project
from dativo_bridge.redact import Redactor, secret_values
from dativo_bridge.runner import RunResult, run
from dativo_bridge.settings import target_schema, validated
from dativo_bridge.state import LocalStateStore

logger = logging.getLogger("dativo")

#: Settings that name a user class instead of a built-in plugin.
CLASS_SETTINGS = {"extractors": "reader_class", "loaders": "writer_class"}


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def stats_table(streams: Mapping[str, StreamStats], elapsed: float, title: str) -> Table:
    """Rows, rows/s, bytes and elapsed per stream."""
    table = Table(title=title)
    for column in ("stream", "rows", "rows/s", "bytes", "files", "elapsed"):
        table.add_column(column, justify="left" if column == "stream" else "right")
    for name, s in streams.items():
        rate = s.rows / elapsed if elapsed > 0 else 0.0
        table.add_row(
            name,
            f"{s.rows:,}",
            f"{rate:,.0f}",
            _human_bytes(s.bytes),
            str(len(s.files)),
            f"{elapsed:.1f}s",
        )
    return table


def resolve(plugin: PluginDef, project: Project) -> tuple[Any, dict[str, Any], list[str]]:
    """(class or Foreign plugin, config, schema-declared secrets) for a plugin definition.

    The config of a Dativo plugin or user class is validated against its settings and
    defaulted (a ConfigError names the plugin as meltano.yml does); a foreign plugin's is
    passed on as it is, for the plugin to check.
    """
    config = dict(plugin.config)
    setting = CLASS_SETTINGS[plugin.kind]
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
    )
    return foreign, config, secret_values(config, None, plugin.sensitive)


def _checked(
    plugin: PluginDef, cls: type[ArrowReader] | type[ArrowWriter], config: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """(validated config, its secrets); the secrets are found before validating, so that
    they are masked even in a validation error."""
    schema = cls.config_jsonschema
    if issubclass(cls, ArrowWriter):
        schema = target_schema(schema)
    secrets = secret_values(config, schema, plugin.sensitive)
    try:
        return validated(schema, config, plugin=plugin.name), secrets
    except ConfigError as exc:
        raise ConfigError(Redactor(secrets).redact(str(exc))) from None


@click.group()
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
    help="Directory of the local state store [default: <project>/.dativo/state].",
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
@click.option("--log-level", default="INFO", show_default=True)
def run_command(
    tap: str,
    target: str,
    project_file: str,
    environment: str | None,
    full_refresh: bool,
    state_dir: str | None,
    state_id: str | None,
    as_json: bool,
    checkpoint_rows: int | None,
    log_level: str,
) -> None:
    """Run TAP into TARGET as defined in meltano.yml.

    Dativo plugins and ArrowReader/ArrowWriter classes run in this process with Arrow
    batches between them; any other Singer executable runs as a subprocess.
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    redactor = Redactor()
    redactor.install()
    console = Console(stderr=True)
    remove_stale_private_dirs()
    try:
        project = Project(project_file, environment)
        tap_def, target_def = project.plugin(tap), project.plugin(target)
        if tap_def.kind != "extractors" or target_def.kind != "loaders":
            raise DativoError(f"'{tap}' must be an extractor and '{target}' a loader")
        source, source_config, tap_secrets = resolve(tap_def, project)
        destination, dest_config, target_secrets = resolve(target_def, project)
        redactor.add(tap_secrets + target_secrets)
        store = LocalStateStore(state_dir or project.dir / ".dativo" / "state")
        sid = state_id or project.state_id(tap, target)
        mode = (
            "in process"
            if not isinstance(source, ForeignTap) and not isinstance(destination, ForeignTarget)
            else "with subprocess plugins"
        )
        logger.info("running %s -> %s %s (state id %s)", tap, target, mode, sid)
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
        )
    except DativoError as exc:
        # One line, however long (a narrow terminal must not wrap it into several).
        console.print(
            f"[bold red]error:[/] {escape(redactor.redact(str(exc)))}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        sys.exit(1)
    except Exception:
        console.print(redactor.redact(traceback.format_exc()), highlight=False, markup=False)
        sys.exit(2)
    if as_json:
        click.echo(redactor.redact(json.dumps(result.to_dict(), default=str)))
        return
    out = Console()
    out.print(stats_table(result.streams, result.elapsed, f"{tap} -> {target}"))
    folders = sorted({str(Path(f).parent.resolve()) for f in result.files})
    if folders:
        out.print("Data landed in:", highlight=False)
        for folder in folders:
            out.print(f"  {redactor.redact(folder)}", highlight=False)
    out.print(f"State saved under id '{sid}' in {store.path(sid)}", highlight=False)


def _run_with_display(
    console: Console, source: Any, destination: Any, *, project: Project, **kwargs: Any
) -> RunResult:
    if not console.is_terminal:
        return run(source, destination, **kwargs)
    with Live(console=console, refresh_per_second=4, transient=True) as live:

        def progress(streams: Mapping[str, StreamStats], elapsed: float) -> None:
            live.update(stats_table(streams, elapsed, "running"))

        return run(source, destination, progress=progress, **kwargs)


main.add_command(decrypt)


if __name__ == "__main__":  # pragma: no cover
    main()
