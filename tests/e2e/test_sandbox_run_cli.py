"""`dativo run` applies a foreign plugin's ``sandbox:`` mapping from meltano.yml (the probe
tap of tests/integration/sandbox_singer_tap.py, run as an executable with a shebang)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dativo_bridge.project import PluginDef

from .helpers import REPO, dativo_run, write_project

PROBE = REPO / "tests" / "integration" / "sandbox_singer_tap.py"

pytestmark = pytest.mark.skipif(
    "sandbox" not in {f.name for f in dataclasses.fields(PluginDef)},
    reason="meltano.yml's sandbox: is not wired into dativo run yet "
    "(PluginDef.sandbox in dativo_bridge/project.py, sandbox= in cli.py's ForeignTap)",
)


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
            {"file": "OK aws_secret_access_key = from-home", "env": "parent-secret", "held": "0"},
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
