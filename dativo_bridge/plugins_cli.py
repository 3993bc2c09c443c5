"""``dativo plugins``: the readers and writers installed in this environment.

Every entry point of the ``dativo.plugins`` group (Dativo's own and those of other
installed distributions) is listed with the distribution and version it comes from, the
interface version its class was built for, whether this Dativo can load it, and the
Singer capabilities its tap or target has (what ``--about`` lists). A plugin that cannot
be imported, or that was built for another major version of the interface, is listed
with the reason instead of stopping the listing.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

import click

from dativo_bridge.errors import PluginLoadError

# interfaces (pyarrow) and loading are imported by the functions that use them: `dativo
# --help` lists this command without paying for them.


@dataclass
class PluginRow:
    """One installed plugin, as ``dativo plugins --json`` prints it."""

    name: str
    kind: str
    reference: str
    package: str | None
    version: str | None
    interface_version: str | None
    status: str
    error: str | None = None
    capabilities: list[str] = field(default_factory=list)


def dativo_version() -> str:
    """The installed distribution's version (pyproject.toml's ``version``: the one place
    it is written; ``dativo --version`` and every Dativo plugin's ``--about`` read it too)."""
    try:
        return importlib.metadata.version("dativo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def accelerator_version() -> str | None:
    """The installed ``dativo-accel``'s version (the Rust accelerators, ``dativo[accel]``),
    or None when it is not installed."""
    try:
        return importlib.metadata.version("dativo-accel")
    except importlib.metadata.PackageNotFoundError:
        return None


def _capabilities(ep: EntryPoint, cls: type) -> list[str]:
    """The capabilities of the plugin's singer-sdk class: the console script of the same
    name when it wraps this class, else the tap or target ``make_tap``/``make_target``
    builds around it."""
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter
    from dativo_bridge.plugin_docs import capabilities_of, plugin_class
    from dativo_bridge.sdk import make_tap, make_target

    attribute = "reader_class" if issubclass(cls, ArrowReader) else "writer_class"
    try:
        script = plugin_class(ep.name)
    except Exception:  # a broken console script must not hide the entry point
        script = None
    if script is None or getattr(script, attribute, None) is not cls:
        if issubclass(cls, ArrowReader):
            script = make_tap(cls, name=ep.name)
        else:
            script = make_target(cast(type[ArrowWriter], cls), name=ep.name)
    return capabilities_of(script)


def _row(ep: EntryPoint) -> PluginRow:
    from dativo_bridge.interfaces import INTERFACE_VERSION, ArrowReader, ArrowWriter
    from dativo_bridge.loading import check_interface, describe_entry_point

    dist = ep.dist
    row = PluginRow(
        name=ep.name,
        kind="?",
        reference=ep.value,
        package=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
        interface_version=None,
        status="ok",
    )
    try:
        cls = ep.load()
    except Exception as exc:
        row.status, row.error = "cannot load", f"{type(exc).__name__}: {exc}"
        return row
    if not isinstance(cls, type) or not issubclass(cls, ArrowReader | ArrowWriter):
        row.status, row.error = "not a plugin", f"{ep.value} is not an ArrowReader/ArrowWriter"
        return row
    row.kind = "reader" if issubclass(cls, ArrowReader) else "writer"
    row.interface_version = str(getattr(cls, "interface_version", INTERFACE_VERSION))
    try:
        check_interface(cls, describe_entry_point(ep))
    except PluginLoadError as exc:
        row.status, row.error = "incompatible", str(exc)
        return row
    try:
        row.capabilities = _capabilities(ep, cls)
    except Exception as exc:
        row.error = f"capabilities unknown: {type(exc).__name__}: {exc}"
    return row


def installed_plugins() -> list[PluginRow]:
    """Every ``dativo.plugins`` entry point, by name (one row per distinct entry point)."""
    from dativo_bridge.loading import PLUGIN_GROUP

    seen: set[tuple[str, str]] = set()
    rows = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: (e.name, e.value)):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        rows.append(_row(ep))
    return rows


def _table(rows: list[PluginRow]) -> list[str]:
    header = ("name", "kind", "package", "version", "interface", "status", "capabilities")
    cells = [
        (
            r.name,
            r.kind,
            r.package or "?",
            r.version or "?",
            r.interface_version or "?",
            r.status,
            ", ".join(r.capabilities),
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *cells]:
        lines.append(
            "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
        )
    return [line.rstrip() for line in lines]


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead.")
def plugins(as_json: bool) -> None:
    """List the installed readers and writers (the dativo.plugins entry points) with their
    package versions, the interface version each was built for, and capabilities."""
    from dativo_bridge.interfaces import INTERFACE_VERSION

    rows = installed_plugins()
    if as_json:
        document: dict[str, Any] = {
            "dativo_version": dativo_version(),
            "interface_version": INTERFACE_VERSION,
            "accelerator_version": accelerator_version(),
            "plugins": [asdict(r) for r in rows],
        }
        click.echo(json.dumps(document, indent=2))
        return
    accel = accelerator_version()
    click.echo(
        f"Dativo {dativo_version()}, reader/writer interface {INTERFACE_VERSION}, "
        + (f"dativo-accel {accel}" if accel else "dativo-accel not installed")
    )
    if not rows:
        click.echo("no plugins installed (no dativo.plugins entry points)")
        return
    for line in _table(rows):
        click.echo(line)
    for r in rows:
        if r.error:
            click.echo(f"{r.name}: {r.error}", err=True)


if __name__ == "__main__":
    sys.exit(plugins())
