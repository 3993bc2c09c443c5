"""Singer plugins of any language run as subprocesses, with the codecs at the boundary."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from dativo_bridge.errors import PluginFailedError
from dativo_bridge.redact import Redactor

logger = logging.getLogger("dativo.foreign")

STDERR_TAIL_LINES = 40


@dataclass
class ForeignPlugin:
    """A Singer executable: the command, its settings and selection.

    Attributes:
        name: Plugin name, for messages.
        command: argv prefix, e.g. ``["tap-github"]`` or ``["sh", "tap.sh"]``.
        config: Settings written to a private temporary ``--config`` file.
        select: Meltano-style selection patterns (taps only; applied to a catalog).
        metadata: Catalog metadata overrides (taps only).
        env: Extra environment variables.
    """

    name: str
    command: Sequence[str]
    config: Mapping[str, Any] = field(default_factory=dict)
    select: Sequence[str] = ()
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


class ForeignTap(ForeignPlugin):
    """A Singer tap run as a subprocess."""


class ForeignTarget(ForeignPlugin):
    """A Singer target run as a subprocess."""


class _StderrTail:
    """Keeps the last lines a plugin wrote to stderr (redacted) and logs them at debug."""

    def __init__(self, name: str, pipe: IO[bytes], redactor: Redactor) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._name = name
        self._redactor = redactor
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            line = self._redactor.redact(raw.decode("utf-8", "replace").rstrip("\n"))
            self.lines.append(line)
            logger.debug("[%s] %s", self._name, line)

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


class RunningPlugin:
    """A started plugin process whose stderr tail is kept for error messages."""

    def __init__(
        self,
        plugin: ForeignPlugin,
        args: Sequence[str],
        redactor: Redactor,
        *,
        stdin: Any = subprocess.DEVNULL,
    ) -> None:
        self.plugin = plugin
        env = {**os.environ, **plugin.env}
        argv = [*plugin.command, *args]
        logger.info("starting %s: %s", plugin.name, redactor.redact(" ".join(argv)))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=plugin.cwd,
            )
        except OSError as exc:
            raise PluginFailedError(
                plugin.name, 127, f"could not start {argv[0]!r}: {exc}"
            ) from None
        assert self.proc.stderr is not None
        self.stderr = _StderrTail(plugin.name, self.proc.stderr, redactor)

    def check(self) -> None:
        """Wait for the process and raise PluginFailedError on a non-zero exit."""
        code = self.proc.wait()
        if code != 0:
            raise PluginFailedError(self.plugin.name, code, self.stderr.text())

    def kill(self) -> None:
        """Stop the process if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def private_dir() -> tempfile.TemporaryDirectory[str]:
    """A 0700 temporary directory for config files that may hold secrets."""
    return tempfile.TemporaryDirectory(prefix="dativo-plugin-")


def write_private_json(directory: str, name: str, value: Any) -> str:
    """Write ``value`` as JSON readable only by this user; return the path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(value, fh, default=str)
    return path


def discover_catalog(tap: ForeignTap, config_path: str, redactor: Redactor) -> dict | None:
    """Run ``tap --discover``; None if the tap cannot discover."""
    argv = [*tap.command, "--config", config_path, "--discover"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            env={**os.environ, **tap.env},
            cwd=tap.cwd,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("%s --discover failed: %s", tap.name, redactor.redact(str(exc)))
        return None
    if done.returncode != 0:
        logger.warning(
            "%s --discover exited %d; running without a catalog", tap.name, done.returncode
        )
        return None
    try:
        catalog = json.loads(done.stdout)
    except ValueError:
        return None
    return catalog if isinstance(catalog, dict) and "streams" in catalog else None


def select_in_catalog(
    catalog: dict,
    patterns: Sequence[str],
    metadata: Mapping[str, Mapping[str, Any]],
    is_selected: Callable[[str, list[str], list[str], str | None], list[str] | None],
) -> dict:
    """Mark streams/properties selected in a Singer catalog, Meltano style."""
    import fnmatch

    for entry in catalog.get("streams", []):
        name = entry.get("tap_stream_id") or entry.get("stream")
        props = list((entry.get("schema") or {}).get("properties", {}))
        md = entry.setdefault("metadata", [])
        root = next((m for m in md if not m.get("breadcrumb")), None)
        if root is None:
            root = {"breadcrumb": [], "metadata": {}}
            md.append(root)
        keys = list(
            root["metadata"].get("table-key-properties") or entry.get("key_properties") or []
        )
        rkey = root["metadata"].get("replication-key") or entry.get("replication_key")
        for pattern, values in metadata.items():
            if fnmatch.fnmatchcase(name, pattern):
                root["metadata"].update(values)
        columns = is_selected(name, props, keys, rkey) if patterns else props
        root["metadata"]["selected"] = columns is not None
        chosen = set(columns or [])
        by_prop = {tuple(m.get("breadcrumb", [])): m for m in md}
        for prop in props:
            crumb = ("properties", prop)
            item = by_prop.get(crumb)
            if item is None:
                item = {"breadcrumb": list(crumb), "metadata": {}}
                md.append(item)
            item["metadata"]["selected"] = prop in chosen
    return catalog
