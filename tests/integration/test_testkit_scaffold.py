"""``dativo init reader|writer NAME``: the generated projects install with ``pip install -e .``
into a fresh venv (that sees this interpreter's packages: dativo, pyarrow, pytest), register their entry points and console
scripts, and pass their own tests, which run the conformance suite (and fail when the
generated reader is broken)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from dativo_bridge.errors import ConfigError
from dativo_bridge.testkit.scaffold import create_project, init

pytest.importorskip("copier")


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def dev_venv(path: Path) -> Path:
    """A fresh venv (its own pip) that also sees the packages of the interpreter running
    the tests, through a .pth file (``--system-site-packages`` would give the base
    interpreter's, which need not hold dativo). Returns its python."""
    done = _run([sys.executable, "-m", "venv", str(path)], path.parent)
    assert done.returncode == 0, done.stderr
    python = path / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        path.parent,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "_dativo_tests.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def test_generated_projects_install_and_pass_their_own_tests(tmp_path: Path) -> None:
    reader, writer = tmp_path / "tap-weather", tmp_path / "target-lake"
    result = CliRunner().invoke(init, ["reader", "weather", "--dest", str(reader)])
    assert result.exit_code == 0, result.output
    assert "created tap-weather" in result.output
    create_project("writer", "target-lake", writer)
    for project, package in ((reader, "tap_weather"), (writer, "target_lake")):
        for part in ("pyproject.toml", "meltano.yml", "README.md", ".copier-answers.yml"):
            assert (project / part).is_file(), part
        assert (project / package / "__init__.py").is_file()
    assert "| `api_key` | string (secret) |" in (reader / "README.md").read_text()

    python = dev_venv(tmp_path / "venv")
    bin_dir = python.parent
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(reader)]
    done = _run([*pip, "-e", str(writer)], tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    plugins = _run(
        [
            str(python),
            "-c",
            "from importlib.metadata import entry_points as e; "
            "print(sorted(p.value for p in e(group='dativo.plugins')))",
        ],
        tmp_path,
    )
    assert "tap_weather.reader:WeatherReader" in plugins.stdout
    assert "target_lake.writer:LakeWriter" in plugins.stdout
    about = _run([str(bin_dir / "tap-weather"), "--about", "--format", "json"], tmp_path)
    assert '"api_key"' in about.stdout, about.stderr
    about = _run([str(bin_dir / "target-lake"), "--about"], tmp_path)
    assert about.returncode == 0, about.stderr

    for project in (reader, writer):
        done = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
        assert "2 passed" in done.stdout, done.stdout + done.stderr

    # The generated tests mean something: a reader that resumes after the bookmark fails.
    source = reader / "tap_weather" / "reader.py"
    text = source.read_text()
    assert 'r["updated_at"] >= since' in text
    source.write_text(text.replace('r["updated_at"] >= since', 'r["updated_at"] > since'))
    done = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], reader)
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "FAILED  reader.resume" in done.stdout


def test_bad_names_and_busy_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lower-case letters"):
        create_project("reader", "Weather Station", tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        create_project("writer", "lake", busy)
    result = CliRunner().invoke(init, ["writer", "lake", "--dest", str(busy)])
    assert result.exit_code == 1
    assert "not empty" in result.output
    assert (busy / "file").read_text() == "mine"
