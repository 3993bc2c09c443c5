"""A foreign plugin's ``sandbox:`` policy applied by the runner (``ForeignPlugin.sandbox``):
the plugin gets its in-memory config but not the caller's files or environment, a breach
fails the run naming the limit, and every start is logged with the executable's sha256 and
the policy (the audit line)."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dativo_bridge import run
from dativo_bridge.errors import ConfigError, PluginFailedError
from dativo_bridge.foreign import ForeignTap
from dativo_bridge.sandbox.plugins import sandbox_options
from target_dativo_parquet.writer import ParquetWriter

PROBE = str(Path(__file__).with_name("sandbox_singer_tap.py"))


def _probe_tap(tmp_path: Path, sandbox: dict | None, **config: object) -> ForeignTap:
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("aws_secret_access_key = from-home\n")
    return ForeignTap(
        name="tap-probe",
        command=[sys.executable, PROBE],
        config={"probe_path": str(secret), **config},
        sandbox=sandbox,
    )


def _results(out: Path) -> dict[str, str]:
    files = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    return {row["check"]: row["result"] for row in rows}


def test_a_sandboxed_tap_gets_its_config_but_not_the_callers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    caplog.set_level(logging.INFO, logger="dativo.audit")
    out = tmp_path / "out"
    tap = _probe_tap(tmp_path, {"memory_mb": 512, "level": "best-effort"})
    result = run(tap, ParquetWriter, destination_config={"path": str(out)})
    assert result.state == {"done": True}
    assert _results(out) == {"file": "DENIED 13", "env": "absent", "held": "0"}
    audits = [r.getMessage() for r in caplog.records if r.name == "dativo.audit"]
    digest = hashlib.sha256(Path(sys.executable).resolve().read_bytes()).hexdigest()
    assert audits == [
        f"audit: tap-probe starts {sys.executable} sha256={digest} "
        "sandbox: level=best-effort network=off memory_mb=512"
    ]


def test_without_a_policy_the_same_tap_reads_them_and_the_audit_says_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    caplog.set_level(logging.INFO, logger="dativo.audit")
    out = tmp_path / "out"
    run(_probe_tap(tmp_path, None), ParquetWriter, destination_config={"path": str(out)})
    results = _results(out)
    assert results["file"] == "OK aws_secret_access_key = from-home"
    # Not confined, but its environment is scrubbed (docs/sandbox.md) unless opted out.
    assert results["env"] == "absent"
    audits = [r.getMessage() for r in caplog.records if r.name == "dativo.audit"]
    assert len(audits) == 1 and audits[0].endswith("sandbox: none")
    monkeypatch.setenv("DATIVO_PLUGIN_ENV", "*")
    opted_out = tmp_path / "opted-out"
    run(_probe_tap(tmp_path, None), ParquetWriter, destination_config={"path": str(opted_out)})
    assert _results(opted_out)["env"] == "parent-secret"


def test_a_policy_can_grant_a_file_and_a_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-secret")
    out = tmp_path / "out"
    policy = {"readable": [str(tmp_path / "home" / ".aws")], "env": ["AWS_SECRET_ACCESS_KEY"]}
    run(_probe_tap(tmp_path, policy), ParquetWriter, destination_config={"path": str(out)})
    results = _results(out)
    assert results["file"] == "OK aws_secret_access_key = from-home"
    assert results["env"] == "parent-secret"


def test_a_breach_fails_the_run_naming_the_plugin_and_the_limit(tmp_path: Path) -> None:
    tap = _probe_tap(tmp_path, {"memory_mb": 64}, allocate_mb=1000)
    with pytest.raises(PluginFailedError) as failed:
        run(tap, ParquetWriter, destination_config={"path": str(tmp_path / "out")})
    assert "sandbox: tap-probe exceeded its memory limit of 64 MB" in str(failed.value)
    assert "124" in str(failed.value)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"memroy_mb": 64}, "unknown key 'memroy_mb'"),
        ({"memory_mb": "lots"}, "memory_mb must be a positive number"),
        ({"cpu_seconds": 1.5}, "cpu_seconds must be a whole number"),
        ({"network": "yes"}, "network must be true or false"),
        ({"level": "paranoid"}, "level must be one of strict, best-effort, off"),
        ({"readable": [1]}, "readable must be a list of strings"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_the_plugin(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"plugin 'tap-x': sandbox: {message}"):
        sandbox_options("tap-x", mapping, None)


def test_relative_paths_in_a_policy_are_the_projects() -> None:
    options = sandbox_options("tap-x", {"readable": ["data"], "writable": "out"}, "/proj")
    assert options[options.index("--readable") + 1] == "/proj/data"
    assert options[options.index("--writable") + 1] == "/proj/out"
