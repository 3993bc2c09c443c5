"""SQLReader through the SQLite example (examples/sqlite_reader.py): it passes the
conformance suite, keeps types exactly or says which value does not fit, binds the
bookmark as the key's type, batches by bytes, and runs in process."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dativo_bridge import run
from dativo_bridge.errors import ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.testkit import run_reader_checks
from target_dativo_parquet.writer import ParquetWriter

EXAMPLE = Path(__file__).parents[2] / "examples" / "sqlite_reader.py"
INCREMENTAL = {"*": {"replication-method": "INCREMENTAL", "replication-key": "updated_at"}}


def _example() -> type[ArrowReader]:
    spec = importlib.util.spec_from_file_location("sqlite_reader_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[ArrowReader] = module.SQLiteReader
    return cls


SQLiteReader = _example()


def _database(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, updated_at TIMESTAMP, "
        "amount DECIMAL(10, 2), ok BOOLEAN, day DATE, note TEXT, raw BLOB, score REAL)"
    )
    rows = []
    for i in range(1, 121):
        stamp = None if i % 13 == 0 else f"2025-01-01 {i // 10:02d}:00:00"  # ties, NULLs
        rows.append(
            (
                i,
                stamp,
                i * 0.25,
                i % 2,
                f"2025-02-{i % 28 + 1:02d}",
                f"n{i}",
                b"\x00" * (i % 3),
                i / 7,
            )
        )
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return str(path)


def test_the_example_is_at_most_25_lines() -> None:
    assert len(EXAMPLE.read_text().splitlines()) <= 25


def test_the_example_passes_the_conformance_suite(tmp_path: Path) -> None:
    database = _database(tmp_path / "db.sqlite")

    def late_rows(config: Mapping[str, Any], stream: StreamInfo, bookmark: Any) -> list[Any]:
        with sqlite3.connect(database) as conn:
            stamp = dt.datetime.fromisoformat(bookmark).strftime("%Y-%m-%d %H:%M:%S")
            conn.execute(
                "INSERT INTO events (id, updated_at) VALUES (5001, ?), (5002, ?)", [stamp] * 2
            )
        return [{"id": 5001}, {"id": 5002}]

    config = {"database": database, "batch_size_bytes": 1500}
    report = run_reader_checks(SQLiteReader, config, metadata=INCREMENTAL, late_rows=late_rows)
    report.assert_ok()
    assert [r.status for r in report.results] == ["passed"] * 7, report.text()
    resume = next(r for r in report.results if r.name == "reader.resume")
    assert int(resume.detail.split()[0]) >= 5, report.text()  # many batches, many stops


def test_a_bookmark_bound_as_text_loses_rows_and_the_suite_says_so(tmp_path: Path) -> None:
    """SQLite compares TEXT: the STATE's '2025-01-01T05:00:00' sorts after the stored
    '2025-01-01 05:00:00', so a reader binding the raw text skips the bookmark's rows."""

    class TextBookmark(SQLiteReader):  # type: ignore[valid-type,misc]
        def bind_bookmark(self, bookmark: Any, key_type: pa.DataType) -> Any:
            return bookmark

    config = {"database": _database(tmp_path / "db.sqlite"), "batch_size_bytes": 1500}
    report = run_reader_checks(TextBookmark, config, metadata=INCREMENTAL)
    assert report.failed_names == {"reader.resume"}, report.text()
    assert "row(s) lost" in report.text()


def test_types_come_from_the_declaration_and_values_read_exactly(tmp_path: Path) -> None:
    reader = SQLiteReader()
    reader.open({"database": _database(tmp_path / "db.sqlite")})
    try:
        [stream] = reader.discover()
        assert stream.name == "events"
        assert stream.key_properties == ("id",)
        assert stream.schema == pa.schema(
            [
                pa.field("id", pa.int64(), nullable=False),
                ("updated_at", pa.timestamp("us")),
                ("amount", pa.decimal128(10, 2)),
                ("ok", pa.bool_()),
                ("day", pa.date32()),
                ("note", pa.string()),
                ("raw", pa.binary()),
                ("score", pa.float64()),
            ]
        )
        table = pa.Table.from_batches(list(reader.read(stream, None)), schema=stream.schema)
    finally:
        reader.close()
    first = table.slice(0, 1).to_pylist()[0]
    assert first == {
        "id": 1,
        "updated_at": dt.datetime(2025, 1, 1, 0, 0),
        "amount": decimal.Decimal("0.25"),
        "ok": True,
        "day": dt.date(2025, 2, 2),
        "note": "n1",
        "raw": b"\x00",
        "score": 1 / 7,
    }
    assert table.num_rows == 120


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("n", "'twelve'", "column 'n', row 2: a str value that does not fit int64"),
        ("d", "1.005", "column 'd', row 2: a float value that does not fit decimal128(10, 2)"),
        ("day", "'yesterday'", "column 'day', row 2: a str value that does not fit date32"),
    ],
)
def test_a_value_that_does_not_fit_is_a_read_error(
    tmp_path: Path, column: str, value: str, words: str
) -> None:
    path = tmp_path / "bad.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, d DECIMAL(10, 2), day DATE)"
        )
        conn.execute("INSERT INTO t VALUES (1, 1, 1.5, '2025-01-01')")
        conn.execute(f"INSERT INTO t (id, {column}) VALUES (2, {value})")
    reader = SQLiteReader()
    reader.open({"database": str(path)})
    try:
        [stream] = reader.discover()
        with pytest.raises(ReadError) as caught:
            list(reader.read(stream, None))
    finally:
        reader.close()
    assert words in str(caught.value)
    assert "stream 't'" in str(caught.value)


def test_batches_are_cut_by_bytes(tmp_path: Path) -> None:
    database = _database(tmp_path / "db.sqlite")
    for limit in (2000, 1 << 30):
        reader = SQLiteReader()
        reader.open({"database": database, "batch_size_bytes": limit})
        try:
            [stream] = reader.discover()
            batches = list(reader.read(stream, None))
        finally:
            reader.close()
        assert sum(b.num_rows for b in batches) == 120
        sizes = [b.nbytes for b in batches]
        if limit > sum(sizes):
            assert len(batches) == 1
        else:
            # Each batch but the last reaches the limit, and overshoots it by less than
            # half (the fetches are sized from the bytes per row).
            assert len(batches) >= sum(sizes) // limit >= 3, sizes
            assert all(limit <= size < 1.5 * limit for size in sizes[:-1]), sizes


def test_dativo_run_with_the_example_resumes_incrementally(tmp_path: Path) -> None:
    database = _database(tmp_path / "db.sqlite")
    out = tmp_path / "lake"
    config = {"database": database}
    first = run(
        SQLiteReader,
        ParquetWriter,
        source_config=config,
        destination_config={"path": str(out)},
        metadata=INCREMENTAL,
    )
    assert first.rows == 120
    bookmark = first.state["bookmarks"]["events"]["replication_key_value"]
    assert bookmark == "2025-01-01T12:00:00"
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO events (id, updated_at) VALUES (900, '2025-01-01 12:00:00')")
    second = run(
        SQLiteReader,
        ParquetWriter,
        source_config=config,
        destination_config={"path": str(out)},
        metadata=INCREMENTAL,
        state=first.state,
    )
    # The bookmark's key group again (at least once) with the late row: ids 120 and 900.
    ids = sorted(pq.read_table(out / "events").column("id").to_pylist())
    assert second.rows == 2
    assert ids.count(120) == 2 and 900 in ids


def test_the_docs_show_the_example_as_it_is() -> None:
    docs = (EXAMPLE.parents[1] / "docs" / "writing-plugins.md").read_text()
    body = EXAMPLE.read_text().split("\n", 2)[2].lstrip("\n")  # without the docstring
    assert f"```python\n{body}```" in docs
