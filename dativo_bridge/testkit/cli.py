"""``dativo test-plugin MODULE:CLASS --config FILE``: the conformance suite on an author's
own reader or writer.

MODULE is the code under test: it is imported from the current directory or a PYTHONPATH
entry (else from installed packages) by :func:`dativo_bridge.loading.load_class`, the
loader ``reader_class`` / ``writer_class`` use, so its origin is checked before any of
its code runs and the load is logged with the module file's sha256.

Exit status: 0 every check passed (or was skipped), 1 a check failed, 2 the plugin or
the options could not be used.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dativo_bridge.errors import DativoError
from dativo_bridge.testkit.scaffold import init

if TYPE_CHECKING:
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter

# interfaces (pyarrow), loading and redact are imported where used: `dativo --help` lists
# this command without paying for them.

#: The commands ``dativo`` adds (``main.add_command(test_plugin)``, ``main.add_command(init)``).
__all__ = ["init", "load_plugin", "test_plugin"]


def _search_dirs() -> list[Path]:
    """Where an author's module may come from: the current directory, then PYTHONPATH."""
    dirs = [Path.cwd()]
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry).resolve())
    return dirs


def _home_of(module: str) -> Path | None:
    """The first search directory holding ``module``'s top-level file or package."""
    top = module.split(".")[0]
    for d in _search_dirs():
        if (d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file():
            return d
    return None


def load_plugin(reference: str) -> type[ArrowReader] | type[ArrowWriter]:
    """The ArrowReader or ArrowWriter ``reference`` (``module:Class``) names.

    Raises:
        DativoError: It cannot be loaded, or is neither a reader nor a writer.
    """
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter
    from dativo_bridge.loading import load_class

    module = reference.split(":")[0]
    home = _home_of(module)
    if home is not None:
        cls = load_class(reference, object, allowed_dirs=["."], project_dir=home)
    else:
        cls = load_class(reference, object)
    if issubclass(cls, ArrowReader):
        return cls
    if issubclass(cls, ArrowWriter):
        return cls
    raise DativoError(f"'{reference}' is neither an ArrowReader nor an ArrowWriter")


def _json_file(path: str | None, what: str) -> Any:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"{what} {path}: {exc}") from None


@click.command("test-plugin")
@click.argument("reference", metavar="MODULE:CLASS")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The plugin's settings (JSON).",
)
@click.option(
    "--metadata",
    "metadata_file",
    type=click.Path(dir_okay=False),
    help='Readers: catalog metadata (JSON), e.g. {"*": {"replication-method": '
    '"INCREMENTAL", "replication-key": "updated_at"}}.',
)
@click.option("--stream", "streams", multiple=True, help="Readers: only this stream (repeatable).")
@click.option(
    "--max-rows", default=10_000, show_default=True, help="Readers: rows read per stream."
)
@click.option(
    "--budget",
    default=60.0,
    show_default=True,
    help="Seconds after which no further check is started.",
)
@click.option("--skip", multiple=True, help="A check not to run, e.g. reader.close (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def test_plugin(
    reference: str,
    config_file: str,
    metadata_file: str | None,
    streams: tuple[str, ...],
    max_rows: int,
    budget: float,
    skip: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the conformance suite on a reader or writer class (docs/testkit.md)."""
    from dativo_bridge.interfaces import ArrowReader
    from dativo_bridge.redact import process_redactor, redact, secret_values
    from dativo_bridge.testkit import run_reader_checks, run_writer_checks

    config = _json_file(config_file, "--config")
    if not isinstance(config, dict):
        raise click.UsageError(f"--config {config_file}: not a JSON object")
    process_redactor().add(secret_values(config))
    metadata = _json_file(metadata_file, "--metadata")
    loader_log = logging.getLogger("dativo.loading")
    handler = logging.StreamHandler(sys.stderr)
    loader_log.addHandler(handler)
    loader_log.setLevel(logging.INFO)
    try:
        cls = load_plugin(reference)
    except DativoError as exc:
        click.echo(redact(f"error: {exc}"), err=True)
        sys.exit(2)
    finally:
        loader_log.removeHandler(handler)
    if issubclass(cls, ArrowReader):
        report = run_reader_checks(
            cls,
            config,
            metadata=metadata,
            streams=list(streams) or None,
            max_rows=max_rows,
            budget_seconds=budget,
            skip=skip,
        )
    else:
        report = run_writer_checks(cls, config, budget_seconds=budget, skip=skip)
    if as_json:
        payload = {
            "plugin": report.plugin,
            "ok": report.ok,
            "seconds": round(report.seconds, 3),
            "checks": [
                {"name": r.name, "status": r.status, "detail": r.detail} for r in report.results
            ],
        }
        click.echo(redact(json.dumps(payload, indent=2)))
    else:
        click.echo(redact(report.text()))
    sys.exit(0 if report.ok else 1)
