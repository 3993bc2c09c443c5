"""`dativo run` validates and defaults each plugin's settings from meltano.yml: a malformed
setting is one error line (plugin, setting, what was expected; never a secret value), and
a target's checkpoint settings are used unless --checkpoint-rows is given."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.e2e.helpers import dativo_run, write_project


def _csv(directory: Path, name: str, ids: range, mtime: int) -> None:
    path = directory / name
    path.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in ids))
    os.utime(path, (mtime, mtime))


def _project(tmp_path: Path, tap_config: dict[str, Any], **target_config: Any) -> Path:
    return write_project(
        tmp_path,
        [{"name": "tap-dativo-csv", "executable": "tap-dativo-csv", "config": tap_config}],
        [
            {
                "name": "target-dativo-parquet",
                "executable": "target-dativo-parquet",
                "config": {"path": str(tmp_path / "out"), **target_config},
            }
        ],
    )


def _error_lines(stderr: str) -> list[str]:
    # Warnings (such as meltano.yml's missing capabilities) are not error lines.
    return [line for line in stderr.splitlines() if line.strip() and " WARNING " not in line]


def test_a_malformed_setting_is_one_config_error_line(tmp_path: Path) -> None:
    project = _project(tmp_path, {"files": "a.csv"})
    done = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    assert _error_lines(done.stderr) == [
        "error: tap-dativo-csv: setting 'files': expected a list, got a string"
    ]


def test_a_malformed_target_setting_names_the_target(tmp_path: Path) -> None:
    _csv(tmp_path, "a.csv", range(3), 1_600_000_000)
    files = [{"stream": "s", "path": str(tmp_path / "a.csv")}]
    project = _project(tmp_path, {"files": files}, checkpoint_rows="many")
    done = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    assert _error_lines(done.stderr)[-1] == (
        "error: target-dativo-parquet: setting 'checkpoint_rows': expected an integer, got a string"
    )
    assert "Traceback" not in done.stderr


def test_a_malformed_secret_is_named_but_not_shown(tmp_path: Path) -> None:
    secret = "tok-4f9a1c0b7e2d"
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-dativo-rest",
                "executable": "tap-dativo-rest",
                "config": {
                    "api_url": "http://127.0.0.1:9",
                    "streams": [{"name": "s", "path": "/s"}],
                    "auth": {"type": "bearer", "token": secret, "in": secret},
                },
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}],
    )
    done = dativo_run(project, "tap-dativo-rest", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    lines = _error_lines(done.stderr)
    assert lines == ["error: tap-dativo-rest: setting 'auth.in': expected one of 'header', 'query'"]
    assert secret not in done.stderr + done.stdout


def _files_written(tmp_path: Path, *args: str, **target_config: Any) -> int:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    _csv(data, "a.csv", range(0, 5), 1_600_000_000)
    _csv(data, "b.csv", range(5, 10), 1_600_000_100)  # a later mtime: a second STATE
    files = [{"stream": "s", "path": str(data / "*.csv"), "key_properties": ["id"]}]
    project = _project(tmp_path, {"files": files}, **target_config)
    done = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet", "--json", *args)
    summary = json.loads(done.stdout)
    assert summary["rows"] == 10
    return len(summary["streams"]["s"]["files"])


def test_the_targets_checkpoint_rows_from_meltano_yml_is_used(tmp_path: Path) -> None:
    # checkpoint_rows 1: a commit (one more file) at each of the two STATEs.
    assert _files_written(tmp_path / "one", checkpoint_rows=1) == 2
    # The default (1,000,000): one commit, at the end.
    assert _files_written(tmp_path / "default") == 1


def test_the_checkpoint_rows_flag_wins_over_the_setting(tmp_path: Path) -> None:
    assert _files_written(tmp_path, "--checkpoint-rows", "1000", checkpoint_rows=1) == 1
