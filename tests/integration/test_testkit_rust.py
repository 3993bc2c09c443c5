"""``dativo init reader NAME --rust``: a reader project whose hot path is a PyO3 extension
module built by maturin. Generated, ``pip install -e .`` into a fresh venv (compiling the
crate: slow, but included; the time limit keeps it under 3 minutes), its console script
answers, and its own tests pass (pytest: the conformance suite among them; cargo test: the
parsing without Python); then a bookmark bug planted in the Rust code and rebuilt makes
both fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dativo_bridge.errors import ConfigError
from dativo_bridge.testkit.scaffold import create_project, init

from .test_testkit_scaffold import dev_venv

pytest.importorskip("copier")

REPO = Path(__file__).resolve().parents[2]
#: Cargo's build output, kept between runs (the first one compiles pyo3).
CARGO_TARGET = REPO / ".dativo" / "test-cargo-target" / "rust-reader"


def _pyo3_cached() -> bool:
    registry = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry" / "cache"
    return any(registry.glob("*/pyo3-0.30.*.crate"))


def _run(args: list[str], cwd: Path, timeout: float = 170) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CARGO_TARGET_DIR"] = str(CARGO_TARGET)
    env["CARGO_BUILD_JOBS"] = "2"
    env["PYO3_PYTHON"] = sys.executable  # cargo test links this Python
    if _pyo3_cached():
        env["CARGO_NET_OFFLINE"] = "true"  # everything the crate needs is on this machine
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs a Rust toolchain (cargo)")
def test_a_rust_reader_project_builds_and_passes_its_own_tests(tmp_path: Path) -> None:
    project = tmp_path / "tap-weather"
    result = CliRunner().invoke(init, ["reader", "weather", "--rust", "--dest", str(project)])
    assert result.exit_code == 0, result.output
    assert "needs cargo" in result.output
    pyproject = (project / "pyproject.toml").read_text()
    assert 'build-backend = "maturin"' in pyproject
    assert 'module-name = "tap_weather._native"' in pyproject
    assert "pyo3" in (project / "Cargo.toml").read_text()
    assert (
        "from tap_weather._native import parse_items"
        in (project / "tap_weather" / "reader.py").read_text()
    )
    assert "rust: true" in (project / ".copier-answers.yml").read_text()

    python = dev_venv(tmp_path / "venv")
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(project)]
    done = _run(install, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert list((project / "tap_weather").glob("_native*.so")), "the extension was not built"

    about = _run([str(python.parent / "tap-weather"), "--about", "--format", "json"], tmp_path)
    assert '"batch_rows"' in about.stdout, about.stderr
    tests = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    done = _run(tests, project)
    assert "4 passed" in done.stdout, done.stdout + done.stderr
    cargo_test = ["cargo", "test", "--release", "--lib"]
    done = _run(cargo_test, project)
    assert "test result: ok. 2 passed" in done.stdout, done.stdout + done.stderr[-3000:]

    # The tests go through the Rust code: resume after the bookmark instead of at it.
    source = project / "src" / "lib.rs"
    text = source.read_text()
    assert "micros < bookmark" in text
    source.write_text(text.replace("micros < bookmark", "micros <= bookmark"))
    done = _run(install, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    done = _run(tests, project)
    assert "2 failed, 2 passed" in done.stdout, done.stdout + done.stderr
    assert "FAILED  reader.resume" in done.stdout
    assert "test_lines_become_columns_from_the_bookmark_on" in done.stdout
    done = _run(cargo_test, project)
    assert "test tests::rows_at_or_after_the_bookmark_are_kept ... FAILED" in done.stdout, (
        done.stdout
    )


def test_rust_is_for_readers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--rust is for readers"):
        create_project("writer", "lake", tmp_path / "x", rust=True)
    result = CliRunner().invoke(init, ["writer", "lake", "--rust", "--dest", str(tmp_path / "y")])
    assert result.exit_code == 1
    assert not (tmp_path / "y").exists()
