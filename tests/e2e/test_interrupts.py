"""SIGINT and SIGTERM stop `dativo run` within seconds, discard what is not committed,
exit 130 / 143, say what was committed, and a rerun delivers every row."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dativo_bridge.state import LocalStateStore

from .helpers import dativo_run, env, read_parquet_dir, script, write_project

PLUGINS = Path(__file__).parent / "plugins"
TOTAL = 200_000


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_quickly_and_a_rerun_delivers_every_row(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    shutil.copytree(PLUGINS, tmp_path / "plugins")
    out = tmp_path / "out"
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-slow",
                "config": {
                    "reader_class": "e2e_readers:SlowCounterReader",
                    "plugin_dirs": ["plugins"],
                    "total": TOTAL,
                    "batch_rows": 1_000,
                    "pause": 0.05,
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    state_dir = tmp_path / "state"
    store = LocalStateStore(state_dir)
    state_id = "test:tap-slow-to-target-dativo-parquet"
    args = ["--state-dir", str(state_dir), "--checkpoint-rows", "5000"]
    argv = [script("dativo"), "run", "tap-slow", "target-dativo-parquet", "--project"]
    proc = subprocess.Popen(
        [*argv, str(project), *args],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while store.get(state_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get(state_id) is not None, "no checkpoint before the deadline"
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == code, stderr
    assert took < 5, f"took {took:.1f}s to stop"
    assert f"interrupted by {sig.name}" in stderr
    assert "rerun the same command to resume" in stderr
    assert state_id in stderr
    bookmark = store.get(state_id)["bookmarks"]["counter"]["replication_key_value"]
    assert bookmark < TOTAL, "the run must have stopped midway"

    dativo_run(project, "tap-slow", "target-dativo-parquet", *args, timeout=120)
    ids = read_parquet_dir(out).column("id").to_pylist()
    # Every row; the reader resumes at its bookmark inclusively, so that one row may be
    # delivered twice (at-least-once), nothing more.
    assert sorted(set(ids)) == list(range(1, TOTAL + 1))
    assert len(ids) <= TOTAL + 1


SLOW_SHELL_TAP = r"""#!/bin/sh
echo '{"type": "SCHEMA", "stream": "s", "key_properties": ["id"], "schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}'
echo '{"type": "RECORD", "stream": "s", "record": {"id": 1}}'
echo '{"type": "STATE", "value": {"bookmarks": {"s": {"replication_key_value": 1}}}}'
exec sleep 120
"""


def test_sigterm_terminates_a_foreign_tap(tmp_path: Path) -> None:
    tap = tmp_path / "tap-slow-sh.sh"
    tap.write_text(SLOW_SHELL_TAP)
    tap.chmod(0o755)
    project = write_project(
        tmp_path,
        [{"name": "tap-slow-sh", "executable": str(tap)}],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    argv = [script("dativo"), "run", "tap-slow-sh", "target-dativo-parquet", "--project"]
    proc = subprocess.Popen(
        [*argv, str(project)],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # started, and blocked reading the tap's output
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert time.monotonic() - sent < 5
    assert "interrupted by SIGTERM" in stderr
