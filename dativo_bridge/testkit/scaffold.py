"""``dativo init reader NAME`` / ``dativo init writer NAME``: a new plugin project from the
copier templates in ``dativo_bridge/testkit/templates`` (pyproject with the
``dativo.plugins`` entry point and the console script, the class with its settings schema,
a meltano.yml block, a README with a settings table, and tests that run the conformance
suite), passing its own tests after ``pip install -e .``.

copier is an optional dependency (``pip install 'dativo[scaffold]'``); it records the
answers in ``.copier-answers.yml`` so a project can take template updates
(``copier update``) where the template is a git checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from dativo_bridge.errors import ConfigError

TEMPLATES = Path(__file__).parent / "templates"
_NAME = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$|^[a-z]$")


def create_project(
    kind: str,
    name: str,
    destination: Path,
    description: str | None = None,
    *,
    rust: bool = False,
    template: str | Path | None = None,
    vcs_ref: str | None = None,
) -> Path:
    """Generate a ``kind`` (reader or writer) project for ``name`` under ``destination``.

    Args:
        rust: A reader whose hot path is a Rust extension module (maturin and PyO3).
        template: Another copy of the template (a directory or a git URL; default: the
            one installed with Dativo).
        vcs_ref: The template's git tag or commit to use (a git template only).

    Returns:
        The project directory (``destination``).

    Raises:
        ConfigError: A bad name, a non-empty destination, or copier not installed.
    """
    name = name.removeprefix("tap-") if kind == "reader" else name.removeprefix("target-")
    if not _NAME.match(name):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits and dashes (e.g. weather)"
        )
    if rust and kind != "reader":
        raise ConfigError("--rust is for readers: dativo init reader NAME --rust")
    if destination.exists() and any(destination.iterdir()):
        raise ConfigError(f"{destination} exists and is not empty")
    try:
        from copier import run_copy
    except ImportError:
        raise ConfigError(
            "dativo init needs copier: pip install 'dativo[scaffold]' (or pip install copier)"
        ) from None
    data: dict[str, object] = {"name": name}
    if description:
        data["description"] = description
    if rust:
        data["rust"] = True
    run_copy(
        str(template or TEMPLATES / kind),
        str(destination),
        data=data,
        defaults=True,
        quiet=True,
        unsafe=False,
        vcs_ref=vcs_ref,
    )
    return destination


@click.command("init")
@click.argument("kind", type=click.Choice(["reader", "writer"]))
@click.argument("name")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Project directory (default: ./tap-NAME or ./target-NAME).",
)
@click.option("--description", help="One line for --about and the README.")
@click.option(
    "--rust",
    is_flag=True,
    help="A reader whose hot path is a Rust extension module built by maturin (PyO3); "
    "needs a Rust toolchain to install.",
)
def init(kind: str, name: str, dest: Path | None, description: str | None, rust: bool) -> None:
    """Create a reader or writer project that passes the conformance suite."""
    short = name.removeprefix("tap-").removeprefix("target-")
    plugin = f"{'tap' if kind == 'reader' else 'target'}-{short}"
    destination = dest or Path.cwd() / plugin
    try:
        create_project(kind, short, destination, description, rust=rust)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {plugin} in {destination}")
    needs = " (needs cargo: https://rustup.rs)" if rust else ""
    click.echo(f"next: cd {destination} && pip install -e '.[test]' && pytest{needs}")
