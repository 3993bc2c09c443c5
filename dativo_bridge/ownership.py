"""Proving that a leftover file belongs to a writer that is gone.

Writers name their unfinished work with their process id and :data:`HOST_TAG` (the
machine, its boot and its pid namespace). A later run may remove such a file only when
the tag is its own and no process with that pid runs: then the writer is provably dead,
and no live writer on another machine or in another container can be hurt.
"""

from __future__ import annotations

import hashlib
import os
import socket


def _host_tag() -> str:
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


#: 8 hex digits naming this machine, boot and pid namespace.
HOST_TAG = _host_tag()


def pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists here (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_gone(pid: int | str, host: str | None) -> bool:
    """True when the writer ``pid`` on ``host`` (None: an old name without a tag, taken
    as this host's) is provably not running."""
    return (host is None or host == HOST_TAG) and not pid_alive(int(pid))
