"""SQLReader on an ADBC driver (adbc-driver-sqlite): Arrow batches straight from the
cursor, cast to the declared types without losing a value, and the conformance suite
catching a driver whose bookmark parameter does not compare with the stored values."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.errors import ReadError
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.sql_reader import Column, SQLReader
from dativo_bridge.testkit import run_reader_checks

dbapi = pytest.importorskip("adbc_driver_sqlite.dbapi")

INCREMENTAL = {"*": {"replication-method": "INCREMENTAL", "replication-key": "updated_at"}}


class AdbcSQLiteReader(SQLReader):
    """SQLite through ADBC. Its driver binds a datetime parameter as the text
    '2025-01-01T05:00:00.000000', which sorts after every stored '2025-01-01 ...' of that
    day, so the bookmark is bound as SQLite's own text form."""

    name = "tap-sqlite-adbc"
    config_jsonschema = {"type": "object", "properties": {"database": {"type": "string"}}}

    def connect(self) -> Any:
        return dbapi.connect(self.config["database"])

    def _rows(self, conn: Any, query: str) -> list[Any]:
        cursor = conn.cursor()
        try:
            cursor.execute(query)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def tables(self, conn: Any) -> list[tuple[None, str]]:
        rows = self._rows(conn, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY 1")
        return [(None, n) for (n,) in rows if not n.startswith("sqlite_")]

    def columns(self, conn: Any, schema: None, table: str) -> list[Column]:
        info = self._rows(conn, f"SELECT * FROM pragma_table_info({self.quote(table)})")
        return [Column(name, kind, not notnull, pk) for _, name, kind, notnull, _, pk in info]

    def bind_bookmark(self, bookmark: Any, key_type: pa.DataType) -> Any:
        value = super().bind_bookmark(bookmark, key_type)
        return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else value


class DatetimeParameter(AdbcSQLiteReader):
    """The base class's binding: a datetime, which the driver sends as ISO text with 'T'."""

    def bind_bookmark(self, bookmark: Any, key_type: pa.DataType) -> Any:
        return SQLReader.bind_bookmark(self, bookmark, key_type)


def _database(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, updated_at TIMESTAMP, "
            "amount DECIMAL(10, 2), ok BOOLEAN, note TEXT)"
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [
                (
                    i,
                    None if i % 11 == 0 else f"2025-01-01 {i // 8:02d}:00:00",
                    i * 0.25,
                    i % 2,
                    f"n{i}",
                )
                for i in range(1, 97)
            ],
        )
    return str(path)


def test_the_adbc_reader_passes_the_conformance_suite(tmp_path: Path) -> None:
    database = _database(tmp_path / "db.sqlite")

    def late_rows(config: Mapping[str, Any], stream: StreamInfo, bookmark: Any) -> list[Any]:
        stamp = dt.datetime.fromisoformat(bookmark).strftime("%Y-%m-%d %H:%M:%S")
        with sqlite3.connect(database) as conn:
            conn.execute("INSERT INTO events (id, updated_at) VALUES (7001, ?)", [stamp])
        return [{"id": 7001}]

    config = {"database": database, "batch_size_bytes": 1200}
    report = run_reader_checks(AdbcSQLiteReader, config, metadata=INCREMENTAL, late_rows=late_rows)
    report.assert_ok()
    assert [r.status for r in report.results] == ["passed"] * 7, report.text()


def test_the_suite_catches_a_bookmark_the_driver_cannot_compare(tmp_path: Path) -> None:
    config = {"database": _database(tmp_path / "db.sqlite"), "batch_size_bytes": 1200}
    report = run_reader_checks(DatetimeParameter, config, metadata=INCREMENTAL)
    assert report.failed_names == {"reader.resume"}, report.text()
    assert "row(s) lost" in report.text()


def test_arrow_batches_take_the_declared_types(tmp_path: Path) -> None:
    reader = AdbcSQLiteReader()
    reader.open({"database": _database(tmp_path / "db.sqlite"), "batch_size_bytes": 1000})
    try:
        [stream] = reader.discover()
        batches = list(reader.read(stream, None))
    finally:
        reader.close()
    assert all(b.schema == stream.schema for b in batches)
    sizes = [b.nbytes for b in batches]
    assert len(batches) >= sum(sizes) // 1000 >= 3, sizes
    assert all(1000 <= size < 1500 for size in sizes[:-1]), sizes
    table = pa.Table.from_batches(batches)
    assert stream.schema.field("updated_at").type == pa.timestamp("us")
    assert table.slice(0, 1).to_pylist()[0] == {
        "id": 1,
        "updated_at": dt.datetime(2025, 1, 1, 0, 0),
        "amount": __import__("decimal").Decimal("0.25"),
        "ok": True,
        "note": "n1",
    }


@pytest.mark.parametrize(
    ("ddl", "value", "words"),
    [
        ("x DECIMAL(10, 2)", "1.005", "column 'x', row 2: a float value that does not fit"),
        ("x BOOLEAN", "2", "column 'x', row 2: a int value that does not fit bool"),
    ],
)
def test_arrow_casts_that_would_lose_a_value_are_refused(
    tmp_path: Path, ddl: str, value: str, words: str
) -> None:
    path = tmp_path / "bad.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {ddl})")
        conn.execute("INSERT INTO t VALUES (1, 1)")
        conn.execute(f"INSERT INTO t VALUES (2, {value})")
    reader = AdbcSQLiteReader()
    reader.open({"database": str(path)})
    try:
        [stream] = reader.discover()
        with pytest.raises(ReadError) as caught:
            list(reader.read(stream, None))
    finally:
        reader.close()
    assert words in str(caught.value)
