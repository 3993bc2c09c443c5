"""The suite from the command line (``test-plugin``: the author's module loaded from the
current directory or PYTHONPATH with the loader's origin checks and sha256 line) and as a
pytest plugin (the ``pytest11`` entry point's fixtures, in an author's own test run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from dativo_bridge.testkit.cli import test_plugin as command

PLUGINS = """
from typing import Any
import pyarrow as pa
import pyarrow.parquet as pq
from dativo_bridge import ArrowReader, ArrowWriter, CommitResult, StreamInfo

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("k", pa.int64())])
ROWS = [{"id": i, "k": i // 3} for i in range(30)]


class GoodReader(ArrowReader):
    name = "tap-good"
    is_sorted = True

    def discover(self):
        return [StreamInfo("items", SCHEMA, ("id",), "k", "INCREMENTAL")]

    def rows(self, bookmark: Any):
        return [r for r in ROWS if bookmark is None or r["k"] >= int(bookmark)]

    def read(self, stream, bookmark):
        rows = self.rows(bookmark)
        for i in range(0, len(rows), 4):
            yield pa.RecordBatch.from_pylist(rows[i : i + 4], schema=stream.schema)


class IgnoresBookmark(GoodReader):
    def rows(self, bookmark: Any):
        return list(ROWS)


class AppendWriter(ArrowWriter):
    name = "target-append"
    config_jsonschema = {"type": "object", "properties": {"path": {"type": "string"}}}

    def open(self, config, stream):
        super().open(config, stream)
        self.batches, self.n = [], 0

    def write(self, batch):
        self.batches.append(batch)

    def commit(self):
        import os, uuid
        folder = os.path.join(self.config["path"], self.stream.name)
        os.makedirs(folder, exist_ok=True)
        result = CommitResult()
        for batch in self.batches:
            path = os.path.join(folder, uuid.uuid4().hex + ".parquet")
            pq.write_table(pa.Table.from_batches([batch]), path)
            result.paths.append(path)
            result.rows += batch.num_rows
        self.batches = []
        return result
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A directory holding the author's module (a fresh name: no import cache), as cwd."""
    module = f"my_plugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PLUGINS)
    (tmp_path / "reader.json").write_text("{}")
    (tmp_path / "writer.json").write_text(json.dumps({"path": str(tmp_path / "out")}))
    monkeypatch.chdir(tmp_path)
    return tmp_path, module


def test_a_reader_from_the_current_directory_passes(project: tuple[Path, str]) -> None:
    root, module = project
    result = CliRunner().invoke(command, [f"{module}:GoodReader", "--config", "reader.json"])
    assert result.exit_code == 0, result.output
    assert "PASSED  reader.resume" in result.stdout
    assert f"loaded {module}:GoodReader from {root / (module + '.py')} (sha256 " in result.stderr


def test_a_broken_reader_fails_with_exit_1(project: tuple[Path, str]) -> None:
    _, module = project
    args = [f"{module}:IgnoresBookmark", "--config", "reader.json", "--json"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert not report["ok"]
    failed = [c["name"] for c in report["checks"] if c["status"] == "failed"]
    assert failed == ["reader.resume"]


def test_a_writer_is_told_apart_and_checked(project: tuple[Path, str]) -> None:
    _, module = project
    result = CliRunner().invoke(command, [f"{module}:AppendWriter", "--config", "writer.json"])
    # It keeps batches in memory until commit: every check passes, the types check
    # reading its Parquet files back.
    assert result.exit_code == 0, result.output
    assert "PASSED  writer.types" in result.stdout


def test_a_module_from_pythonpath_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: tuple[Path, str]
) -> None:
    root, module = project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PYTHONPATH", str(root))
    args = [f"{module}:GoodReader", "--config", str(root / "reader.json")]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output


def test_the_loaders_origin_check_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: tuple[Path, str]
) -> None:
    """A module file that is a symlink out of its directory is refused before it runs."""
    root, _ = project
    outside = tmp_path.parent / f"outside-{uuid.uuid4().hex[:6]}"
    outside.mkdir()
    (outside / "evil.py").write_text("raise SystemExit('evil ran')\n")
    link = f"linked_{uuid.uuid4().hex[:8]}"
    (root / f"{link}.py").symlink_to(outside / "evil.py")
    result = CliRunner().invoke(command, [f"{link}:GoodReader", "--config", "reader.json"])
    assert result.exit_code == 2, result.output
    assert "refused before anything is imported" in result.stderr
    assert "evil ran" not in result.output


def test_an_unknown_module_is_exit_2(project: tuple[Path, str]) -> None:
    result = CliRunner().invoke(command, ["no_such_module_xyz:Reader", "--config", "reader.json"])
    assert result.exit_code == 2
    assert "no_such_module_xyz" in result.stderr


def test_python_m_runs_the_command(project: tuple[Path, str]) -> None:
    root, module = project
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dativo_bridge.testkit", "test-plugin"),
            *(f"{module}:GoodReader", "--config", "reader.json", "--skip", "reader.close"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED reader.close: skipped on request" in done.stdout


def test_the_pytest_plugin_fixtures_in_an_authors_tests(project: tuple[Path, str]) -> None:
    root, module = project
    (root / "test_mine.py").write_text(
        f"from {module} import AppendWriter, GoodReader, IgnoresBookmark\n\n"
        "def test_good(dativo_check_reader):\n"
        "    report = dativo_check_reader(GoodReader, {})\n"
        "    assert report.ok\n\n"
        "def test_broken(dativo_check_reader):\n"
        "    dativo_check_reader(IgnoresBookmark, {})\n\n"
        "def test_writer(dativo_check_writer, tmp_path):\n"
        "    dativo_check_writer(AppendWriter, {'path': str(tmp_path)})\n"
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("test_mine.py", "--dativo-budget", "30"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert "1 failed, 2 passed" in done.stdout, done.stdout + done.stderr
    assert "FAILED  reader.resume" in done.stdout
    assert "test_mine.py::test_broken" in done.stdout


def test_an_installed_plugin_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "target.json").write_text(json.dumps({"path": str(tmp_path / "lake")}))
    args = ["target_dativo_parquet.writer:ParquetWriter", "--config", "target.json"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert "6 passed, 0 failed, 0 skipped" in result.stdout
    assert "loaded target_dativo_parquet.writer:ParquetWriter from " in result.stderr
