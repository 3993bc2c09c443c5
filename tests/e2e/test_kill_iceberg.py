"""`dativo run` into Iceberg killed with SIGKILL: an overwrite run leaves the table as it
was and a resumed run replaces it once; an append run killed after a checkpoint resumes
with every row once and its dead files removed; two pipelines never share a bookmark."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from dativo_bridge.state import LocalStateStore
from target_dativo_iceberg.writer import open_catalog

from .helpers import dativo_run, env, script, write_project

PLUGINS = Path(__file__).parent / "plugins"
TOTAL = 40_000


def _tap(name: str, total: int, pause: float) -> dict[str, Any]:
    return {
        "name": name,
        "config": {
            "reader_class": "e2e_readers:SlowCounterReader",
            "plugin_dirs": ["plugins"],
            "total": total,
            "batch_rows": 2_000,
            "pause": pause,
        },
    }


def _project(tmp_path: Path, target: dict[str, Any], *taps: dict[str, Any]) -> Path:
    if not (tmp_path / "plugins").exists():
        shutil.copytree(PLUGINS, tmp_path / "plugins")
    loader = {"name": "target-dativo-iceberg", "config": target}
    return write_project(tmp_path, list(taps), [loader])


def _popen(project: Path, tap: str, *args: str) -> subprocess.Popen[bytes]:
    command = [script("dativo"), "run", tap, "target-dativo-iceberg", "--project", str(project)]
    return subprocess.Popen(
        [*command, *args],
        cwd=project.parent,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _files(data: Path) -> set[Path]:
    return set(data.glob("*.parquet"))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""


def _referenced(warehouse: Path, table: str) -> set[str]:
    files = open_catalog({"warehouse": str(warehouse)}).load_table(table).inspect.all_files()
    return {os.path.basename(p) for p in files.column("file_path").to_pylist()}


def test_overwrite_killed_midway_leaves_the_table_then_resume_replaces_once(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse"
    target = {"warehouse": str(warehouse), "load_method": "overwrite", "target_file_size_mb": 0.02}
    project = _project(tmp_path, target, _tap("tap-slow", TOTAL, 0.05))
    state = ["--state-dir", str(tmp_path / "state")]
    dativo_run(project, "tap-slow", "target-dativo-iceberg", *state)
    catalog = open_catalog({"warehouse": str(warehouse)})
    first = catalog.load_table("singer.counter")
    first_snapshot = first.current_snapshot()
    assert first_snapshot is not None
    assert sorted(first.scan().to_arrow().column("id").to_pylist()) == list(range(1, TOTAL + 1))

    data = warehouse / "singer" / "counter" / "data"
    before = _files(data)
    proc = _popen(project, "tap-slow", *state)
    deadline = time.monotonic() + 60
    while len(_files(data) - before) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "the second run wrote no data files in time"
        time.sleep(0.05)
    running = proc.poll() is None
    if running:
        _kill(proc)
    else:
        proc.wait()

    table = catalog.load_table("singer.counter")
    ids = table.scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(1, TOTAL + 1)), "the second run changed the table"
    current = table.current_snapshot()
    assert current is not None and current.snapshot_id == first_snapshot.snapshot_id
    assert running, "the second run (an overwrite) must read the whole source, not resume"
    left = _files(data) - before
    assert left, "the killed run left data files"

    dativo_run(project, "tap-slow", "target-dativo-iceberg", *state)
    table = catalog.load_table("singer.counter")
    ids = table.scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(1, TOTAL + 1)), "the resumed run is one complete run"
    assert not any(p.exists() for p in left), "the dead run's files are deleted"
    assert {p.name for p in data.glob("*.parquet")} == _referenced(warehouse, "singer.counter")


def test_append_killed_after_a_checkpoint_resumes_exactly_once(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    target = {"warehouse": str(warehouse), "target_file_size_mb": 0.02}
    project = _project(tmp_path, target, _tap("tap-slow", TOTAL, 0.05))
    state_dir = tmp_path / "state"
    store = LocalStateStore(state_dir)
    state_id = "test:tap-slow-to-target-dativo-iceberg"
    proc = _popen(project, "tap-slow", "--state-dir", str(state_dir), "--checkpoint-rows", "6000")
    data = warehouse / "singer" / "counter" / "data"
    deadline = time.monotonic() + 60
    while store.get(state_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get(state_id) is not None, "no checkpoint before the deadline"
    time.sleep(0.2)  # uncommitted files in flight
    _kill(proc)
    left = {p for p in _files(data) if p.name not in _referenced(warehouse, "singer.counter")}
    assert left, "the killed run left uncommitted data files"

    done = dativo_run(
        project, "tap-slow", "target-dativo-iceberg", "--state-dir", str(state_dir), "--json"
    )
    assert json.loads(done.stdout)["rows"] < TOTAL, "the run resumed from its bookmark"
    table = open_catalog({"warehouse": str(warehouse)}).load_table("singer.counter")
    ids = table.scan().to_arrow().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == TOTAL, "rows lost or duplicated"
    assert not any(p.exists() for p in left), "the dead run's uncommitted files are deleted"


def test_another_pipeline_into_the_same_table_reads_its_whole_source(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    project = _project(
        tmp_path,
        {"warehouse": str(warehouse)},
        _tap("tap-slow", 3_000, 0.0),
        _tap("tap-other", 5_000, 0.0),
    )
    state = ["--state-dir", str(tmp_path / "state"), "--json"]
    first = dativo_run(project, "tap-slow", "target-dativo-iceberg", *state)
    assert json.loads(first.stdout)["rows"] == 3_000
    other = dativo_run(project, "tap-other", "target-dativo-iceberg", *state)
    assert json.loads(other.stdout)["rows"] == 5_000, "the other pipeline took our bookmark"
    again = dativo_run(project, "tap-slow", "target-dativo-iceberg", *state)
    assert json.loads(again.stdout)["rows"] <= 1, "the first pipeline resumes at its bookmark"
