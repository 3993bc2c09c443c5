"""`dativo run` and `meltano run` of the same pair share one state: whichever runs second
reads nothing new. With Meltano's default store (the system database: read directly, and
through `meltano state` when Meltano is on PATH) and with a ``file://`` state backend;
the partial state of a `meltano run --full-refresh` merged over the completed one;
Meltano's ``s3://`` backend (moto's server) read and written by both; and an interrupted
`dativo run` leaving its last committed state in Meltano's store.

The tests use the installed project copy of test_meltano.py, each in an environment of
its own (its own state id, CSV folder and Parquet folder), so that they do not meet the
tests there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dativo_bridge.meltano_state import (
    MeltanoCliStateStore,
    S3StateStore,
    StateStoreError,
    SystemDbStateStore,
    choose_state_store,
)
from dativo_bridge.project import Project
from tests.e2e.test_meltano import meltano, project  # noqa: F401 - the fixtures
from tests.integration.s3server import CREDENTIALS, new_bucket, s3_endpoint

from .helpers import BIN, REPO, read_parquet_dir, script, write_project

PAIR = ("tap-dativo-csv", "target-dativo-parquet")


def _env(meltano_on_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    env.pop("DATIVO_STATE_STORE", None)
    path = [str(BIN)]
    if meltano_on_path is not None:
        path.append(str(meltano_on_path.parent))
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    return env


def _meltano(exe: Path, root: Path, environment: str, *args: str) -> str:
    done = subprocess.run(
        [str(exe), "--environment", environment, *args],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"meltano {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stdout


def _meltano_state(exe: Path, root: Path, environment: str) -> dict:
    out = _meltano(exe, root, environment, "state", "get", f"{environment}:{PAIR[0]}-to-{PAIR[1]}")
    return json.loads(out.strip().splitlines()[-1]).get("singer_state") or {}


def _run_dativo(
    root: Path, environment: str, *args: str, meltano_on_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            script("dativo"),
            "run",
            *PAIR,
            *("--project", str(root / "meltano.yml"), "--environment", environment),
            *args,
        ],
        cwd=root,
        env=_env(meltano_on_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"dativo run failed:\n{done.stderr[-4000:]}"
    return done


def _dativo(
    root: Path, environment: str, *args: str, meltano_on_path: Path | None = None
) -> tuple[dict, str]:
    """(the --json summary, stderr) of `dativo run` of the pair."""
    done = _run_dativo(root, environment, "--json", *args, meltano_on_path=meltano_on_path)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _ids(root: Path, environment: str) -> list[int]:
    return sorted(read_parquet_dir(root / environment / "out").column("id").to_pylist())


def _new_orders(root: Path, environment: str) -> None:
    """A second CSV file, newer than the first: an incremental run reads only it."""
    path = root / environment / "data" / "orders-2.csv"
    path.write_text(
        "id,customer,amount,ordered_at,paid\n6,Margaret Hamilton,99.5,2026-02-01T00:00:00Z,true\n"
    )
    os.utime(path, (2_000_000_000, 2_000_000_000))


@pytest.fixture
def env_name(project: Path, request: pytest.FixtureRequest) -> Iterator[str]:  # noqa: F811
    """A Meltano environment of the test's own: the pair reads <env>/data/*.csv (the demo
    orders, ids 1-5) and writes <env>/out; meltano.yml is restored afterwards."""
    name = "st-" + request.node.name.removeprefix("test_")[:40].replace("_", "-")
    folder = project / name
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "orders-1.csv").write_bytes((REPO / "demo" / "orders.csv").read_bytes())
    original = (project / "meltano.yml").read_text()
    data = yaml.safe_load(original)
    data["environments"].append(
        {
            "name": name,
            "config": {
                "plugins": {
                    "extractors": [
                        {
                            "name": PAIR[0],
                            "config": {
                                "files": [
                                    {
                                        "stream": "orders",
                                        "path": f"{name}/data/*.csv",
                                        "key_properties": ["id"],
                                    }
                                ]
                            },
                        }
                    ],
                    "loaders": [{"name": PAIR[1], "config": {"path": f"{name}/out"}}],
                }
            },
        }
    )
    (project / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield name
    finally:
        (project / "meltano.yml").write_text(original)


def test_meltano_run_then_dativo_run_reads_nothing_new(
    meltano: Path,  # noqa: F811
    project: Path,  # noqa: F811
    env_name: str,
) -> None:
    _meltano(meltano, project, env_name, "run", *PAIR)
    assert _ids(project, env_name) == [1, 2, 3, 4, 5]
    # No Meltano on PATH: dativo reads the system database itself.
    summary, stderr = _dativo(project, env_name)
    assert summary["rows"] == 0, "dativo run re-read what meltano run loaded"
    assert summary["state_store"]["kind"] == "meltano"
    assert summary["state_store"]["backend"] == "systemdb"
    assert str(project / ".meltano" / "meltano.db") in summary["state_store"]["location"]
    assert "state store: Meltano's state backend 'systemdb'" in stderr
    assert _ids(project, env_name) == [1, 2, 3, 4, 5]
    # It goes on from there, and meltano run goes on from what dativo run saved.
    _new_orders(project, env_name)
    summary, _ = _dativo(project, env_name)
    assert summary["rows"] == 1
    _meltano(meltano, project, env_name, "run", *PAIR)
    assert _ids(project, env_name) == [1, 2, 3, 4, 5, 6], "meltano run re-read dativo's rows"


def test_dativo_run_then_meltano_run_reads_nothing_new(
    meltano: Path,  # noqa: F811
    project: Path,  # noqa: F811
    env_name: str,
) -> None:
    # Meltano on PATH: dativo keeps the state through `meltano state`.
    summary, _ = _dativo(project, env_name, meltano_on_path=meltano)
    assert summary["rows"] == 5
    assert summary["state_store"]["kind"] == "meltano"
    assert f"through {meltano} state" in summary["state_store"]["location"]
    state = _meltano_state(meltano, project, env_name)
    assert state["bookmarks"]["orders"]["replication_key"] == "_sdc_modified_at"
    assert "dativo_run" not in state, "a finished run leaves no run marker"
    _meltano(meltano, project, env_name, "run", *PAIR)
    assert _ids(project, env_name) == [1, 2, 3, 4, 5], "meltano run re-read dativo's rows"


def test_a_file_state_backend_is_shared_both_ways(
    meltano: Path,  # noqa: F811
    project: Path,  # noqa: F811
    env_name: str,
) -> None:
    data = yaml.safe_load((project / "meltano.yml").read_text())
    data["state_backend"] = {"uri": f"file://$MELTANO_PROJECT_ROOT/{env_name}/state"}
    (project / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    sid = f"{env_name}:{PAIR[0]}-to-{PAIR[1]}"
    state_file = project / env_name / "state" / sid / "state.json"

    _meltano(meltano, project, env_name, "run", *PAIR)
    assert state_file.exists(), "meltano run did not use the file backend"
    summary, _ = _dativo(project, env_name, meltano_on_path=meltano)
    assert summary["rows"] == 0, "dativo run re-read what meltano run loaded"
    assert summary["state_store"]["backend"] == "file"
    assert summary["state_store"]["location"] == str(state_file)

    _new_orders(project, env_name)
    done = _run_dativo(project, env_name)  # the summary table, not --json
    assert (
        f"State saved under id '{sid}' in Meltano's state backend 'file', {state_file}"
        in done.stdout
    ), done.stdout
    assert " 1 " in next(line for line in done.stdout.splitlines() if "orders" in line)
    written = json.loads(state_file.read_text())
    assert written["partial"] == {} and "bookmarks" in written["completed"]["singer_state"]
    assert not (state_file.parent / "lock").exists()
    _meltano(meltano, project, env_name, "run", *PAIR)
    assert _ids(project, env_name) == [1, 2, 3, 4, 5, 6], "meltano run re-read dativo's rows"

    # --state-store local (or --state-dir) leaves Meltano's store alone.
    summary, _ = _dativo(project, env_name, "--state-store", "local")
    assert summary["state_store"]["kind"] == "local" and summary["rows"] == 6


def _meltano_with_s3() -> Path:
    """Meltano with its s3 extra (boto3): the set-up's, installed beside dativo, which
    depends on boto3 itself; else in a venv of its own beside peer_venv's (cached)."""
    beside = BIN / "meltano"
    if (
        beside.exists()
        and subprocess.run([str(BIN / "python"), "-c", "import boto3"]).returncode == 0
    ):
        return beside
    home = REPO / ".dativo" / "test-venvs" / "meltano-s3"
    exe = home / "bin" / "meltano"
    if not exe.exists():
        venv.create(home, with_pip=True, clear=True)
        pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "meltano[s3]>=4,<5"], check=True, timeout=900)
    return exe


def test_s3_state_backend_is_meltanos_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dativo's own S3 store (no Meltano on PATH) and Meltano's read each other's state."""
    exe = _meltano_with_s3()
    bucket = new_bucket("dativo-state")
    root = tmp_path / "project"
    root.mkdir()
    write_project(root, [{"name": "tap-x"}], [{"name": "target-y"}])
    for name in list(os.environ):
        if name.startswith("MELTANO_"):
            monkeypatch.delenv(name)
    key, secret = CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"]
    monkeypatch.setenv("MELTANO_STATE_BACKEND_URI", f"s3://{key}:{secret}@{bucket}/meltano/state")
    monkeypatch.setenv("MELTANO_STATE_BACKEND_S3_ENDPOINT_URL", s3_endpoint())
    monkeypatch.setenv("AWS_DEFAULT_REGION", CREDENTIALS["region"])
    sid = "test:tap-x-to-target-y"
    store = choose_state_store(Project(root / "meltano.yml"), which=lambda _name: None)
    assert isinstance(store, S3StateStore)
    assert store.location(sid) == f"s3://{bucket}/meltano/state/{sid}/state.json"
    assert secret not in store.describe(sid)

    def meltano_state(*args: str) -> str:
        done = subprocess.run(
            [str(exe), "--environment", "test", "state", *args],
            cwd=root,
            env={k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    value = {"bookmarks": {"orders": {"replication_key_value": 41}}}
    store.put(sid, value)
    assert json.loads(meltano_state("get", sid))["singer_state"] == value
    objects = store.blobs.client.list_objects_v2(Bucket=bucket)["Contents"]  # type: ignore[attr-defined]
    assert [o["Key"] for o in objects] == [f"meltano/state/{sid}/state.json"], "lock left behind"
    newer = {"bookmarks": {"orders": {"replication_key_value": 42}}}
    meltano_state("set", "--force", sid, json.dumps({"singer_state": newer}))
    assert store.get(sid) == newer
    # Through Meltano itself when it is installed for the project.
    via_cli = choose_state_store(Project(root / "meltano.yml"), which=lambda _name: str(exe))
    assert isinstance(via_cli, MeltanoCliStateStore) and via_cli.backend == "s3"
    assert via_cli.get(sid) == newer
    store.clear(sid)
    assert json.loads(meltano_state("get", sid)) == {}


def test_partial_state_of_a_meltano_full_refresh_is_merged_over_the_completed(
    meltano: Path,  # noqa: F811
    project: Path,  # noqa: F811
    env_name: str,
) -> None:
    """`meltano run --full-refresh` stores partial states over the completed one; dativo
    reads the merge, as Meltano does, and its own save is a completed state again."""
    data = yaml.safe_load((project / "meltano.yml").read_text())
    data["state_backend"] = {"uri": f"file://$MELTANO_PROJECT_ROOT/{env_name}/state"}
    (project / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    sid = f"{env_name}:{PAIR[0]}-to-{PAIR[1]}"
    state_file = project / env_name / "state" / sid / "state.json"

    _meltano(meltano, project, env_name, "run", *PAIR)
    _new_orders(project, env_name)
    _meltano(meltano, project, env_name, "run", "--full-refresh", *PAIR)
    stored = json.loads(state_file.read_text())
    newest = stored["partial"]["singer_state"]["bookmarks"]["orders"]["replication_key_value"]
    assert newest.startswith("2033-"), stored  # orders-2.csv's modification time
    assert (
        stored["completed"]["singer_state"]["bookmarks"]["orders"]
        != (stored["partial"]["singer_state"]["bookmarks"]["orders"])
    )
    summary, _ = _dativo(project, env_name)
    assert summary["rows"] == 0, "dativo run read the completed state without the partial one"


def test_an_interrupted_run_leaves_its_last_committed_state_in_meltanos_store(
    meltano: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Through `meltano state`, states are written at most every few seconds; SIGTERM
    still leaves the last committed one in Meltano's store, so the rerun repeats at most
    the bookmark's row."""
    total = 100_000
    shutil.copytree(Path(__file__).parent / "plugins", tmp_path / "plugins")
    out = tmp_path / "out"
    reader = {"reader_class": "e2e_readers:SlowCounterReader", "plugin_dirs": ["plugins"]}
    slow = {**reader, "total": total, "batch_rows": 1_000, "pause": 0.05}
    yml = write_project(
        tmp_path,
        [{"name": "tap-slow", "config": slow}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    (tmp_path / ".meltano").mkdir()
    sid = "test:tap-slow-to-target-dativo-parquet"
    args = ["run", "tap-slow", "target-dativo-parquet", "--project", str(yml)]
    proc = subprocess.Popen(
        [script("dativo"), *args, "--checkpoint-rows", "2000"],
        cwd=tmp_path,
        env=_env(meltano),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    database = SystemDbStateStore(tmp_path / ".meltano" / "meltano.db")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(StateStoreError):
            if database.get(sid) is not None:
                break
        time.sleep(0.2)
    time.sleep(1.5)  # more checkpoints, whose states wait for the next `meltano state set`
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Meltano's state backend 'systemdb'" in stderr, stderr
    bookmark = database.get(sid)["bookmarks"]["counter"]["replication_key_value"]  # type: ignore[index]
    assert bookmark < total, "the run must have stopped midway"

    done = _run_dativo_in(tmp_path, [*args[1:], "--json"], meltano)
    assert json.loads(done.stdout.strip().splitlines()[-1])["rows"] <= total - bookmark + 1
    ids = read_parquet_dir(out).column("id").to_pylist()
    assert sorted(set(ids)) == list(range(1, total + 1))
    assert len(ids) <= total + 1, "the last committed state was not saved: rows repeated"


def _run_dativo_in(
    cwd: Path, args: list[str], meltano_on_path: Path
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [script("dativo"), "run", *args],
        cwd=cwd,
        env=_env(meltano_on_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
