"""A user's ArrowReader/ArrowWriter named as `module:Class` works on a shell pipe through
tap-dativo-custom / target-dativo-custom, and in process through `dativo run`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .helpers import dativo_run, env, pipe, read_parquet_dir, script, states_in, write_project

PLUGINS = Path(__file__).parent / "plugins"


def test_user_reader_on_a_shell_pipe_and_in_process(tmp_path: Path) -> None:
    shutil.copytree(PLUGINS, tmp_path / "plugins")
    reader = {
        "reader_class": "e2e_readers:SlowCounterReader",
        "plugin_dirs": ["plugins"],
        "total": 1234,
        "batch_rows": 100,
    }
    (tmp_path / "tap.json").write_text(json.dumps(reader))
    (tmp_path / "target.json").write_text(
        json.dumps(
            {
                "writer_class": "target_dativo_parquet.writer:ParquetWriter",
                "path": str(tmp_path / "pipe"),
            }
        )
    )
    command = (
        f"{script('tap-dativo-custom')} --config tap.json | "
        f"{script('target-dativo-custom')} --config target.json"
    )
    done = pipe(command, tmp_path, timeout=120)
    assert "loaded e2e_readers:SlowCounterReader" in done.stderr
    assert states_in(done.stdout)[-1]["bookmarks"]["counter"]["replication_key_value"] == 1234

    project = write_project(
        tmp_path,
        [{"name": "tap-counter", "config": reader}],
        [{"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "bridge")}}],
    )
    dativo_run(project, "tap-counter", "target-dativo-parquet")
    piped = read_parquet_dir(tmp_path / "pipe" / "counter").sort_by("id")
    bridged = read_parquet_dir(tmp_path / "bridge" / "counter").sort_by("id")
    assert piped.num_rows == 1234
    assert piped.equals(bridged)


def test_reader_outside_allowed_dirs_is_refused(tmp_path: Path) -> None:
    shutil.copytree(PLUGINS, tmp_path / "plugins")
    (tmp_path / "tap.json").write_text(
        json.dumps({"reader_class": "e2e_readers:SlowCounterReader", "total": 1, "batch_rows": 1})
    )
    done = subprocess.run(
        [script("tap-dativo-custom"), "--config", "tap.json"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "not installed and not in the allowed plugin directories" in done.stderr
