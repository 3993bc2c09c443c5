"""`dativo run` errors a person can act on, its output off a terminal, progress and logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from rich.console import Console

from dativo_bridge.cli import ConsoleHandler, landing_folders, setup_logging

from .helpers import dativo_run, write_project

PLUGINS = Path(__file__).parent / "plugins"


def _project(tmp_path: Path, target_config: dict, total: int = 4_000, pause: float = 0.0) -> Path:
    shutil.copytree(PLUGINS, tmp_path / "plugins", dirs_exist_ok=True)
    return write_project(
        tmp_path,
        [
            {
                "name": "tap-slow",
                "config": {
                    "reader_class": "e2e_readers:SlowCounterReader",
                    "plugin_dirs": ["plugins"],
                    "total": total,
                    "batch_rows": 1_000,
                    "pause": pause,
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": target_config}],
    )


def test_destination_path_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    project = _project(tmp_path, {"path": str(blocker / "out")})
    done = dativo_run(project, "tap-slow", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = errors[0]
    assert "plugin 'target-dativo-parquet'" in line
    assert "setting 'path'" in line
    assert str(blocker) in line
    debug = dativo_run(
        project, "tap-slow", "target-dativo-parquet", "--log-level", "debug", check=False
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_unknown_plugin_lists_the_defined_ones_and_suggests_the_closest(tmp_path: Path) -> None:
    project = _project(tmp_path, {"path": str(tmp_path / "out")})
    done = dativo_run(project, "tap-slwo", "target-dativo-parquet", check=False)
    assert done.returncode == 2, done.stderr
    assert "did you mean 'tap-slow'?" in done.stderr
    assert "loaders: target-dativo-parquet" in done.stderr


def test_setting_from_an_unset_variable_names_the_setting_and_the_variable(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, {"path": "$DATIVO_TEST_SURELY_UNSET_OUT"})
    done = dativo_run(project, "tap-slow", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    assert "setting 'path'" in done.stderr
    assert "$DATIVO_TEST_SURELY_UNSET_OUT" in done.stderr
    assert "is not set" in done.stderr
    assert ".env" in done.stderr
    assert not (tmp_path / "out").exists()


def test_summary_off_a_terminal_does_not_wrap_and_names_memory(tmp_path: Path) -> None:
    out = tmp_path / ("a-rather-long-folder-name-" * 5) / "out"
    project = _project(tmp_path, {"path": str(out)})
    done = dativo_run(project, "tap-slow", "target-dativo-parquet")
    lines = done.stdout.splitlines()
    header = next(line for line in lines if "stream" in line and "rows" in line)
    assert "memory" in header and "on disk" in header and "bytes" not in header
    assert any(line.strip() == str(out.resolve() / "counter") for line in lines) or any(
        str(out.resolve()) in line for line in lines
    ), done.stdout
    state_line = next(line for line in lines if line.startswith("State saved"))
    assert state_line.endswith(".json"), state_line


def test_landing_folders_of_file_uris_are_not_doubled() -> None:
    assert landing_folders(["file:/tmp/wh/db/t/data/x.parquet"]) == ["/tmp/wh/db/t/data"]
    assert landing_folders(["file:///tmp/wh/y.parquet"]) == ["/tmp/wh"]
    assert landing_folders(["s3://bucket/t/data/z.parquet"]) == ["s3://bucket/t/data"]


def test_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    project = _project(tmp_path, {"path": str(tmp_path / "out")}, total=10_000, pause=0.15)
    done = dativo_run(project, "tap-slow", "target-dativo-parquet", "--progress-interval", "0.3")
    progress = [line for line in done.stderr.splitlines() if "progress:" in line]
    assert len(progress) >= 2, done.stderr
    assert "rows/s" in progress[0] and "memory" in progress[0] and "elapsed" in progress[0]


def test_log_format_json_is_one_object_per_line(tmp_path: Path) -> None:
    project = _project(tmp_path, {"path": str(tmp_path / "out")})
    done = dativo_run(
        project,
        "tap-slow",
        "target-dativo-parquet",
        "--log-format",
        "json",
        "--progress-interval",
        "0.01",
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("running tap-slow") for r in records)


def test_log_lines_on_a_terminal_go_through_the_live_console() -> None:
    console = Console(force_terminal=True, width=100)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        handler = setup_logging("INFO", "text", console)
        assert isinstance(handler, ConsoleHandler) and handler.console is console
        off = setup_logging("INFO", "text", Console(force_terminal=False))
        assert not isinstance(off, ConsoleHandler)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_foreign_to_foreign_summary_says_what_is_known(tmp_path: Path) -> None:
    tap = tmp_path / "tap-one.sh"
    tap.write_text(
        "#!/bin/sh\n"
        """echo '{"type": "SCHEMA", "stream": "s", "key_properties": [], """
        """"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}'\n"""
        """echo '{"type": "RECORD", "stream": "s", "record": {"id": 1}}'\n"""
    )
    target = tmp_path / "target-null.sh"
    target.write_text("#!/bin/sh\ncat > /dev/null\n")
    for path in (tap, target):
        path.chmod(0o755)
    project = write_project(
        tmp_path,
        [{"name": "tap-one", "executable": str(tap)}],
        [{"name": "target-null", "executable": str(target)}],
    )
    done = dativo_run(project, "tap-one", "target-null")
    assert "no per-stream counts" in done.stdout, done.stdout
    assert "rows/s" not in done.stdout  # no empty table
