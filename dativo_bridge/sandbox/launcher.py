"""Run one command under a policy: fork, isolate the child, supervise it, stop it on breach.

The supervisor (this process) stays outside the sandbox: it is a child subreaper, forks
the command into its own process group, reads the child's layer report over a
close-on-exec pipe (EOF means the command was executed), then polls the process tree
(``watchdog.sample``) until the command exits. A breached limit stops the whole tree
(its process group, then every descendant left) and prints one line naming the command and
the limit. Nothing outlives the run: leftover processes are stopped and the scratch
directory is removed.

Exit status: the command's own (128 + N when a signal N ended it), 124 when a limit was
breached, 125 when the sandbox refused or failed to start, 126/127 when the command could
not be executed / was not found.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

from dativo_bridge.sandbox import layers, limits, watchdog
from dativo_bridge.sandbox.cgroup import RunCgroup, supervisor_gone
from dativo_bridge.sandbox.policy import (
    Policy,
    command_line_fds,
    default_readable,
    resolve_executable,
)

BREACH = 124
REFUSED = 125
NOT_EXECUTABLE = 126
NOT_FOUND = 127

_MB = 1024 * 1024
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_RESET = (*_FORWARDED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTTOU)


def _say(message: str) -> None:
    sys.stderr.write(f"sandbox: {message}\n")
    sys.stderr.flush()


@dataclass
class Outcome:
    """How a supervised run ended."""

    returncode: int
    breach: str | None = None
    report: layers.Report | None = None


def environment(policy: Policy, scratch: str) -> dict[str, str]:
    """The scrubbed environment: PATH and LANG from the caller, TMPDIR and HOME the
    scratch directory, plus each ``--env NAME`` (copied) or ``NAME=VALUE`` (set)."""
    env = {key: os.environ[key] for key in ("PATH", "LANG") if key in os.environ}
    env.setdefault("PATH", os.defpath)
    env["TMPDIR"] = env["HOME"] = scratch
    for item in policy.env:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def _run_cgroup(policy: Policy) -> RunCgroup:
    memory = None
    if policy.memory_mb is not None:
        # Above the watchdog's limit: the watchdog names the breach, the kernel backs it up.
        memory = policy.memory_mb * _MB + max(policy.memory_mb * _MB // 4, 64 * _MB)
    tasks = policy.max_processes + 1 if policy.max_processes is not None else None
    name = f"dativo-sandbox-{os.getpid()}-{time.monotonic_ns()}"
    return RunCgroup(name, max_tasks=tasks, memory_bytes=memory)


def plan(policy: Policy, scratch: str) -> layers.Plan:
    executable = resolve_executable(policy.command[0], os.environ.get("PATH"))
    if executable is None:
        raise FileNotFoundError(policy.command[0])
    readable = [*default_readable(policy, os.environ.get("PATH")), *policy.readable]
    writable = [scratch, *policy.writable]
    return layers.Plan(
        executable,
        environment(policy, scratch),
        readable,
        writable,
        _run_cgroup(policy),
        command_line_fds(policy.command),
    )


def _child(policy: Policy, the_plan: layers.Plan, status: int, probe: bool) -> NoReturn:
    code = REFUSED
    try:
        os.setpgid(0, 0)
        for number in _RESET:
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        limits.die_with_parent(signal.SIGKILL)
        report = layers.enter(policy, the_plan)
        message = {"active": report.active, "missing": report.missing, "unused": report.unused}
        os.write(status, json.dumps(message).encode())
        os.write(status, b"\n")
        if probe or (report.missing and policy.level == "strict"):
            os._exit(0 if probe else REFUSED)
        code = NOT_EXECUTABLE
        low = 3
        for keep in sorted({status, *the_plan.keep_fds}):
            os.closerange(low, keep)
            low = keep + 1
        os.closerange(low, _max_fd())
        os.execve(the_plan.executable, policy.command, the_plan.env)
    except BaseException as exc:
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FileNotFoundError):
            code = NOT_FOUND
        try:
            os.write(status, json.dumps({"error": detail}).encode() + b"\n")
        finally:
            os._exit(code)


def _max_fd() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY or hard > 1 << 20 else hard


def _read_status(fd: int) -> list[dict[str, object]]:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return [json.loads(line) for line in b"".join(chunks).splitlines() if line.strip()]


def _kill_tree(group: int, root: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)
    for pid in watchdog.descendants(root):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _release_stdio() -> None:
    """The supervisor lets go of stdin and stdout (the command has them), so that a pipe
    sees EOF, or EPIPE, when the command exits, not when the supervisor does."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        if not _is_regular(fd):
            os.dup2(devnull, fd)
    os.close(devnull)


def _seconds(value: float) -> str:
    return f"{value:g} second" if value == 1 else f"{value:g} seconds"


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class _Supervisor:
    def __init__(
        self, policy: Policy, pid: int, writable: list[str], cgroup: RunCgroup | None
    ) -> None:
        self.policy = policy
        self.cgroup = cgroup
        self.pid = pid
        self.me = os.getpid()
        self.writable = writable
        self.status: int | None = None
        self.reaped_cpu = 0.0
        self.breach: str | None = None
        self.peak_cpu = 0.0
        #: The command's stdout and stderr when they are regular files (a file-size breach
        #: can be a redirection's).
        self.outputs = [fd for fd in (1, 2) if _is_regular(fd)]

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = status
            else:
                self.reaped_cpu += usage.ru_utime + usage.ru_stime

    def check(self, now: float, started: float) -> float:
        """Compare the tree with the limits; returns how long to wait before the next look."""
        policy = self.policy
        tree = watchdog.sample(self.me)
        cpu = tree.cpu_seconds + self.reaped_cpu
        self.peak_cpu = max(self.peak_cpu, cpu)
        limit = policy.memory_mb * _MB if policy.memory_mb is not None else None
        if limit is not None and tree.anon_bytes > limit:
            self.breach = f"memory limit of {policy.memory_mb} MB"
        elif policy.cpu_seconds is not None and cpu > policy.cpu_seconds:
            self.breach = f"CPU limit of {_seconds(policy.cpu_seconds)}"
        elif policy.max_processes is not None and tree.tasks > policy.max_processes:
            self.breach = f"process limit of {policy.max_processes}"
        elif policy.wall_seconds is not None and now - started >= policy.wall_seconds:
            self.breach = f"wall-clock limit of {_seconds(policy.wall_seconds)}"
        if limit is not None and tree.anon_bytes > limit // 2:
            return 0.01
        return 0.05

    def kernel_breach(self) -> str | None:
        """A limit the kernel enforced itself: SIGXCPU/SIGKILL past the CPU limit, SIGXFSZ,
        or a failure with a file at the size limit (a Python plugin ignores SIGXFSZ and gets
        EFBIG instead)."""
        policy, status = self.policy, self.status
        if status is None or os.waitstatus_to_exitcode(status) == 0:
            return None
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        if (
            policy.memory_mb is not None
            and signalled == signal.SIGKILL
            and self.cgroup is not None
            and self.cgroup.hit_memory_limit()
        ):
            return f"memory limit of {policy.memory_mb} MB"
        if policy.cpu_seconds is not None and (
            signalled == signal.SIGXCPU
            or (signalled == signal.SIGKILL and self.peak_cpu >= policy.cpu_seconds - 0.5)
        ):
            return f"CPU limit of {_seconds(policy.cpu_seconds)}"
        if policy.max_file_mb is not None and (
            signalled == signal.SIGXFSZ or self._file_at_limit(policy.max_file_mb * _MB)
        ):
            return f"file size limit of {policy.max_file_mb} MB"
        return None

    def _file_at_limit(self, limit: int) -> bool:
        for output in self.outputs:
            with contextlib.suppress(OSError):
                if os.fstat(output).st_size >= limit:
                    return True
        for top in self.writable:
            for folder, _, files in os.walk(top):
                for name in files:
                    try:
                        if os.lstat(os.path.join(folder, name)).st_size >= limit:
                            return True
                    except OSError:
                        continue
        return False

    def run(self, started: float) -> None:
        while self.status is None:
            self.reap()
            if self.status is not None:
                break
            now = time.monotonic()
            wait = self.check(now, started) if self.breach is None else 0.01
            if self.breach is not None:
                _kill_tree(self.pid, self.me)
            elif self.policy.wall_seconds is not None:
                wait = min(wait, max(started + self.policy.wall_seconds - now, 0.001))
            signal.sigtimedwait([signal.SIGCHLD], wait)
        # The command is gone: nothing it started may outlive it.
        for _ in range(100):
            if not watchdog.descendants(self.me):
                break
            _kill_tree(self.pid, self.me)
            signal.sigtimedwait([signal.SIGCHLD], 0.01)
            self.reap()
        self.reap()


def supervise(policy: Policy, *, probe: bool = False, release_stdio: bool = False) -> Outcome:
    """Run ``policy.command`` in the sandbox and wait for it (see the module doc). With
    ``probe`` the child enters every layer and exits instead of executing the command;
    with ``release_stdio`` (the CLI) this process stops holding stdin and stdout."""
    _remove_stale_scratch()
    scratch = tempfile.mkdtemp(prefix=f"dativo-sandbox-{os.getpid()}-")
    the_plan: layers.Plan | None = None
    try:
        try:
            the_plan = plan(policy, scratch)
        except FileNotFoundError:
            _say(f"{policy.name}: command not found: {policy.command[0]}")
            return Outcome(NOT_FOUND)
        limits.become_subreaper()
        read_end, write_end = os.pipe()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(policy, the_plan, write_end, probe)
        os.close(write_end)
        # The child does it too: whichever runs first wins, the other's call may fail.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        # Signals for the run (Ctrl-C, a terminating dativo run) go to the command's group;
        # Python lets only the main thread install handlers.
        main = threading.current_thread() is threading.main_thread()
        handlers = {
            number: signal.signal(number, lambda sig, _frame: _forward(pid, sig))
            for number in (_FORWARDED if main else ())
        }
        try:
            report, error = _parse(_read_status(read_end))
            if not probe:
                warn_missing(policy, report)
            supervisor = _Supervisor(policy, pid, the_plan.writable, the_plan.cgroup)
            if release_stdio:
                _release_stdio()
            supervisor.run(started)
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return _outcome(policy, supervisor, report, error)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if the_plan is not None and the_plan.cgroup is not None:
            the_plan.cgroup.remove()


def _remove_stale_scratch() -> None:
    """Scratch directories of this user's supervisors that were killed before cleaning up."""
    top = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for entry in os.scandir(top):
            if (
                supervisor_gone(entry.name)
                and entry.is_dir(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_uid == os.getuid()
            ):
                shutil.rmtree(entry.path, ignore_errors=True)


def _forward(pid: int, number: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, number)


def _parse(messages: list[dict[str, object]]) -> tuple[layers.Report, str | None]:
    report = layers.Report()
    error = None
    for message in messages:
        if "error" in message:
            error = str(message["error"])
        for key, into in (
            ("active", report.active),
            ("missing", report.missing),
            ("unused", report.unused),
        ):
            value = message.get(key)
            if isinstance(value, dict):
                into.update({str(k): str(v) for k, v in value.items()})
    return report, error


def _outcome(
    policy: Policy, supervisor: _Supervisor, report: layers.Report, error: str | None
) -> Outcome:
    assert supervisor.status is not None
    code = _status_code(supervisor.status)
    if report.missing and policy.level == "strict" and code == REFUSED:
        names = "; ".join(f"{name} is unavailable ({why})" for name, why in report.missing.items())
        _say(f"refusing to run {policy.name} at level strict: {names}")
        return Outcome(REFUSED, report=report)
    if error is not None:
        _say(f"{policy.name}: could not start: {error}")
        return Outcome(code if code in (NOT_EXECUTABLE, NOT_FOUND) else REFUSED, report=report)
    breach = supervisor.breach or supervisor.kernel_breach()
    if breach is not None:
        _say(f"{policy.name} exceeded its {breach}")
        return Outcome(BREACH, breach=breach, report=report)
    return Outcome(code, report=report)


def warn_missing(policy: Policy, report: layers.Report) -> None:
    if report.missing and policy.level == "best-effort":
        names = "; ".join(f"{layer} ({why})" for layer, why in report.missing.items())
        _say(f"warning: {policy.name} runs without {names}")
