"""Kernel-enforced per-process limits (rlimits) and the prctl flags the sandbox uses.

rlimits are per process (CPU, file size, open files) or per user (processes), so they are
the kernel's hard stop, not the whole story: the watchdog (``watchdog.py``) sums memory and
CPU over the plugin's whole process tree and is what names the limit on a breach.
"""

from __future__ import annotations

import ctypes
import os
import resource

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def no_new_privs() -> None:
    """No exec after this can gain privileges (setuid bits, file capabilities)."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def become_subreaper() -> None:
    """Orphans of our descendants (a daemonised grandchild) are re-parented to us, so the
    watchdog still sees them and they are stopped with the rest."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(signal_number: int) -> None:
    """The child gets ``signal_number`` if the supervisor dies first."""
    _prctl(_PR_SET_PDEATHSIG, signal_number)


def _set(kind: int, soft: int, hard: int | None = None) -> None:
    _, current_hard = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def apply_rlimits(
    *,
    cpu_seconds: int | None,
    max_file_mb: int | None,
    max_processes: int | None,
    max_open_files: int | None,
) -> None:
    """Set the kernel limits for this process and what it executes.

    CPU gets one second of grace between SIGXCPU and SIGKILL. The process limit is one over
    the policy's so that reaching it is visible to the watchdog, which then names it; it is
    counted per user namespace when the child made one (so root is bounded too and other
    processes of the same user do not count).
    """
    if cpu_seconds is not None:
        _set(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
    if max_file_mb is not None:
        _set(resource.RLIMIT_FSIZE, max_file_mb * 1024 * 1024)
    if max_processes is not None:
        _set(resource.RLIMIT_NPROC, max_processes + 1)
    if max_open_files is not None:
        _set(resource.RLIMIT_NOFILE, max_open_files)
    _set(resource.RLIMIT_CORE, 0)
