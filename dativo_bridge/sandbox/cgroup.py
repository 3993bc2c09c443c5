"""A cgroup per sandboxed run, where the machine lets us make one (root on cgroup v1, or a
delegated cgroup v2 subtree): a hard ``pids`` bound (RLIMIT_NPROC never binds uid 0, even
in a user namespace) and a hard memory bound a little above the watchdog's limit, so the
watchdog names the breach and the kernel is the backstop if it is too slow to (and the
only bound for memory the watchdog does not see: shmem, memfd and tmpfs pages).

The run's cgroup is made *inside* the supervisor's own cgroup (read from
/proc/self/cgroup), so limits set on the caller (a container's, a systemd slice's) still
hold for the plugin. A controller still bound to a v1 hierarchy is used there; otherwise
the cgroup v2 mount is used when the supervisor's cgroup offers the controller
(``cgroup.controllers``) and it is, or can be, enabled for children
(``cgroup.subtree_control``; the kernel refuses that in a non-root cgroup that holds
processes, so a delegated cgroup must be prepared, e.g. by
``systemd-run --user -p Delegate=yes``). Where no cgroup can be made the watchdog and
rlimits are all there is; ``--check`` says so and why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

_MOUNTINFO = "/proc/self/mountinfo"
_MB = 1024 * 1024
#: ``dativo-sandbox-<supervisor pid>-<ns>``: a run's cgroup and scratch directory names.
STALE = re.compile(r"^dativo-sandbox-(\d+)-")


def supervisor_gone(name: str) -> bool:
    """Whether the supervisor a ``dativo-sandbox-<pid>-...`` name belongs to is dead."""
    match = STALE.match(name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def remove_stale(parent: str) -> None:
    """Stop what is left in the cgroups of supervisors that were killed (SIGKILL gives
    them no chance to clean up), and remove those cgroups."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not supervisor_gone(name):
            continue
        path = os.path.join(parent, name)
        for _ in range(20):
            try:
                with open(os.path.join(path, "cgroup.procs")) as fh:
                    pids = [int(x) for x in fh.read().split()]
            except OSError:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.01)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _read_int(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, mount root, fstype, super options) of every cgroup mount."""
    found: list[tuple[str, str, str, set[str]]] = []
    try:
        with open(_MOUNTINFO) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        found.append((point, fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own(key: str) -> str | None:
    """The calling process's cgroup path for a v1 controller, or for v2 (``key`` '')."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (key == "" and controllers == "") or (key and key in controllers.split(",")):
            return path
    return None


def _under(point: str, root: str, own: str) -> str:
    if root != "/" and own.startswith(root):
        own = own[len(root) :] or "/"
    return os.path.join(point, own.lstrip("/"))


def place(controller: str) -> tuple[str, str] | tuple[None, str]:
    """(``v1`` or ``v2``, the directory a run's cgroup for ``controller`` goes in), or
    (None, why there is none)."""
    mounts = _mounts()
    for point, root, kind, options in mounts:
        if kind == "cgroup" and controller in options:
            own = _own(controller)
            return "v1", _under(point, root, own or "/")
    v2 = [(point, root) for point, root, kind, _ in mounts if kind == "cgroup2"]
    if not v2:
        return None, f"no cgroup hierarchy offers the {controller} controller"
    point, root = v2[0]
    parent = _under(point, root, _own("") or "/")
    try:
        with open(os.path.join(parent, "cgroup.controllers")) as fh:
            offered = fh.read().split()
    except OSError as exc:
        return None, f"{parent}: {exc.strerror}"
    if controller not in offered:
        shown = " ".join(offered) or "none"
        return None, f"cgroup v2 at {parent} does not offer {controller} (it offers: {shown})"
    return "v2", parent


def _enable(parent: str, controller: str) -> None:
    """Enable ``controller`` for the children of the v2 cgroup ``parent``."""
    with open(os.path.join(parent, "cgroup.subtree_control")) as fh:
        if controller in fh.read().split():
            return
    try:
        _write(os.path.join(parent, "cgroup.subtree_control"), f"+{controller}")
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot enable {controller} for the children of {parent} ({exc.strerror}; a "
            "cgroup that holds processes cannot: run dativo from a delegated cgroup with "
            f"{controller} in its cgroup.subtree_control)",
        ) from None


class RunCgroup:
    """The cgroups (one per controller on v1, one for both on v2) of one run; ``join`` is
    called by the child."""

    def __init__(self, name: str, *, max_tasks: int | None, memory_bytes: int | None) -> None:
        self.dirs: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.memory_bytes = memory_bytes
        wanted = {"pids": max_tasks, "memory": memory_bytes}
        for controller, value in wanted.items():
            if value is None:
                continue
            version, where = place(controller)
            if version is None:
                self.errors[controller] = where
                continue
            path = os.path.join(where, name)
            try:
                if version == "v2":
                    _enable(where, controller)
                remove_stale(where)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
            except OSError as exc:
                self.errors[controller] = (
                    str(exc.strerror)
                    if version == "v2" and exc.strerror and "enable" in exc.strerror
                    else f"{where} is not writable ({exc.strerror})"
                )
                continue
            try:
                for setting, text in self._settings(version, controller, value):
                    if setting == "memory.swap.max" and not os.path.exists(
                        os.path.join(path, setting)
                    ):
                        continue  # no swap accounting: nothing to swap to beyond the limit
                    _write(os.path.join(path, setting), text)
                self.dirs[controller] = path
                self.versions[controller] = version
            except OSError as exc:
                self.errors[controller] = f"{path}: {exc.strerror}"
                if path not in self.dirs.values():
                    with contextlib.suppress(OSError):
                        os.rmdir(path)

    @staticmethod
    def _settings(version: str, controller: str, value: int) -> list[tuple[str, str]]:
        if controller == "pids":
            return [("pids.max", str(value))]
        if version == "v1":
            return [("memory.limit_in_bytes", str(value))]
        # No swapping instead of the limit (where swap accounting exists).
        return [("memory.max", str(value)), ("memory.swap.max", "0")]

    def describe(self) -> str:
        return ", ".join(
            f"{name} {self.versions[name]} ({path})" for name, path in self.dirs.items()
        )

    def join(self) -> None:
        """Move the calling process into every cgroup of the run."""
        for path in dict.fromkeys(self.dirs.values()):
            _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    def hit_memory_limit(self) -> bool:
        path = self.dirs.get("memory")
        if not path:
            return False
        if self.versions.get("memory") == "v1":
            return _read_int(os.path.join(path, "memory.failcnt")) > 0
        try:
            with open(os.path.join(path, "memory.events")) as fh:
                events = dict(line.split() for line in fh.read().splitlines() if line)
        except (OSError, ValueError):
            return False
        return int(events.get("oom_kill", 0)) > 0 or int(events.get("max", 0)) > 0

    def remove(self) -> None:
        for path in dict.fromkeys(self.dirs.values()):
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
