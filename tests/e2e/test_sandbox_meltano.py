"""`dativo sandbox` as Meltano plugins' ``executable`` wrapper: `meltano run` of a probe
tap (tests/integration/sandbox_singer_tap.py) into target-jsonl from PyPI, both wrapped.
The tap gets the config file Meltano wrote but not the user's ~/.aws/credentials nor the
parent's AWS_SECRET_ACCESS_KEY; a memory breach fails the run with the one line in
Meltano's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import BIN, REPO, peer_venv

PROBE = REPO / "tests" / "integration" / "sandbox_singer_tap.py"


@pytest.fixture(scope="module")
def meltano() -> Path:
    beside = BIN / "meltano"
    if beside.exists() and (BIN / "uv").exists():
        return beside
    return peer_venv("meltano>=4,<5", "meltano", "uv")


def _wrapper(path: Path, options: list[str], command: list[str]) -> Path:
    sandbox = [sys.executable, "-m", "dativo_bridge.sandbox_cli", *options, "--", *command]
    path.write_text("#!/bin/sh\nexec " + " ".join(sandbox) + ' "$@"\n')
    path.chmod(0o755)
    return path


def _project(root: Path, tap_options: list[str], allocate_mb: int = 0) -> Path:
    out = root / "out"
    out.mkdir(exist_ok=True)
    credentials = root / "home" / ".aws" / "credentials"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text("aws_secret_access_key = from-home\n")
    tap = _wrapper(root / "tap-probe", tap_options, [sys.executable, str(PROBE)])
    jsonl = peer_venv("target-jsonl==0.1.4", "target-jsonl")
    target = _wrapper(
        root / "target-jsonl", ["--name", "target-jsonl", "--writable", str(out)], [str(jsonl)]
    )
    project = {
        "default_environment": "dev",
        "environments": [{"name": "dev"}],
        "project_id": "dativo-sandbox-test",
        "plugins": {
            "extractors": [
                {
                    "name": "tap-probe",
                    "namespace": "tap_probe",
                    "executable": str(tap),
                    "settings": [
                        {"name": "probe_path"},
                        {"name": "allocate_mb", "kind": "integer"},
                    ],
                    "config": {"probe_path": str(credentials), "allocate_mb": allocate_mb},
                }
            ],
            "loaders": [
                {
                    "name": "target-jsonl",
                    "namespace": "target_jsonl",
                    "executable": str(target),
                    "settings": [
                        {"name": "destination_path"},
                        {"name": "do_timestamp_file", "kind": "boolean"},
                    ],
                    "config": {"destination_path": str(out), "do_timestamp_file": False},
                }
            ],
        },
    }
    (root / "meltano.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    return out


def _meltano_run(meltano: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    env["AWS_SECRET_ACCESS_KEY"] = "parent-secret"
    env["HOME"] = str(root / "home")
    return subprocess.run(
        [str(meltano), "run", "tap-probe", "target-jsonl"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_meltano_runs_sandboxed_plugins_through_their_executable(
    meltano: Path, tmp_path: Path
) -> None:
    out = _project(tmp_path, ["--name", "tap-probe", "--memory-mb", "256"])
    done = _meltano_run(meltano, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    assert {row["check"]: row["result"] for row in rows} == {
        "file": "DENIED 13",
        "env": "absent",
        "held": "0",
    }


def test_a_breach_under_meltano_fails_the_run_with_one_line(meltano: Path, tmp_path: Path) -> None:
    _project(tmp_path, ["--name", "tap-probe", "--memory-mb", "64"], allocate_mb=1000)
    done = _meltano_run(meltano, tmp_path)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert log.count("sandbox: tap-probe exceeded its memory limit of 64 MB") == 1, log[-3000:]
