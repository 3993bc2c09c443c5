"""The reader conformance checks: a correct in-memory reader passes, and each deliberately
broken one fails with the check that names its bug."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.testkit import run_reader_checks

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("k", pa.int64()),
        pa.field("name", pa.string()),
    ]
)
# Ties across batch boundaries (batches of 3), and NULL keys.
KEYS = [None, None, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 5, 5, 6, 7, 8, 8, 9, 10]
ROWS = [{"id": i, "k": k, "name": f"n{i}"} for i, k in enumerate(KEYS)]
LATE: list[dict[str, Any]] = []  # rows a late_rows hook added to the "source"


@pytest.fixture(autouse=True)
def _no_late_rows() -> Iterator[None]:
    LATE.clear()
    STOP.clear()
    yield
    LATE.clear()
    STOP.set()  # ends LeaksAThread's workers


def add_late_rows(config: Mapping[str, Any], stream: StreamInfo, bookmark: Any) -> list[Any]:
    rows = [{"id": 1000 + i, "k": int(bookmark), "name": "late"} for i in range(2)]
    LATE.extend(rows)
    return rows


class MemoryReader(ArrowReader):
    """Correct: NULL keys first, key order, resumes at >= the bookmark, batches of 3."""

    name = "tap-memory"
    is_sorted: ClassVar[bool] = True

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("items", SCHEMA, ("id",), "k", "INCREMENTAL")]

    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        rows = sorted(ROWS + LATE, key=lambda r: (r["k"] is not None, r["k"] or 0, r["id"]))
        if bookmark is None:
            return rows
        return [r for r in rows if r["k"] is not None and r["k"] >= int(bookmark)]

    def batch(self, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(rows, schema=schema)

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        rows = self.select(bookmark)
        for start in range(0, len(rows), 3):
            yield self.batch(rows[start : start + 3], stream.schema)


class UnsortedReader(MemoryReader):
    """Correct too: rows in no order, so the bookmark is released only at the end."""

    is_sorted = False

    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        return list(reversed(super().select(bookmark)))


class WrongTypes(MemoryReader):
    """Declares k as int64 and yields it as text."""

    def batch(self, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
        wrong = pa.schema([f.with_type(pa.string()) if f.name == "k" else f for f in schema])
        return pa.RecordBatch.from_pylist(
            [{**r, "k": None if r["k"] is None else str(r["k"])} for r in rows], schema=wrong
        )


class IgnoredBookmark(MemoryReader):
    """Reads everything whatever the bookmark."""

    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        return super().select(None)


class UnsortedIgnoredBookmark(UnsortedReader):
    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        return list(reversed(ROWS))


class LosesAtResume(MemoryReader):
    """Resumes strictly after the bookmark: the rest of a tied key group is lost."""

    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        if bookmark is None:
            return list(ROWS)
        return [r for r in ROWS if r["k"] is not None and r["k"] > int(bookmark)]


class LastRowBookmark(MemoryReader):
    """Each batch comes in descending order and the bookmark is its last row's key."""

    def batch(self, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist(list(reversed(rows)), schema=schema)

    def bookmark(self, stream: StreamInfo, batch: pa.RecordBatch, previous: Any | None) -> Any:
        last = batch.column("k")[batch.num_rows - 1].as_py() if batch.num_rows else None
        return previous if last is None else last


class WholeGroupsButStrict(MemoryReader):
    """Batches hold whole key groups and resume strictly after the bookmark: no stop
    loses a row, but rows that commit late with the bookmark's key are never read."""

    def select(self, bookmark: Any | None) -> list[dict[str, Any]]:
        rows = super().select(None)
        if bookmark is None:
            return rows
        return [r for r in rows if r["k"] is not None and r["k"] > int(bookmark)]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        rows = self.select(bookmark)
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["k"], []).append(row)
        for group in groups.values():
            yield self.batch(group, stream.schema)


class NotReallySorted(UnsortedReader):
    """Declares is_sorted but yields descending keys."""

    is_sorted = True


class LeaksAFile(MemoryReader):
    """Opens a file in open() and never closes it."""

    held: ClassVar[list[Any]] = []

    def open(self, config: Mapping[str, Any]) -> None:
        super().open(config)
        self.held.append(open(os.devnull, "rb"))  # noqa: SIM115 - the leak under test


STOP = threading.Event()


class LeaksAThread(MemoryReader):
    """Starts a worker in open() that close() never stops."""

    def open(self, config: Mapping[str, Any]) -> None:
        super().open(config)
        threading.Thread(target=STOP.wait, name="leaky-worker", daemon=True).start()


@pytest.mark.parametrize("reader", [MemoryReader, UnsortedReader])
def test_a_correct_reader_passes_every_check(reader: type[ArrowReader]) -> None:
    report = run_reader_checks(reader, {}, late_rows=add_late_rows)
    report.assert_ok()
    statuses = {r.name: r.status for r in report.results}
    assert statuses == {
        "reader.open": "passed",
        "reader.discover": "passed",
        "reader.schema": "passed",
        "reader.bookmark": "passed",
        "reader.resume": "passed",
        "reader.late-rows": "passed",
        "reader.close": "passed",
    }, report.text()
    assert report.seconds < 10


@pytest.mark.parametrize(
    ("reader", "check", "words"),
    [
        (WrongTypes, "reader.schema", "column 'k': a batch has type string"),
        (IgnoredBookmark, "reader.resume", "repeated that the STATE had claimed"),
        (UnsortedIgnoredBookmark, "reader.resume", "repeated that the STATE had claimed"),
        (LosesAtResume, "reader.resume", "row(s) lost"),
        (LastRowBookmark, "reader.bookmark", "it is the last row's key"),
        (NotReallySorted, "reader.bookmark", "declares is_sorted, but replication key 'k' went"),
        (LeaksAFile, "reader.close", "/dev/null"),
        (LeaksAThread, "reader.close", "thread(s): ['leaky-worker"),
    ],
)
def test_a_broken_reader_fails_the_check_that_names_its_bug(
    reader: type[ArrowReader], check: str, words: str
) -> None:
    report = run_reader_checks(reader, {})
    assert report.failed_names == {check}, report.text()
    [failure] = report.failed
    assert words in failure.detail, report.text()
    assert f"FAILED  {check}" in report.text()


def test_late_rows_at_the_bookmark_catch_a_strict_resume_that_stops_cannot() -> None:
    report = run_reader_checks(WholeGroupsButStrict, {}, late_rows=add_late_rows)
    assert report.failed_names == {"reader.late-rows"}, report.text()
    assert "2 of 2 row(s) added with the bookmark's key value 10" in report.text()
    assert "id=1000, k=10, name='late'" in report.text()
    # Without the hook the check is skipped, and says why.
    report = run_reader_checks(WholeGroupsButStrict, {})
    report.assert_ok()
    late = next(r for r in report.results if r.name == "reader.late-rows")
    assert late.status == "skipped"


def test_failures_show_the_first_differing_rows() -> None:
    [failure] = run_reader_checks(LosesAtResume, {}).failed
    # Stopped after batch 1 (keys None, None, 1 | 1, ...), resumed from 1 with '>':
    # the second row of key 1 (id 3) is lost.
    assert "stopped after batch 1 of 7 with the STATE's bookmark 1" in failure.detail
    assert "1 row(s) lost" in failure.detail
    assert "id=3, k=1, name='n3'" in failure.detail
    [failure] = run_reader_checks(WrongTypes, {}).failed
    assert "id=0, k=None, name='n0'" in failure.detail


def test_record_limits_and_skips_keep_a_big_stream_fast() -> None:
    report = run_reader_checks(MemoryReader, {}, max_rows=6, max_stops=2, skip=["reader.close"])
    report.assert_ok()
    statuses = {r.name: r.status for r in report.results}
    assert statuses["reader.close"] == "skipped"
    resume = next(r for r in report.results if r.name == "reader.resume")
    assert resume.detail.startswith("2 stop point(s)")


def test_a_config_the_schema_refuses_fails_open() -> None:
    class NeedsSetting(MemoryReader):
        config_jsonschema: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"dsn": {"type": "string"}},
            "required": ["dsn"],
        }

    report = run_reader_checks(NeedsSetting, {})
    assert report.failed_names == {"reader.open"}
    assert "dsn" in report.text()
