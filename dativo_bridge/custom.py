"""`tap-dativo-custom` / `target-dativo-custom`: run a user's ArrowReader / ArrowWriter,
named in the plugin's config as ``reader_class`` / ``writer_class: package.module:Class``,
as a full Singer tap or target (for meltano.yml and shell pipes)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dativo_bridge.discovery import with_catalog
from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.interfaces import ArrowReader, ArrowWriter
from dativo_bridge.loading import load_class
from dativo_bridge.redact import process_redactor, redact, secret_values
from dativo_bridge.sdk import make_tap, make_target


def _config_from_argv(argv: Sequence[str]) -> tuple[dict[str, Any], Path]:
    config: dict[str, Any] = {}
    base = Path.cwd()
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv) and argv[i + 1] != "ENV":
            path = Path(argv[i + 1])
            with open(path, encoding="utf-8") as fh:
                config.update(json.load(fh))
    return config, base


def _load(setting: str, base: type, argv: Sequence[str]) -> type:
    config, project = _config_from_argv(argv)
    # Before the class (and its schema's secret markings) is known: secrets by name.
    process_redactor().add(secret_values(config))
    reference = config.get(setting)
    if not reference:
        raise ConfigError(f"the config needs '{setting}': 'package.module:ClassName'")
    return load_class(
        str(reference), base, allowed_dirs=config.get("plugin_dirs") or [], project_dir=project
    )


def _main(setting: str, base: type) -> None:
    # The SDK configures logging once the plugin starts; the class load is logged before.
    load_logger = logging.getLogger("dativo.loading")
    load_logger.addHandler(logging.StreamHandler(sys.stderr))
    load_logger.setLevel(logging.INFO)
    load_logger.propagate = False
    argv = sys.argv[1:]
    if "--about" in argv or "--help" in argv:
        cls = None
        with contextlib.suppress(DativoError):
            cls = _load(setting, base, argv)
    else:
        try:
            cls = _load(setting, base, argv)
        except DativoError as exc:
            print(redact(f"error: {exc}"), file=sys.stderr)
            sys.exit(1)
    if cls is None:
        print(
            f"usage: {Path(sys.argv[0]).name} --config CONFIG (with '{setting}' set) ...",
            file=sys.stderr,
        )
        sys.exit(0)
    plugin = with_catalog(make_tap(cls)) if base is ArrowReader else make_target(cls)
    plugin.cli()


def tap_main() -> None:
    """Entry point of tap-dativo-custom."""
    _main("reader_class", ArrowReader)


def target_main() -> None:
    """Entry point of target-dativo-custom."""
    _main("writer_class", ArrowWriter)
