"""The cgroup layer of the sandbox (dativo_bridge/sandbox/cgroup.py): made inside the
supervisor's own cgroup, reported by ``--check``, and the only bound for memory the
watchdog does not see (a memfd: shmem pages, not RssAnon). Run as root and as nobody."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dativo_bridge.sandbox import cgroup, landlock

from .test_sandbox import SANDBOX, arena, one_line, user  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(
    landlock.abi() < 1, reason="Landlock is not available on this kernel (needs Linux 5.13+)"
)

#: Fills a memfd (shmem, charged to the memory cgroup, invisible to RssAnon) 8 MB at a time.
SHMEM_HOG = (
    "import os\n"
    "fd = os.memfd_create('hog')\n"
    "chunk = b'x' * (8 << 20)\n"
    "for _ in range(64):\n"
    "    os.write(fd, chunk)\n"
    "print('survived', os.fstat(fd).st_size >> 20)\n"
)


HOG = [sys.executable, "-c", SHMEM_HOG]


def _check(prefix: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [*prefix, *SANDBOX, "--check"], capture_output=True, text=True, cwd=cwd, check=True
    )
    return done.stdout


def _memory_cgroup(report: str) -> str | None:
    match = re.search(r"memory (v1|v2) \(([^)]*)\)", report)
    return match.group(2) if match else None


def test_check_says_whether_the_cgroup_layer_is_active(user: list[str], arena: Path) -> None:  # noqa: F811
    report = _check(user, arena)
    line = next(x for x in report.splitlines() if "cgroup:" in x)
    if line.startswith("  active"):
        assert re.search(r"pids v[12] \(", line) and re.search(r"memory v[12] \(", line), line
    else:
        assert line.startswith("  not used     cgroup: "), report
        assert "the watchdog and rlimits bound memory and processes instead" in line


def test_the_runs_memory_cgroup_is_inside_the_supervisors_own(arena: Path) -> None:  # noqa: F811
    """Limits set on the caller (a container's memory cgroup) still bind the plugin."""
    version, parent = cgroup.place("memory")
    if version is None:
        pytest.skip(f"no memory cgroup here: {parent}")
    made = _memory_cgroup(_check([], arena))
    if made is None:
        pytest.skip("the memory cgroup cannot be made by this user")
    with open("/proc/self/cgroup") as fh:
        own = next(
            line.split(":", 2)[2]
            for line in fh.read().splitlines()
            if ("memory" in line.split(":")[1].split(",")) == (version == "v1")
            and (version == "v1" or line.split(":")[1] == "")
        )
    assert os.path.dirname(made) == parent
    assert parent.rstrip("/").endswith(own.rstrip("/")), (parent, own)
    assert os.path.basename(made).startswith("dativo-sandbox-")
    assert not os.path.exists(made)  # removed after the probe


def test_a_memory_hog_the_watchdog_cannot_see_is_stopped_by_the_cgroup_layer(
    user: list[str],  # noqa: F811
    arena: Path,  # noqa: F811
) -> None:
    made = _memory_cgroup(_check(user, arena))
    if made is None:
        why = next((x for x in _check(user, arena).splitlines() if "cgroup:" in x), "")
        pytest.skip(f"no memory cgroup for this user here: {why.strip()}")
    done = subprocess.run(
        [*user, *SANDBOX, "--memory-mb", "64", "--wall-seconds", "60", "--", *HOG],
        capture_output=True,
        text=True,
        cwd=arena,
        timeout=120,
        check=False,
    )
    assert "survived" not in done.stdout
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: python exceeded its memory limit of 64 MB"


def test_without_a_memory_limit_the_same_hog_runs(arena: Path) -> None:  # noqa: F811
    """The hog above is stopped by its limit, not by anything else in the sandbox."""
    done = subprocess.run(
        [*SANDBOX, "--wall-seconds", "60", "--", sys.executable, "-c", SHMEM_HOG],
        capture_output=True,
        text=True,
        cwd=arena,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived 512"


def test_cgroup_v2_limits_where_this_machine_offers_them(arena: Path) -> None:  # noqa: F811
    """On a cgroup v2 host whose supervisor cgroup offers memory and pids (a delegated
    subtree), the run's cgroup is a v2 one with memory.max and pids.max."""
    for controller in ("memory", "pids"):
        version, where = cgroup.place(controller)
        if version != "v2":
            pytest.skip(
                f"{controller} is not a cgroup v2 controller here "
                f"({'bound to cgroup v1' if version == 'v1' else where})"
            )
    report = _check([], arena)
    assert re.search(r"pids v2 \(", report) and re.search(r"memory v2 \(", report), report
