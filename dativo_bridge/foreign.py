"""Singer plugins of any language run as subprocesses, with the codecs at the boundary.

Config reaches a plugin as ``--config PATH``, the one form every Singer plugin reads; on
Linux PATH is ``/dev/fd/N`` of an in-memory file, so no secret is ever on disk (see
PrivateDir and docs/secrets.md)."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dativo_bridge.errors import PluginFailedError
from dativo_bridge.ownership import pid_alive
from dativo_bridge.redact import Redactor
from dativo_bridge.sandbox.plugins import audit_line, sandbox_options, sandboxed_command
from dativo_bridge.sandbox.policy import plugin_name

logger = logging.getLogger("dativo.foreign")
audit = logging.getLogger("dativo.audit")

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
        sandbox: The plugin's ``sandbox:`` mapping from meltano.yml (docs/sandbox.md):
            when set, the plugin runs under ``dativo sandbox`` with that policy.
    """

    name: str
    command: Sequence[str]
    config: Mapping[str, Any] = field(default_factory=dict)
    select: Sequence[str] = ()
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    sandbox: Mapping[str, Any] | None = None

    @property
    def sandboxed(self) -> bool:
        """Whether the plugin runs under ``dativo sandbox`` (a policy, not ``level: off``)."""
        return self.sandbox is not None and self.sandbox.get("level") != "off"

    def argv(self, args: Sequence[str]) -> list[str]:
        """The command line that starts the plugin with ``args``: under ``dativo sandbox``
        when it has a policy. Logs the audit line (executable, sha256, policy)."""
        argv = [*self.command, *args]
        audit.info(audit_line(self.name, argv, self.sandbox, self.cwd))
        if self.sandbox is None:
            return argv
        # Checked even at level off: a malformed mapping is an error, never ignored.
        sandbox_options(self.name, self.sandbox, self.cwd)
        if not self.sandboxed:
            return argv
        return sandboxed_command(
            self.name, self.sandbox, argv, cwd=self.cwd, env_names=sorted(self.env)
        )

    def environment(self) -> dict[str, str]:
        """The plugin's environment: the caller's for ``dativo sandbox`` to scrub, else
        the scrubbed one of :func:`plugin_environment`."""
        if self.sandboxed:
            return {**os.environ, **self.env}
        named = list((self.sandbox or {}).get("env") or [])
        return plugin_environment(self.name, self.command, self.env, named)


#: What a plugin not run under ``dativo sandbox`` keeps of the caller's environment,
#: besides its own settings' variables (docs/sandbox.md).
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")
#: Names (comma-separated) of more variables every foreign plugin gets; ``*`` gives them
#: the caller's whole environment (the opt-out).
PLUGIN_ENV = "DATIVO_PLUGIN_ENV"


def _prefix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


def plugin_environment(
    name: str,
    command: Sequence[str],
    own: Mapping[str, str],
    named: Sequence[str] = (),
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A foreign plugin's scrubbed environment: :data:`BASE_ENV`, the variables Meltano
    names a plugin's settings by (``<PLUGIN_NAME>_*`` for the plugin's name and its
    program's, ``MELTANO_*``), the names in ``named`` (``NAME`` copies, ``NAME=VALUE``
    sets) and in ``$DATIVO_PLUGIN_ENV``, then ``own`` (what Dativo sets). ``*`` among the
    names passes the caller's whole environment."""
    parent = os.environ if parent is None else parent
    names = [n.strip() for n in parent.get(PLUGIN_ENV, "").split(",") if n.strip()]
    names += [str(n) for n in named]
    if "*" in names:
        return {**parent, **own}
    prefixes = {_prefix(name), "MELTANO_"}
    if command:
        prefixes.add(_prefix(plugin_name(list(command))))
    env = {
        key: value
        for key, value in parent.items()
        if key in BASE_ENV or key.startswith(tuple(prefixes))
    }
    for item in names:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in parent:
            env[key] = parent[key]
    env.update(own)
    return env


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
        env = plugin.environment()
        argv = plugin.argv(args)
        logger.info("starting %s: %s", plugin.name, redactor.redact(" ".join(argv)))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=plugin.cwd,
                pass_fds=passed_fds(argv),
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

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) if it still runs, without waiting: safe in
        a signal handler. ``kill`` afterwards makes sure it is gone."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.terminate()

    def kill(self) -> None:
        """Stop the process if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: Private directories are named ``dativo-plugin-<pid>.<process start>-<random>``.
PRIVATE_PREFIX = "dativo-plugin-"
_PRIVATE_NAME = re.compile(r"^dativo-plugin-(\d+)\.(\d+)-")
#: A directory of the unnamed form (Dativo before 0.x) is stale after this many seconds.
LEGACY_STALE_SECONDS = 24 * 3600
_FD_PATH = re.compile(r"^/dev/fd/(\d+)$")


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, started: int) -> bool:
    if not pid_alive(pid):
        return False
    return started == 0 or _start_time(pid) in (0, started)


def remove_stale_private_dirs() -> list[str]:
    """Remove this user's private directories whose run is dead (killed with SIGKILL or
    lost with its machine); return their paths."""
    removed = []
    tmp = Path(tempfile.gettempdir())
    for entry in tmp.glob(f"{PRIVATE_PREFIX}*"):
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        match = _PRIVATE_NAME.match(entry.name)
        if match:
            stale = not _alive(int(match.group(1)), int(match.group(2)))
        else:
            stale = time.time() - info.st_mtime > LEGACY_STALE_SECONDS
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    if removed:
        logger.info("removed %d private director(ies) of dead runs", len(removed))
    return removed


class PrivateDir:
    """A 0700 directory for one run's plugin files (``with PrivateDir() as path``).

    Files written with :func:`write_private_json` live in memory where the platform
    allows it (a ``memfd`` passed to the plugin as ``/dev/fd/N``), so nothing with a
    secret is on disk even if the run is killed; elsewhere they are 0600 files here,
    removed on exit, and by the next run if this one is killed.
    """

    def __init__(self) -> None:
        remove_stale_private_dirs()
        pid = os.getpid()
        self.path = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{pid}.{_start_time(pid)}-")
        self.fds: list[int] = []

    def __enter__(self) -> str:
        _open_dirs[self.path] = self
        return self.path

    def __exit__(self, *exc: object) -> None:
        _open_dirs.pop(self.path, None)
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        shutil.rmtree(self.path, ignore_errors=True)


_open_dirs: dict[str, PrivateDir] = {}


def private_dir() -> PrivateDir:
    """A private directory for config files that may hold secrets (see PrivateDir)."""
    return PrivateDir()


def _in_memory_files() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def write_private_json(directory: str, name: str, value: Any) -> str:
    """Write ``value`` as JSON only this user (and the plugins given it) can read; return
    the path to give a plugin: ``/dev/fd/N`` of an in-memory file inside a PrivateDir on
    Linux, else a 0600 file in ``directory``."""
    data = json.dumps(value, default=str).encode("utf-8")
    owner = _open_dirs.get(directory)
    if owner is not None and _in_memory_files():
        fd = os.memfd_create(f"dativo-{name}")
        os.write(fd, data)
        owner.fds.append(fd)
        return f"/dev/fd/{fd}"
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def passed_fds(argv: Sequence[str]) -> tuple[int, ...]:
    """The in-memory files named in ``argv`` (``/dev/fd/N``), which the child inherits."""
    owned = {fd for d in _open_dirs.values() for fd in d.fds}
    fds = []
    for arg in argv:
        match = _FD_PATH.match(arg)
        if match and int(match.group(1)) in owned:
            fds.append(int(match.group(1)))
    return tuple(fds)


def discover_catalog(tap: ForeignTap, config_path: str, redactor: Redactor) -> dict | None:
    """Run ``tap --discover``; None if the tap cannot discover."""
    argv = tap.argv(["--config", config_path, "--discover"])
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            env=tap.environment(),
            cwd=tap.cwd,
            pass_fds=passed_fds(argv),
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
