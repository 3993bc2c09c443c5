"""A cgroup per sandboxed run, where the machine lets us make one (root on cgroup v1, or a
delegated cgroup v2 subtree): a hard ``pids`` bound (RLIMIT_NPROC never binds uid 0, even
in a user namespace) and a hard memory bound a little above the watchdog's limit, so the
watchdog names the breach and the kernel is the backstop if it is too slow to.

Where no cgroup can be made the watchdog and rlimits are all there is; ``--check`` says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time

_V1 = "/sys/fs/cgroup"
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


class RunCgroup:
    """The cgroups (one per controller) of one run; ``join`` is called by the child."""

    def __init__(self, name: str, *, max_tasks: int | None, memory_bytes: int | None) -> None:
        self.dirs: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.memory_bytes = memory_bytes
        v2 = os.path.exists(os.path.join(_V1, "cgroup.controllers"))
        wanted = {"pids": max_tasks, "memory": memory_bytes}
        for controller, value in wanted.items():
            if value is None:
                continue
            if v2:
                self.errors[controller] = "cgroup v2 delegation is not supported yet"
                continue
            parent = os.path.join(_V1, controller)
            remove_stale(parent)
            path = os.path.join(parent, name)
            try:
                os.mkdir(path)
            except OSError as exc:
                self.errors[controller] = f"{parent} is not writable ({exc.strerror})"
                continue
            try:
                if controller == "pids":
                    _write(os.path.join(path, "pids.max"), str(value))
                else:
                    _write(os.path.join(path, "memory.limit_in_bytes"), str(value))
                self.dirs[controller] = path
            except OSError as exc:
                self.errors[controller] = f"{path}: {exc.strerror}"
                with contextlib.suppress(OSError):
                    os.rmdir(path)

    def join(self) -> None:
        """Move the calling process into every cgroup of the run."""
        for path in self.dirs.values():
            _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    def hit_memory_limit(self) -> bool:
        path = self.dirs.get("memory")
        return bool(path) and _read_int(os.path.join(path, "memory.failcnt")) > 0  # type: ignore[arg-type]

    def remove(self) -> None:
        for path in self.dirs.values():
            with contextlib.suppress(OSError):
                os.rmdir(path)
