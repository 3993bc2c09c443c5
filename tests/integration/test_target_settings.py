"""Every setting and capability a Dativo target's ``--about`` lists works with singer-sdk's
meaning, or is refused at start (issue 16): ``load_method`` takes the SDK's values,
``batch_size_rows`` is ``batch_rows``, and the SDK's stream maps, flattening,
``add_record_metadata`` and ``hard_delete`` are neither advertised nor ignored."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dativo_bridge.errors import ConfigError
from target_dativo_iceberg.target import TargetDativoIceberg
from target_dativo_iceberg.writer import open_catalog
from target_dativo_parquet.target import TargetDativoParquet
from target_dativo_s3.target import TargetDativoS3

TARGETS = [TargetDativoParquet, TargetDativoIceberg, TargetDativoS3]
NOT_HONOURED = ("add_record_metadata", "hard_delete", "stream_maps", "flattening_enabled")

SCHEMA = {
    "type": "SCHEMA",
    "stream": "users",
    "key_properties": ["id"],
    "schema": {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}},
}


def _lines(*ids: int) -> io.StringIO:
    messages: list[dict[str, Any]] = [SCHEMA]
    messages += [
        {"type": "RECORD", "stream": "users", "record": {"id": i, "name": f"n{i}"}} for i in ids
    ]
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def _about(target: type[Any]) -> dict[str, Any]:
    """``--about --format json`` of the installed console script."""
    out = subprocess.run(
        [target.name, "--about", "--format", "json"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_about_lists_only_what_the_target_honours(target: type[Any]) -> None:
    about = _about(target)
    assert "stream-maps" not in about["capabilities"]
    assert "schema-flattening" not in about["capabilities"]
    props = about["settings"]["properties"]
    for key in NOT_HONOURED:
        # target-dativo-iceberg deletes by key under upsert (tests/integration/test_iceberg_cdc.py)
        if not (key == "hard_delete" and target is TargetDativoIceberg):
            assert key not in props
    assert "append-only" in props["load_method"]["enum"]
    assert props["load_method"]["default"] == "append-only"
    assert "batch_size_rows" in props


def _parquet_rows(root: Path) -> list[int]:
    return sorted(pq.read_table(root / "users").column("id").to_pylist())


@pytest.mark.parametrize("method", ["append-only", "append"])
def test_parquet_append_only_and_its_alias_add_files(tmp_path: Path, method: str) -> None:
    config = {"path": str(tmp_path), "load_method": method}
    TargetDativoParquet(config=config).listen(_lines(1, 2))
    TargetDativoParquet(config=config).listen(_lines(3))
    assert _parquet_rows(tmp_path) == [1, 2, 3]


def test_parquet_overwrite_replaces_the_stream(tmp_path: Path) -> None:
    config = {"path": str(tmp_path), "load_method": "overwrite"}
    TargetDativoParquet(config=config).listen(_lines(1, 2))
    TargetDativoParquet(config=config).listen(_lines(3))
    assert _parquet_rows(tmp_path) == [3]


@pytest.mark.parametrize(
    ("target", "config", "method"),
    [
        (TargetDativoParquet, {"path": "/nonexistent"}, "upsert"),
        (TargetDativoS3, {"bucket": "b", "key_env": "X"}, "upsert"),
        (TargetDativoS3, {"bucket": "b", "key_env": "X"}, "overwrite"),
        (TargetDativoIceberg, {"warehouse": "/nonexistent"}, "merge"),
    ],
)
def test_unsupported_load_method_is_refused_at_start(
    target: type[Any], config: dict[str, Any], method: str
) -> None:
    with pytest.raises(ConfigError, match=f"load_method '{method}' is not supported"):
        target(config={**config, "load_method": method})


def test_iceberg_accepts_append_only(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "append-only"}
    TargetDativoIceberg(config=config).listen(_lines(1, 2))
    TargetDativoIceberg(config=config).listen(_lines(3))
    rows = open_catalog(config).load_table("singer.users").scan().to_arrow()
    assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("add_record_metadata", True),
        ("hard_delete", True),
        ("stream_maps", {"users": {"name": None}}),
        ("flattening_enabled", True),
    ],
)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_sdk_settings_not_implemented_are_refused(
    target: type[Any], key: str, value: Any, tmp_path: Path
) -> None:
    config = {"path": str(tmp_path), "warehouse": str(tmp_path), "bucket": "b", "key_env": "X"}
    with pytest.raises(ConfigError, match=f"setting '{key}' is not supported"):
        target(config={**config, key: value})


def test_false_values_of_those_settings_run(tmp_path: Path) -> None:
    config = {
        "path": str(tmp_path),
        "add_record_metadata": False,
        "hard_delete": False,
        "flattening_enabled": False,
        "stream_maps": {},
    }
    TargetDativoParquet(config=config).listen(_lines(1))
    assert _parquet_rows(tmp_path) == [1]


def test_batch_size_rows_is_batch_rows(tmp_path: Path) -> None:
    target = TargetDativoParquet(config={"path": str(tmp_path), "batch_size_rows": 7})
    assert target.singer_input.batch_rows == 7
    target = TargetDativoParquet(config={"path": str(tmp_path), "batch_rows": 9})
    assert target.singer_input.batch_rows == 9
    with pytest.raises(ConfigError, match=r"batch_size_rows \(7\) and batch_rows \(9\) disagree"):
        TargetDativoParquet(config={"path": str(tmp_path), "batch_size_rows": 7, "batch_rows": 9})


def test_cli_refuses_upsert_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"path": str(tmp_path), "load_method": "upsert"}))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from target_dativo_parquet.target import TargetDativoParquet as T; T.cli()",
            "--config",
            str(config),
        ],
        input=_lines(1).getvalue(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert (
        "ConfigError: target-dativo-parquet: load_method 'upsert' is not supported" in done.stderr
    )
    assert "target-dativo-iceberg" in done.stderr
    assert not (tmp_path / "users").exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("add_record_metadata", True),
        ("hard_delete", True),
        ("stream_maps", {"users": {"name": None}}),
        ("flattening_enabled", True),
    ],
)
@pytest.mark.parametrize("target", [TargetDativoParquet, TargetDativoS3], ids=lambda t: t.name)
def test_in_process_runs_refuse_what_the_writer_does_not_honour(
    target: type[Any], key: str, value: Any, tmp_path: Path
) -> None:
    """`dativo run` / run() refuse these settings as tap mode does (they were accepted by
    the settings schema and then ignored)."""
    from dativo_bridge import run
    from tap_dativo_csv.reader import CsvReader

    (tmp_path / "users.csv").write_text("id,name\n1,a\n")
    source = {"files": [{"stream": "users", "path": str(tmp_path / "users.csv")}]}
    config = {"path": str(tmp_path / "out"), "bucket": "b", "key_env": "X", key: value}
    with pytest.raises(ConfigError, match=f"setting '{key}' is not supported"):
        run(CsvReader, target.writer_class, source_config=source, destination_config=config)
    assert not (tmp_path / "out").exists()
