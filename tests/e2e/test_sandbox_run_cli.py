"""`dativo run` applies a foreign plugin's ``sandbox:`` mapping from meltano.yml (the probe
tap of tests/integration/sandbox_singer_tap.py, run as an executable with a shebang)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import REPO, dativo_run, write_project

PROBE = REPO / "tests" / "integration" / "sandbox_singer_tap.py"


def _results(out: Path) -> dict[str, str]:
    files = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    return {row["check"]: row["result"] for row in rows}


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ({"memory_mb": 256}, {"file": "DENIED 13", "env": "absent", "held": "0"}),
        (
            None,
            # Not sandboxed: files are readable, the environment is still scrubbed.
            {"file": "OK aws_secret_access_key = from-home", "env": "absent", "held": "0"},
        ),
    ],
    ids=["sandboxed", "not-sandboxed"],
)
def test_dativo_run_applies_a_plugins_sandbox_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: dict | None, expected: dict
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    credentials = tmp_path / "home" / ".aws" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text("aws_secret_access_key = from-home\n")
    tap = tmp_path / "tap-probe"
    tap.write_text(f"#!{sys.executable}\n" + PROBE.read_text())
    tap.chmod(0o755)
    extractor: dict = {
        "name": "tap-probe",
        "executable": str(tap),
        "config": {"probe_path": str(credentials)},
    }
    if sandbox is not None:
        extractor["sandbox"] = sandbox
    out = tmp_path / "out"
    project = write_project(
        tmp_path, [extractor], [{"name": "target-dativo-parquet", "config": {"path": str(out)}}]
    )
    dativo_run(project, "tap-probe", "target-dativo-parquet")
    assert _results(out) == expected


def test_a_malformed_sandbox_mapping_on_an_in_process_plugin_is_refused(tmp_path: Path) -> None:
    """In-process code with a sandbox: mapping runs out of process under it
    (tests/e2e/test_sandbox_classes.py); a malformed mapping is refused, never ignored."""
    out = tmp_path / "out"
    project = write_project(
        tmp_path,
        [{"name": "tap-dativo-csv", "config": {"files": []}, "sandbox": {"memroy_mb": 256}}],
        [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
    )
    done = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    assert "error: plugin 'tap-dativo-csv': sandbox: unknown key 'memroy_mb'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
