"""Set-up for the whole suite, for runs spread over pytest-xdist workers (scripts/test.sh
starts one worker per core, two by default, with ``--dist loadfile``: a test file's tests
run on one worker, so a module's fixtures (a Meltano project with its plugins installed,
a Ray cluster, a built wheel) are made once, not once per worker, and two workers never
reinstall into a venv the other is running from).

- Each worker gets its own temporary directory as TMPDIR, inherited by every plugin and
  server it starts: tests that look for leftovers in the temporary directory (a sandbox's
  scratch folder, a plugin's private files) see only their own worker's, and the
  PostgreSQL server each worker starts (tests/integration/postgres/server.py) lives
  there too. It is removed when the worker exits, after the servers it holds are stopped.
- Files that use a machine-wide resource hold a lock on it while they run, so their
  workers take turns: the Ray clusters (two local clusters on one host fight over Ray's
  fixed ports, such as the client server's 10001).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# test file name prefix -> the machine-wide resource its tests hold while they run
RESOURCE = {"test_ray": "ray"}
# the system's temporary directory, before a worker points TMPDIR at its own
SHARED_TMP = tempfile.gettempdir()


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    # Short: Ray and PostgreSQL put unix sockets under it (at most 107 bytes a path).
    root = tempfile.mkdtemp(prefix=f"dt-{worker}-")
    # Registered before any server's stop hook, so it runs after them (atexit is LIFO).
    atexit.register(shutil.rmtree, root, True)
    os.environ["TMPDIR"] = root
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.fixture(autouse=True, scope="module")
def _machine_wide_resource(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a file in RESOURCE, its resource's lock, from before its first test's fixtures
    to after its last one's (autouse module fixtures are set up first)."""
    name = Path(str(request.path)).name
    resource = next((r for prefix, r in RESOURCE.items() if name.startswith(prefix)), None)
    if resource is None:
        yield
        return
    with open(Path(SHARED_TMP) / f"dativo-tests-{resource}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
