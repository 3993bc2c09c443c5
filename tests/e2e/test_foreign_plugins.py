"""Foreign Singer plugins through the subprocess adapter: a shell-script tap into
target-dativo-parquet, and tap-dativo-csv into target-jsonl installed in its own venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dativo_bridge.state import LocalStateStore

from .helpers import REPO, dativo_run, peer_venv, read_parquet_dir, write_project

SHELL_TAP = r"""#!/bin/sh
# A Singer tap written in sh: it ignores its arguments except --state, which it echoes.
state_file=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--state" ]; then state_file="$2"; fi
  shift
done
echo '{"type": "SCHEMA", "stream": "animals", "key_properties": ["id"], "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}, "weight": {"type": ["string", "null"], "format": "x-singer.decimal", "precision": 6, "scale": 2}, "born": {"type": ["string", "null"], "format": "date-time"}}}}'
i=1
while [ $i -le 250 ]; do
  echo "{\"type\": \"RECORD\", \"stream\": \"animals\", \"record\": {\"id\": $i, \"name\": \"animal $i\", \"weight\": \"$i.25\", \"born\": \"2020-01-01T00:00:00+02:00\"}}"
  i=$((i+1))
done
echo '{"type": "STATE", "value": {"bookmarks": {"animals": {"replication_key": "id", "replication_key_value": 250}}}}'
if [ -n "$FAIL_AFTER_STATE" ]; then
  echo '{"type": "RECORD", "stream": "animals", "record": {"id": 251, "name": "half'
  echo "tap exploded: disk on fire" >&2
  exit 3
fi
"""


@pytest.fixture()
def shell_tap(tmp_path: Path) -> Path:
    path = tmp_path / "tap-animals.sh"
    path.write_text(SHELL_TAP)
    path.chmod(0o755)
    return path


def test_shell_script_tap_into_parquet(tmp_path: Path, shell_tap: Path) -> None:
    out = tmp_path / "out"
    project = write_project(
        tmp_path,
        [{"name": "tap-animals", "executable": str(shell_tap)}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    done = dativo_run(project, "tap-animals", "target-dativo-parquet", "--json")
    summary = json.loads(done.stdout)
    table = read_parquet_dir(out / "animals").sort_by("id")
    assert table.num_rows == 250 == summary["rows"]
    assert str(table.schema.field("weight").type) == "decimal128(6, 2)"
    first = table.slice(0, 1).to_pylist()[0]
    assert str(first["weight"]) == "1.25"
    assert first["born"].isoformat() == "2019-12-31T22:00:00+00:00"
    assert summary["state"] == {
        "bookmarks": {"animals": {"replication_key": "id", "replication_key_value": 250}}
    }


def test_crashing_foreign_tap_reports_stderr_and_keeps_state(
    tmp_path: Path, shell_tap: Path
) -> None:
    out = tmp_path / "out"
    project = write_project(
        tmp_path,
        [{"name": "tap-animals", "executable": str(shell_tap)}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    state_dir = tmp_path / "state"
    store = LocalStateStore(state_dir)
    state_id = "test:tap-animals-to-target-dativo-parquet"
    before = {"bookmarks": {"animals": {"replication_key": "id", "replication_key_value": 7}}}
    store.put(state_id, before)
    os.environ["FAIL_AFTER_STATE"] = "1"
    # Foreign plugins get a scrubbed environment: the tap's switch is named to pass.
    os.environ["DATIVO_PLUGIN_ENV"] = "FAIL_AFTER_STATE"
    try:
        done = dativo_run(
            project,
            "tap-animals",
            "target-dativo-parquet",
            "--state-dir",
            str(state_dir),
            "--checkpoint-rows",
            "100000000",
            check=False,
        )
    finally:
        del os.environ["FAIL_AFTER_STATE"]
        del os.environ["DATIVO_PLUGIN_ENV"]
    assert done.returncode == 1
    assert "tap-animals" in done.stderr and "exited 3" in done.stderr
    assert "disk on fire" in done.stderr
    # Nothing was committed (the checkpoint was not due), so the state must not advance
    # and no file, complete or partial, may be left behind.
    assert store.get(state_id) == before
    assert not [p for p in out.rglob("*") if p.is_file()]


@pytest.fixture(scope="session")
def target_jsonl() -> Path:
    """target-jsonl from PyPI, in its own venv (cached under .dativo/test-venvs)."""
    return peer_venv("target-jsonl==0.1.4", "target-jsonl")


def test_csv_tap_into_foreign_target_jsonl(tmp_path: Path, target_jsonl: Path) -> None:
    out = tmp_path / "jsonl"
    out.mkdir()
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-dativo-csv",
                "config": {
                    "files": [
                        {
                            "stream": "orders",
                            "path": str(REPO / "demo" / "orders.csv"),
                            "key_properties": ["id"],
                        }
                    ]
                },
            }
        ],
        [
            {
                "name": "target-jsonl",
                "executable": str(target_jsonl),
                "config": {"destination_path": str(out), "do_timestamp_file": False},
            }
        ],
    )
    done = dativo_run(project, "tap-dativo-csv", "target-jsonl", "--json")
    summary = json.loads(done.stdout)
    lines = (out / "orders.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5]
    assert records[2]["customer"] == "Edsger, W. Dijkstra"
    assert records[3]["amount"] is None
    # The state recorded is the one target-jsonl printed after writing.
    assert summary["state"]["bookmarks"]["orders"]["replication_key"] == "_sdc_modified_at"


def test_shell_pipe_into_target_jsonl(tmp_path: Path, target_jsonl: Path) -> None:
    """Output of tap-dativo-csv is accepted by target-jsonl on a plain pipe."""
    out = tmp_path / "jsonl"
    out.mkdir()
    (tmp_path / "tap.json").write_text(
        json.dumps({"files": [{"stream": "orders", "path": str(REPO / "demo" / "orders.csv")}]})
    )
    (tmp_path / "target.json").write_text(
        json.dumps({"destination_path": str(out), "do_timestamp_file": False})
    )
    tap = Path(sys.executable).parent / "tap-dativo-csv"
    command = (
        f"{tap} --config {tmp_path / 'tap.json'} | "
        f"{target_jsonl} --config {tmp_path / 'target.json'}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((out / "orders.jsonl").read_text().splitlines()) == 5


ENV_TAP = r"""#!/bin/sh
# Reports the variables it was given (names only for the secret's presence).
secret=absent
[ -n "$AWS_SECRET_ACCESS_KEY" ] && secret="$AWS_SECRET_ACCESS_KEY"
echo '{"type": "SCHEMA", "stream": "env", "key_properties": ["name"], "schema": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": ["string", "null"]}}}}'
for pair in "secret=$secret" "token=${TAP_ENVPROBE_TOKEN:-absent}" "meltano=${MELTANO_EXTRACT_TOKEN:-absent}" "home=${HOME:-absent}" "path_set=${PATH:+yes}" "extra=${EXTRA_NAMED:-absent}"; do
  echo "{\"type\": \"RECORD\", \"stream\": \"env\", \"record\": {\"name\": \"${pair%%=*}\", \"value\": \"${pair#*=}\"}}"
done
echo '{"type": "STATE", "value": {"done": true}}'
"""


@pytest.mark.parametrize(
    ("named", "sandbox", "secret", "extra"),
    [
        (None, None, "absent", "absent"),
        ("EXTRA_NAMED", None, "absent", "named"),
        ("AWS_SECRET_ACCESS_KEY,EXTRA_NAMED", None, "parent-secret", "named"),
        ("*", None, "parent-secret", "named"),
        (None, {"level": "off", "env": ["EXTRA_NAMED"]}, "absent", "named"),
    ],
    ids=["default", "one-named", "secret-named", "opt-out", "level-off-mapping"],
)
def test_an_unsandboxed_foreign_tap_gets_a_scrubbed_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    named: str | None,
    sandbox: dict | None,
    secret: str,
    extra: str,
) -> None:
    """PATH, LANG, HOME, TMPDIR, its own settings' variables (Meltano's
    TAP_<NAME>_* and MELTANO_*) and what is named; never the parent's other secrets."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    monkeypatch.setenv("TAP_ENVPROBE_TOKEN", "tap-token")
    monkeypatch.setenv("MELTANO_EXTRACT_TOKEN", "meltano-token")
    monkeypatch.setenv("EXTRA_NAMED", "named")
    if named is not None:
        monkeypatch.setenv("DATIVO_PLUGIN_ENV", named)
    tap = tmp_path / "tap-envprobe.sh"
    tap.write_text(ENV_TAP)
    tap.chmod(0o755)
    extractor: dict = {"name": "tap-envprobe", "executable": str(tap)}
    if sandbox is not None:
        extractor["sandbox"] = sandbox
    out = tmp_path / "out"
    project = write_project(
        tmp_path, [extractor], [{"name": "target-dativo-parquet", "config": {"path": str(out)}}]
    )
    done = dativo_run(project, "tap-envprobe", "target-dativo-parquet")
    seen = {r["name"]: r["value"] for r in read_parquet_dir(out / "env").to_pylist()}
    assert seen == {
        "secret": secret,
        "token": "tap-token",
        "meltano": "meltano-token",
        "home": os.environ["HOME"],
        "path_set": "yes",
        "extra": extra,
    }
    assert "parent-secret" not in done.stderr
