"""The process tree of a sandboxed command, read from /proc: how many tasks it runs, how
much anonymous memory it holds and how much CPU it has used.

The supervisor is a child subreaper, so the tree is everything below it, including a
grandchild that daemonised itself (its orphan is re-parented to the supervisor). Memory is
the sum of each process's anonymous resident memory (RssAnon: the heap, not the shared
libraries and page cache a process maps), so a process that forks counts its copied pages
once per process, as the kernel would have to back them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    pids: list[int] = field(default_factory=list)
    tasks: int = 0
    anon_bytes: int = 0
    cpu_seconds: float = 0.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), parents before children."""
    order: list[int] = []
    queue = _children(root)
    seen: set[int] = set()
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue
        seen.add(pid)
        order.append(pid)
        queue.extend(_children(pid))
    return order


def sample(root: int) -> Sample:
    """The tree below ``root`` now. A process that exits while it is read is skipped."""
    result = Sample()
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/statm", "rb") as fh:
                statm = fh.read().split()
        except OSError:
            continue
        # Fields after the command name, which may hold spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2 :].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        result.pids.append(pid)
        result.tasks += int(fields[17])
        result.cpu_seconds += (utime + stime + cutime + cstime) / _TICK
        if fields[0] != b"Z":
            result.anon_bytes += max(int(statm[1]) - int(statm[2]), 0) * _PAGE
    return result
