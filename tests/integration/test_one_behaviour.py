"""One reader, three ways to run it (the Python API, `dativo run`'s in-process path and a
Singer tap), one behaviour: the same lifecycle thread, the same rows, the same errors."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge import ArrowReader, StreamInfo, make_tap, run
from dativo_bridge.errors import ConfigError, ReaderContractError
from dativo_bridge.runner import RunContext
from target_dativo_parquet.writer import ParquetWriter
from tests.e2e.helpers import read_parquet_dir

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])


class SqliteReader(ArrowReader):
    """Opens a sqlite3 connection in open(): sqlite3 refuses use from another thread."""

    name = "tap-sqlite-thread"
    is_sorted = True

    def open(self, config: Any) -> None:
        super().open(config)
        self.threads = {threading.get_ident()}
        self.conn = sqlite3.connect(config["path"])

    def discover(self) -> Sequence[StreamInfo]:
        self.threads.add(threading.get_ident())
        return [StreamInfo("people", SCHEMA, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        self.threads.add(threading.get_ident())
        rows = self.conn.execute(
            "SELECT id, name FROM people WHERE id >= ? ORDER BY id", [bookmark or 0]
        ).fetchall()
        yield pa.RecordBatch.from_pylist([{"id": i, "name": n} for i, n in rows], schema=SCHEMA)

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.conn.close()
        assert len(self.threads) == 1, "open, discover, read and close on different threads"


@pytest.fixture()
def database(tmp_path: Path) -> str:
    path = tmp_path / "people.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO people VALUES (?, ?)", [(i, f"p{i}") for i in range(1, 6)])
    return str(path)


def test_python_api_runs_the_whole_lifecycle_on_one_thread(database: str, tmp_path: Path) -> None:
    reader = SqliteReader()
    result = run(
        reader,
        ParquetWriter,
        source_config={"path": database},
        destination_config={"path": str(tmp_path / "o")},
    )
    assert result.rows == 5
    assert len(reader.threads) == 1
    assert sorted(read_parquet_dir(tmp_path / "o" / "people").column("id").to_pylist()) == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_tap_mode_gives_the_same_rows(
    database: str, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    make_tap(SqliteReader)(config={"path": database}).sync_all()
    lines = [json.loads(line) for line in capfdbinary.readouterr().out.splitlines()]
    records = [m["record"] for m in lines if m["type"] == "RECORD"]
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5]
    states = [m["value"] for m in lines if m["type"] == "STATE"]
    assert states[-1]["bookmarks"]["people"]["replication_key_value"] == 5


def test_stream_maps_in_process_are_applied_as_in_tap_mode(
    database: str, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    maps = {
        "stream_maps": {
            "people": {"__alias__": "persons", "name": None, "label": "'#' + str(id)"},
            "names": {"__source__": "people", "__else__": None, "id": "id", "who": "name"},
        }
    }
    result = run(
        SqliteReader,
        ParquetWriter,
        source_config={"path": database, **maps},
        destination_config={"path": str(tmp_path / "o")},
    )
    assert set(result.streams) == {"persons", "names"}
    persons = read_parquet_dir(tmp_path / "o" / "persons").sort_by("id")
    assert persons.column_names == ["id", "label"]
    assert persons.column("label").to_pylist() == [f"#{i}" for i in range(1, 6)]
    names = read_parquet_dir(tmp_path / "o" / "names").sort_by("id")
    assert names.column("who").to_pylist() == [f"p{i}" for i in range(1, 6)]
    assert result.state["bookmarks"]["people"]["replication_key_value"] == 5  # state unchanged

    make_tap(SqliteReader)(config={"path": database, **maps}).sync_all()
    lines = [json.loads(line) for line in capfdbinary.readouterr().out.splitlines()]
    records = [(m["stream"], m["record"]) for m in lines if m["type"] == "RECORD"]
    in_process = [("persons", r) for r in persons.to_pylist()]
    in_process += [("names", r) for r in names.to_pylist()]
    assert sorted(records, key=repr) == sorted(in_process, key=repr)


def test_a_map_arrow_cannot_run_in_process_is_refused_naming_stream_and_expression(
    database: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"stream 'people'.*'name\[0\]'.*Singer process"):
        run(
            SqliteReader,
            ParquetWriter,
            source_config={"path": database, "stream_maps": {"people": {"x": "name[0]"}}},
            destination_config={"path": str(tmp_path)},
        )
    assert not (tmp_path / "people").exists()


class BadTypeReader(SqliteReader):
    name = "tap-sqlite-bad"

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array(["1"]), pa.array(["a"])], names=["id", "name"])


def test_a_bad_batch_is_the_same_error_in_process_and_in_tap_mode(
    database: str, tmp_path: Path
) -> None:
    with pytest.raises(ReaderContractError, match="column 'id'") as in_process:
        run(
            BadTypeReader,
            ParquetWriter,
            source_config={"path": database},
            destination_config={"path": str(tmp_path)},
        )
    with pytest.raises(ReaderContractError, match="column 'id'") as tap_mode:
        make_tap(BadTypeReader)(config={"path": database}).sync_all()
    assert str(in_process.value) == str(tap_mode.value)


def test_run_context_is_public() -> None:
    assert {"select", "metadata", "start_state", "redactor", "progress", "result"} <= set(
        RunContext.__dataclass_fields__
    )
