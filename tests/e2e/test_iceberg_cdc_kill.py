"""`dativo run` of a change stream into target-dativo-iceberg (upsert + hard_delete),
killed with SIGKILL at random moments: after every kill the table is exactly the change
log applied up to the LSN its snapshot committed, and a final run converges to the whole
log applied, value for value."""

from __future__ import annotations

import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from pyiceberg.exceptions import NoSuchTableError

from target_dativo_iceberg.writer import IcebergWriter, open_catalog

from .helpers import dativo_run, env, script, write_project

CHANGES = 12_000
KEYS = 1_500
SEED = 18

#: A reader of a deterministic change log (inserts, updates, deletes with _sdc_lsn),
#: resuming at its bookmark, written into the project's plugins directory.
READER = textwrap.dedent(
    '''
    import random
    import time
    import pyarrow as pa
    from dativo_bridge import ArrowReader, StreamInfo

    STAMP = pa.timestamp("us", tz="UTC")
    SCHEMA = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        ("name", pa.string()),
        ("version", pa.int64()),
        ("_sdc_lsn", pa.int64()),
        ("_sdc_deleted_at", STAMP),
    ])


    def change_log(total, keys, seed):
        """[(lsn, id, name or None, version or None, deleted)] in LSN order."""
        rng = random.Random(seed)
        present = set()
        log = []
        for lsn in range(1, total + 1):
            key = rng.randint(1, keys)
            if key in present and rng.random() < 0.25:
                present.discard(key)
                log.append((lsn, key, None, None, True))
            else:
                present.add(key)
                log.append((lsn, key, f"v{lsn}-{key}", lsn, False))
        return log


    class ChangeLogReader(ArrowReader):
        name = "tap-change-log"
        is_sorted = True
        config_jsonschema = {
            "type": "object",
            "properties": {
                "total": {"type": "integer"},
                "keys": {"type": "integer"},
                "seed": {"type": "integer"},
                "batch_rows": {"type": "integer"},
                "pause": {"type": "number"},
            },
        }

        def discover(self):
            return [StreamInfo("changes", SCHEMA, ("id",), "_sdc_lsn", "INCREMENTAL")]

        def read(self, stream, bookmark):
            log = change_log(self.config["total"], self.config["keys"], self.config["seed"])
            start = int(bookmark) if bookmark is not None else 1
            size = int(self.config["batch_rows"])
            for lo in range(start, len(log) + 1, size):
                rows = log[lo - 1 : lo - 1 + size]
                yield pa.record_batch([
                    pa.array([r[1] for r in rows], pa.int64()),
                    pa.array([r[2] for r in rows], pa.string()),
                    pa.array([r[3] for r in rows], pa.int64()),
                    pa.array([r[0] for r in rows], pa.int64()),
                    pa.array([0 if r[4] else None for r in rows], pa.int64()).cast(STAMP),
                ], schema=SCHEMA)
                time.sleep(float(self.config["pause"]))
    '''
)


def _expected(upto: int) -> dict[int, tuple[str, int, int]]:
    """The mirror after applying the log up to LSN ``upto``: id -> (name, version, lsn)."""
    namespace: dict[str, Any] = {}
    exec(compile(READER, "cdc_readers", "exec"), namespace)  # the reader's own log
    mirror: dict[int, tuple[str, int, int]] = {}
    for lsn, key, name, version, deleted in namespace["change_log"](CHANGES, KEYS, SEED):
        if lsn > upto:
            break
        if deleted:
            mirror.pop(key, None)
        else:
            mirror[key] = (name, version, lsn)
    return mirror


def _mirror(config: dict[str, Any]) -> dict[int, tuple[str, int, int]]:
    rows = open_catalog(config).load_table("singer.changes").scan().to_arrow().to_pylist()
    assert all(r["_sdc_deleted_at"] is None for r in rows), "a deleted row is in the table"
    mirror = {r["id"]: (r["name"], r["version"], r["_sdc_lsn"]) for r in rows}
    assert len(mirror) == len(rows), "a key is in the table twice"
    return mirror


def _snapshots(config: dict[str, Any]) -> int:
    try:
        return len(open_catalog(config).load_table("singer.changes").snapshots())
    except NoSuchTableError:  # not created yet
        return 0


def _committed_lsn(config: dict[str, Any], state_id: str) -> int:
    state = IcebergWriter.recover_state(config, state_id) or {}
    entry = (state.get("bookmarks") or {}).get("changes") or {}
    return int(entry.get("replication_key_value") or 0)


def test_change_stream_killed_at_random_moments_converges(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "cdc_readers.py").write_text(READER)
    warehouse = tmp_path / "warehouse"
    target = {"warehouse": str(warehouse), "load_method": "upsert", "hard_delete": True}
    tap = {
        "name": "tap-changes",
        "config": {
            "reader_class": "cdc_readers:ChangeLogReader",
            "plugin_dirs": ["plugins"],
            "total": CHANGES,
            "keys": KEYS,
            "seed": SEED,
            "batch_rows": 200,
            "pause": 0.05,
        },
    }
    project = write_project(tmp_path, [tap], [{"name": "target-dativo-iceberg", "config": target}])
    args = ["--state-dir", str(tmp_path / "state"), "--checkpoint-rows", "1200"]
    state_id = "test:tap-changes-to-target-dativo-iceberg"
    config = {"warehouse": str(warehouse)}
    command = [script("dativo"), "run", "tap-changes", "target-dativo-iceberg"]
    command += ["--project", str(project)]
    rng = random.Random(SEED)
    committed = [0]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [*command, *args],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Kill at a random moment after this run's first commit (mid-batch, mid-commit, ...).
        first = _snapshots(config)
        deadline = time.monotonic() + 60
        while _snapshots(config) == first and proc.poll() is None:
            assert time.monotonic() < deadline, "the run committed nothing in time"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))  # short: each run reads at most a part of the log
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
        lsn = _committed_lsn(config, state_id)
        assert lsn >= committed[-1], "a committed LSN went back"
        committed.append(lsn)
        if lsn:
            assert _mirror(config) == _expected(lsn), f"the table is not the log up to {lsn}"
    assert kills >= 2, f"only {kills} runs were killed mid-way: the test did not test kills"
    assert committed[-1] > 0, "no run committed before being killed"
    dativo_run(project, "tap-changes", "target-dativo-iceberg", *args)
    assert _committed_lsn(config, state_id) == CHANGES
    assert _mirror(config) == _expected(CHANGES)
    data = warehouse / "singer" / "changes" / "data"
    table = open_catalog(config).load_table("singer.changes")
    referenced = table.inspect.all_files().column("file_path").to_pylist()
    on_disk = {p.name for p in data.glob("*.parquet")}
    assert on_disk == {Path(p).name for p in referenced}, "files of killed runs are left"
