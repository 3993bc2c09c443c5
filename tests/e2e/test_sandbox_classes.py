"""`dativo run` with a user's ``reader_class`` / ``writer_class`` (or a Dativo plugin) that
has a ``sandbox:`` mapping: the class runs in a worker under ``dativo sandbox``, its
batches crossing as Arrow IPC (dativo_bridge/ipc.py). Same rows and types as in process;
the hostile checks hold for such a class; a breach fails the run with the one line."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import dativo_run, read_parquet_dir, write_project

MODULE = textwrap.dedent(
    '''
    import datetime as dt
    import decimal
    import json
    import os
    import socket

    import pyarrow as pa

    from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo

    SCHEMA = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("amount", pa.decimal128(12, 3)),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("day", pa.date32()),
        pa.field("name", pa.string()),
        pa.field("blob", pa.binary()),
        pa.field("tags", pa.list_(pa.int32())),
        pa.field("point", pa.struct([("x", pa.float64()), ("y", pa.float64())])),
    ])


    class TypedReader(ArrowReader):
        name = "typed"
        config_jsonschema = {
            "type": "object",
            "properties": {"rows": {"type": "integer", "default": 10}},
        }
        is_sorted = True

        def discover(self):
            return [StreamInfo("typed", SCHEMA, ("id",), "id", "INCREMENTAL")]

        def read(self, stream, bookmark):
            start = int(bookmark or 0)
            rows = self.config["rows"]
            for low in range(start, rows, 4):
                ids = list(range(low, min(low + 4, rows)))
                yield pa.record_batch({
                    "id": ids,
                    "amount": [decimal.Decimal(i) / 1000 for i in ids],
                    "at": [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
                           + dt.timedelta(seconds=i) for i in ids],
                    "day": [dt.date(2024, 1, 1 + i % 28) for i in ids],
                    "name": [None if i % 3 == 0 else f"n{i}" for i in ids],
                    "blob": [bytes([i % 256]) * 3 for i in ids],
                    "tags": [[i, i + 1] for i in ids],
                    "point": [{"x": i / 2, "y": -i / 2} for i in ids],
                }, schema=stream.schema).select(stream.schema.names)

        def bookmark(self, stream, batch, previous):
            # Not the default (the key's max): the worker's value must reach STATE.
            return int(batch.column("id")[-1].as_py()) + 1000


    def _probe(path, port):
        try:
            with open(path) as fh:
                seen = "OK " + fh.read().strip()
        except OSError as exc:
            seen = f"DENIED {exc.errno}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            net = "connected"
        except OSError as exc:
            net = f"refused {exc.errno}"
        return {
            "file": seen,
            "env": os.environ.get("AWS_SECRET_ACCESS_KEY", "absent"),
            "net": net,
        }


    PROBE = pa.schema([pa.field("check", pa.string(), nullable=False), ("result", pa.string())])


    class HostileReader(ArrowReader):
        name = "hostile"
        config_jsonschema = {"type": "object", "properties": {
            "probe_path": {"type": "string"}, "port": {"type": "integer"},
            "allocate_mb": {"type": "integer", "default": 0},
        }}

        def discover(self):
            return [StreamInfo("probe", PROBE, ("check",))]

        def read(self, stream, bookmark):
            held = [b"x" * (8 << 20) for _ in range(self.config["allocate_mb"] // 8)]
            found = _probe(self.config["probe_path"], self.config["port"])
            found["held"] = str(len(held))
            yield pa.record_batch(
                {"check": list(found), "result": list(found.values())}, schema=PROBE
            )


    class GarbageReader(TypedReader):
        """Writes garbage into the protocol pipe (the worker's saved stdout) mid-read."""
        name = "garbage"

        def read(self, stream, bookmark):
            for number, batch in enumerate(super().read(stream, bookmark)):
                if number == 1:
                    for fd in map(int, os.listdir("/proc/self/fd")):
                        if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                            try:
                                os.write(fd, bytes([255]) * 64 + b"garbage")
                            except OSError:
                                pass
                yield batch


    class FailingWriter(ArrowWriter):
        name = "failing-writer"

        def write(self, batch):
            raise ValueError("disk on fire")

        def commit(self):
            return CommitResult()


    class HostileWriter(ArrowWriter):
        """Writes what it could reach (and the rows it got) as JSON into ``path``."""
        name = "hostile-writer"
        config_jsonschema = {"type": "object", "properties": {
            "path": {"type": "string"}, "probe_path": {"type": "string"},
            "port": {"type": "integer"},
        }}

        def open(self, config, stream):
            super().open(config, stream)
            self.rows = 0

        def write(self, batch):
            self.rows += batch.num_rows

        def commit(self):
            found = _probe(self.config["probe_path"], self.config["port"])
            found["rows"] = self.rows
            target = os.path.join(self.config["path"], "probe.json")
            with open(target, "w") as fh:
                json.dump(found, fh)
            return CommitResult(paths=[target], rows=self.rows)
    '''
)


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sandbox_classes.py").write_text(MODULE)
    return tmp_path


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port this test listens on (what the hostile code tries to reach)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_a_sandboxed_reader_gives_the_same_rows_types_and_state_as_in_process(
    project_dir: Path,
) -> None:
    reader = {"reader_class": "sandbox_classes:TypedReader", "plugin_dirs": ["plugins"], "rows": 10}
    tables = {}
    for label, sandbox in (("plain", None), ("sandboxed", {"memory_mb": 512})):
        out = project_dir / label
        extractor: dict = {"name": "tap-typed", "config": reader}
        if sandbox is not None:
            extractor["sandbox"] = sandbox
        project = write_project(
            project_dir,
            [extractor],
            [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
        )
        done = dativo_run(
            project, "tap-typed", "target-dativo-parquet", "--state-dir", str(project_dir / label)
        )
        summary = json.loads(
            dativo_run(
                project,
                "tap-typed",
                "target-dativo-parquet",
                "--state-dir",
                str(project_dir / label),
                "--json",
            ).stdout
        )
        tables[label] = (read_parquet_dir(out / "typed").sort_by("id"), summary, done.stderr)
    plain, plain_summary, _ = tables["plain"]
    boxed, boxed_summary, stderr = tables["sandboxed"]
    assert boxed.num_rows == 10
    assert boxed.schema == plain.schema
    assert boxed.equals(plain)
    # The user's bookmark() ran in the worker: the second run resumed from 1009.
    audit = [line for line in stderr.splitlines() if "audit: tap-typed starts" in line]
    assert audit and "memory_mb=512" in audit[0], stderr[-3000:]
    assert audit[0].endswith("class=sandbox_classes:TypedReader")
    module = project_dir / "plugins" / "sandbox_classes.py"
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    assert f"loaded sandbox_classes:TypedReader from {module} sha256={digest}" in stderr
    assert plain_summary.get("state") == boxed_summary.get("state")
    assert "1009" in json.dumps(boxed_summary.get("state"))


def test_the_hostile_checks_hold_for_a_sandboxed_reader_class(
    project_dir: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    secret = project_dir / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_text("aws_secret_access_key = from-home\n")
    config = {
        "reader_class": "sandbox_classes:HostileReader",
        "plugin_dirs": ["plugins"],
        "probe_path": str(secret),
        "port": listener,
    }
    results = {}
    for label, sandbox in (("plain", None), ("sandboxed", {"memory_mb": 256})):
        out = project_dir / label
        extractor: dict = {"name": "tap-hostile", "config": config}
        if sandbox is not None:
            extractor["sandbox"] = sandbox
        project = write_project(
            project_dir,
            [extractor],
            [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
        )
        dativo_run(project, "tap-hostile", "target-dativo-parquet")
        files = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
        rows = [row for f in files for row in pq.read_table(f).to_pylist()]
        results[label] = {row["check"]: row["result"] for row in rows}
    # In process the class sees everything (what the sandbox takes away).
    assert results["plain"] == {
        "file": "OK aws_secret_access_key = from-home",
        "env": "parent-secret",
        "net": "connected",
        "held": "0",
    }
    boxed = results["sandboxed"]
    assert boxed["file"] == "DENIED 13"
    assert boxed["env"] == "absent"
    assert boxed["net"].startswith("refused")
    assert boxed["held"] == "0"


def test_the_hostile_checks_hold_for_a_sandboxed_writer_class(
    project_dir: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    secret = project_dir / "secret.txt"
    secret.write_text("top secret\n")
    out = project_dir / "out"
    out.mkdir()
    project = write_project(
        project_dir,
        [
            {
                "name": "tap-typed",
                "config": {
                    "reader_class": "sandbox_classes:TypedReader",
                    "plugin_dirs": ["plugins"],
                    "rows": 7,
                },
            }
        ],
        [
            {
                "name": "target-hostile",
                "config": {
                    "writer_class": "sandbox_classes:HostileWriter",
                    "plugin_dirs": ["plugins"],
                    "path": str(out),
                    "probe_path": str(secret),
                    "port": listener,
                },
                "sandbox": {"writable": [str(out)], "level": "strict"},
            }
        ],
    )
    dativo_run(project, "tap-typed", "target-hostile")
    found = json.loads((out / "probe.json").read_text())
    assert found["rows"] == 7
    assert found["file"] == "DENIED 13"
    assert found["env"] == "absent"
    assert found["net"].startswith("refused")


def test_a_dativo_writer_with_a_sandbox_mapping_runs_out_of_process(project_dir: Path) -> None:
    """A registered Dativo plugin (target-dativo-parquet) with sandbox: runs in the worker
    too: it can write only where the policy lets it."""
    reader = {"reader_class": "sandbox_classes:TypedReader", "plugin_dirs": ["plugins"], "rows": 9}
    allowed = project_dir / "allowed"
    allowed.mkdir()
    for path, ok in ((allowed, True), (project_dir / "elsewhere", False)):
        project = write_project(
            project_dir,
            [{"name": "tap-typed", "config": reader}],
            [
                {
                    "name": "target-dativo-parquet",
                    "config": {"path": str(path)},
                    "sandbox": {"writable": [str(allowed)]},
                }
            ],
        )
        done = dativo_run(
            project,
            "tap-typed",
            "target-dativo-parquet",
            "--state-dir",
            str(project_dir / f"state-{ok}"),
            check=False,
        )
        if ok:
            assert done.returncode == 0, done.stderr[-3000:]
            assert read_parquet_dir(allowed / "typed").num_rows == 9
        else:
            assert done.returncode != 0
            assert "Permission denied" in done.stderr, done.stderr[-3000:]
            assert not (project_dir / "elsewhere" / "typed").exists()


def test_a_sandboxed_reader_past_its_memory_limit_fails_the_run_with_the_one_line(
    project_dir: Path, listener: int
) -> None:
    out = project_dir / "out"
    project = write_project(
        project_dir,
        [
            {
                "name": "tap-hog",
                "config": {
                    "reader_class": "sandbox_classes:HostileReader",
                    "plugin_dirs": ["plugins"],
                    "probe_path": "/nonexistent",
                    "port": listener,
                    "allocate_mb": 400,
                },
                "sandbox": {"memory_mb": 128},
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    state_dir = project_dir / "state"
    done = dativo_run(
        project, "tap-hog", "target-dativo-parquet", "--state-dir", str(state_dir), check=False
    )
    assert done.returncode != 0
    assert "sandbox: tap-hog exceeded its memory limit of 128 MB" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(p.is_file() for p in state_dir.rglob("*")) if state_dir.exists() else True


def test_a_run_that_fails_mid_read_stops_the_sandboxed_reader(project_dir: Path) -> None:
    """The writer fails at its first batch while the sandboxed reader still has many to
    send: the run ends at once with the writer's error, and no worker is left behind."""
    project = write_project(
        project_dir,
        [
            {
                "name": "tap-typed",
                "config": {
                    "reader_class": "sandbox_classes:TypedReader",
                    "plugin_dirs": ["plugins"],
                    "rows": 400000,
                },
                "sandbox": {"memory_mb": 512},
            }
        ],
        [
            {
                "name": "target-failing",
                "config": {
                    "writer_class": "sandbox_classes:FailingWriter",
                    "plugin_dirs": ["plugins"],
                },
            }
        ],
    )
    began = time.monotonic()
    done = dativo_run(project, "tap-typed", "target-failing", check=False, timeout=120)
    took = time.monotonic() - began
    assert done.returncode != 0
    assert "disk on fire" in done.stderr, done.stderr[-3000:]
    assert took < 30, took
    workers = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"dativo_bridge.ipc" in command and cwd.startswith(str(project_dir)):
            workers.append(entry.name)
    assert workers == []


def test_garbage_from_a_hostile_worker_fails_the_run_cleanly(project_dir: Path) -> None:
    """A class that writes into the protocol pipe itself: the run fails with the plugin
    named, at once and without a traceback; nothing of the garbage is trusted."""
    out = project_dir / "out"
    project = write_project(
        project_dir,
        [
            {
                "name": "tap-garbage",
                "config": {
                    "reader_class": "sandbox_classes:GarbageReader",
                    "plugin_dirs": ["plugins"],
                    "rows": 40,
                },
                "sandbox": {"memory_mb": 256},
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    began = time.monotonic()
    done = dativo_run(project, "tap-garbage", "target-dativo-parquet", check=False, timeout=120)
    assert done.returncode != 0
    assert "error: plugin 'tap-garbage' exited" in done.stderr, done.stderr[-3000:]
    assert "its worker broke the protocol: a frame header of" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - began < 30
