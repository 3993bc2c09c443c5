"""A plugin's ``sandbox:`` mapping (meltano.yml) as a ``dativo sandbox`` command line, and
the audit line logged at every plugin start (its executable's sha256 and the policy)."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from dativo_bridge.errors import ConfigError
from dativo_bridge.sandbox.policy import LEVELS, resolve_executable

_NUMBERS = ("memory_mb", "cpu_seconds", "wall_seconds", "max_file_mb", "max_processes")
_LISTS = ("readable", "writable", "env")
KEYS = ("network", *_NUMBERS, "max_open_files", *_LISTS, "level")


def _fail(plugin: str, message: str) -> ConfigError:
    return ConfigError(f"plugin '{plugin}': sandbox: {message}")


def sandbox_options(plugin: str, mapping: Mapping[str, Any], cwd: str | None) -> list[str]:
    """The ``dativo sandbox`` options for ``mapping``; relative paths are resolved
    against ``cwd`` (the project directory).

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the plugin.
    """
    if not isinstance(mapping, Mapping):
        raise _fail(plugin, f"must be a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(mapping) - set(KEYS))
    if unknown:
        raise _fail(plugin, f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    options = ["--name", plugin]
    if "network" in mapping:
        if not isinstance(mapping["network"], bool):
            raise _fail(plugin, "network must be true or false")
        options.append("--network" if mapping["network"] else "--no-network")
    for key in (*_NUMBERS, "max_open_files"):
        value = mapping.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _fail(plugin, f"{key} must be a positive number, not {value!r}")
        if key != "wall_seconds" and not isinstance(value, int):
            raise _fail(plugin, f"{key} must be a whole number, not {value!r}")
        options += [f"--{key.replace('_', '-')}", str(value)]
    for key in _LISTS:
        values = mapping.get(key) or []
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _fail(plugin, f"{key} must be a list of strings")
        for value in values:
            if key != "env":
                value = os.path.join(cwd or os.getcwd(), os.path.expanduser(value))
            options += [f"--{key}", value]
    level = mapping.get("level", "best-effort")
    if level not in LEVELS:
        raise _fail(plugin, f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    return [*options, "--level", str(level)]


def sandboxed_command(
    plugin: str,
    mapping: Mapping[str, Any],
    command: Sequence[str],
    *,
    cwd: str | None,
    env_names: Sequence[str] = (),
) -> list[str]:
    """``command`` run under ``dativo sandbox`` with the plugin's policy; the variables
    Dativo sets for the plugin (``env_names``) are passed through the scrubbed
    environment."""
    options = sandbox_options(plugin, mapping, cwd)
    for name in env_names:
        options += ["--env", name]
    return [sys.executable, "-m", "dativo_bridge.sandbox_cli", *options, "--", *command]


def executable_sha256(program: str, cwd: str | None = None) -> tuple[str, str]:
    """(the resolved executable, the sha256 of its bytes); ('?', '?') when not found."""
    if os.sep in program and not os.path.isabs(program) and cwd:
        program = os.path.join(cwd, program)
    found = resolve_executable(program, os.environ.get("PATH"))
    if found is None:
        return program, "?"
    digest = hashlib.sha256()
    try:
        with open(found, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return found, "?"
    return found, digest.hexdigest()


def audit_line(
    plugin: str, command: Sequence[str], mapping: Mapping[str, Any] | None, cwd: str | None
) -> str:
    """``audit: tap-foo starts /path/tap-foo sha256=<hex> sandbox: <policy>`` (or
    ``sandbox: none``)."""
    path, digest = executable_sha256(command[0], cwd)
    if mapping is None:
        policy = "none"
    else:
        parts = [f"level={mapping.get('level', 'best-effort')}"]
        parts.append(f"network={'on' if mapping.get('network') else 'off'}")
        for key in KEYS:
            if key in mapping and key not in ("level", "network"):
                value = mapping[key]
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                parts.append(f"{key}={shown}")
        policy = " ".join(parts)
    return f"audit: {plugin} starts {path} sha256={digest} sandbox: {policy}"
