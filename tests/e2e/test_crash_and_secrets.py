"""A run killed between batches leaves only complete files and resumes without loss;
secrets never appear in output, even in errors."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from dativo_bridge.state import LocalStateStore

from .helpers import dativo_run, env, read_parquet_dir, script, write_project

PLUGINS = Path(__file__).parent / "plugins"
TOTAL = 60_000


def _project(tmp_path: Path, out: Path, pause: float) -> Path:
    shutil.copytree(PLUGINS, tmp_path / "plugins")
    return write_project(
        tmp_path,
        [
            {
                "name": "tap-slow",
                "config": {
                    "reader_class": "e2e_readers:SlowCounterReader",
                    "plugin_dirs": ["plugins"],
                    "total": TOTAL,
                    "batch_rows": 2_000,
                    "pause": pause,
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )


def test_kill_between_batches_then_resume_delivers_every_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    project = _project(tmp_path, out, pause=0.05)
    state_dir = tmp_path / "state"
    store = LocalStateStore(state_dir)
    state_id = "test:tap-slow-to-target-dativo-parquet"
    proc = subprocess.Popen(
        [
            script("dativo"),
            "run",
            "tap-slow",
            "target-dativo-parquet",
            "--project",
            str(project),
            "--state-dir",
            str(state_dir),
            "--checkpoint-rows",
            "10000",
        ],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while store.get(state_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get(state_id) is not None, "no checkpoint was recorded before the deadline"
    time.sleep(0.3)  # let it get between later batches, with uncommitted rows in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    saved = store.get(state_id)
    bookmark = saved["bookmarks"]["counter"]["replication_key_value"]
    assert 0 < bookmark < TOTAL, "the run must have been killed midway"
    # Every visible file is complete and readable; together they hold every row up to the
    # recorded bookmark (the promise the state makes).
    visible = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    for path in visible:
        pq.read_table(path)
    first = read_parquet_dir(out / "counter")
    ids = set(first.column("id").to_pylist())
    assert set(range(1, bookmark + 1)) <= ids

    done = dativo_run(
        project, "tap-slow", "target-dativo-parquet", "--state-dir", str(state_dir), "--json"
    )
    summary = json.loads(done.stdout)
    assert summary["rows"] >= TOTAL - bookmark
    final = read_parquet_dir(out / "counter")
    assert set(final.column("id").to_pylist()) == set(range(1, TOTAL + 1))
    assert not list(out.rglob("*.inprogress")), "the rerun removes files of the dead writer"
    assert store.get(state_id)["bookmarks"]["counter"]["replication_key_value"] == TOTAL


def test_secret_from_env_never_printed(tmp_path: Path) -> None:
    secret = "sk-live-9f8e7d6c5b4a"
    shutil.copytree(PLUGINS, tmp_path / "plugins")
    (tmp_path / ".env").write_text(f"LEAKY_TOKEN={secret}\n")
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-leaky",
                "config": {
                    "reader_class": "e2e_readers:LeakyReader",
                    "plugin_dirs": ["plugins"],
                    "api_token": "$LEAKY_TOKEN",
                    "endpoint": "https://api.example.invalid/v1",
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    done = dativo_run(
        project, "tap-leaky", "target-dativo-parquet", "--log-level", "DEBUG", check=False
    )
    assert done.returncode == 1
    assert "request to https://api.example.invalid/v1?token=********" in done.stderr
    assert secret not in done.stderr + done.stdout
    assert "loaded e2e_readers:LeakyReader" in done.stderr and "sha256" in done.stderr


def test_plugin_dir_outside_project_is_refused(tmp_path: Path) -> None:
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-evil",
                "config": {
                    "reader_class": "e2e_readers:SlowCounterReader",
                    "plugin_dirs": ["../../"],
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    done = dativo_run(project, "tap-evil", "target-dativo-parquet", check=False)
    assert done.returncode == 1
    assert "outside the project directory" in done.stderr
