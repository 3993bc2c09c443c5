"""Set-up for the whole suite, for runs spread over pytest-xdist workers (scripts/test.sh
starts one worker per core, two by default).

- Each worker gets its own temporary directory as TMPDIR, inherited by every plugin and
  server it starts: tests that look for leftovers in the temporary directory (a sandbox's
  scratch folder, a plugin's private files) see only their own worker's, and the
  PostgreSQL server each worker starts (tests/integration/postgres/server.py) lives
  there too. It is removed when the worker exits, after the servers it holds are stopped.
- Tests that share a machine-wide resource run on one worker, one after another: the Ray
  clusters (a second local cluster on the same host fights over the first one's ports
  and /tmp/ray session), grouped with xdist's ``loadgroup`` distribution.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# test file name -> the group its tests run in, on a single worker
ONE_WORKER = {
    "test_ray_engine.py": "ray",
    "test_ray_parquet.py": "ray",
    "test_ray_processes.py": "ray",
}


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = ONE_WORKER.get(Path(str(item.path)).name)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
