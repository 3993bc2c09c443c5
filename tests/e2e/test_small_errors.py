"""Small errors a person can act on (issue 17): a target fed by a failed tap says so, a
plugin file shadowed by the standard library is named, a bad key file never draws a
suggestion that would overwrite an existing file, and a first Iceberg overwrite is quiet."""

from __future__ import annotations

import io
import json
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from dativo_bridge import ArrowReader
from dativo_bridge.errors import PluginLoadError
from dativo_bridge.loading import load_class

from .helpers import env, script

NO_INPUT = "received no records and no STATE"


def _target(tmp_path: Path, stdin_command: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "target.json").write_text(json.dumps({"path": str(tmp_path / "out")}))
    return subprocess.run(
        f"{stdin_command} | {script('target-dativo-parquet')} --config target.json",
        shell=True,
        executable="/bin/bash",
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_target_fed_by_a_failed_tap_says_it_received_nothing(tmp_path: Path) -> None:
    done = _target(tmp_path, "{ echo 'tap: cannot connect' >&2; false; }")
    assert done.returncode == 0  # no pipefail: the pipe's status is the target's
    assert NO_INPUT in done.stderr
    assert "set -o pipefail" in done.stderr


def test_a_target_that_received_records_does_not_warn(tmp_path: Path) -> None:
    lines = [
        {
            "type": "SCHEMA",
            "stream": "s",
            "key_properties": [],
            "schema": {"properties": {"id": {"type": "integer"}}},
        },
        {"type": "STATE", "value": {"bookmarks": {}}},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    done = _target(tmp_path, "cat in.jsonl")
    assert done.returncode == 0, done.stderr
    assert NO_INPUT not in done.stderr


def test_a_plugin_file_shadowed_by_the_standard_library_is_named(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "numbers.py").write_text(
        "from dativo_bridge import ArrowReader\nclass NumbersReader(ArrowReader):\n    pass\n"
    )
    with pytest.raises(PluginLoadError) as caught:
        load_class(
            "numbers:NumbersReader", ArrowReader, allowed_dirs=["plugins"], project_dir=tmp_path
        )
    message = str(caught.value)
    assert "numbers.py" in message and "Rename" in message
    assert "not a subclass" not in message


def test_a_plugin_module_with_a_free_name_still_loads(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "dativo_test_free_name.py").write_text("X = 1\n")
    with pytest.raises(PluginLoadError, match="not a subclass"):
        load_class(
            "dativo_test_free_name:X", ArrowReader, allowed_dirs=["plugins"], project_dir=tmp_path
        )


def test_a_wrong_key_file_never_suggests_overwriting_a_file(tmp_path: Path) -> None:
    (tmp_path / "dcsv.json").write_text('{"path": "out"}')
    (tmp_path / "dativo.key").write_bytes(b"short")  # the first suggested name is taken too
    (tmp_path / "data.enc").write_bytes(b"x" * 64)
    done = subprocess.run(
        [script("dativo"), "decrypt", "data.enc", "--key-file", "dcsv.json"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "holds 15 bytes" in done.stderr
    targets = re.findall(r">\s*([^\s)]+)", done.stderr)
    assert targets, done.stderr
    for target in targets:
        assert not (tmp_path / target).exists(), f"suggests writing over {target}"
    assert "set -C" in done.stderr  # and the shell refuses, should the file appear meanwhile


def test_a_first_overwrite_into_an_empty_iceberg_table_shows_no_library_warning(
    tmp_path: Path,
) -> None:
    from target_dativo_iceberg.target import TargetDativoIceberg

    schema = {
        "type": "SCHEMA",
        "stream": "users",
        "key_properties": ["id"],
        "schema": {"properties": {"id": {"type": "integer"}}},
    }
    record = {"type": "RECORD", "stream": "users", "record": {"id": 1}}
    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    for messages in ([schema], [schema, record], [schema, record]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            TargetDativoIceberg(config=config).listen(
                io.StringIO("".join(json.dumps(m) + "\n" for m in messages))
            )
        assert [str(w.message) for w in seen if "pyiceberg" in w.filename] == []
