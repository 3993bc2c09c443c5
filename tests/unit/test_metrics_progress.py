"""Progress % and ETA: the formatting (dativo_bridge.cli) and what the runner records per
stream (expected rows, start and end, seconds per stage)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.cli import (
    JsonFormatter,
    format_eta,
    progress_fields,
    progress_line,
    stats_table,
    stream_progress,
)
from dativo_bridge.delivery import StreamStats
from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.runner import run

SCHEMA = pa.schema([pa.field("id", pa.int64())])


def _stats(rows: int, expected: int | None, ran: float, done: bool = False) -> StreamStats:
    stats = StreamStats(rows=rows, expected_rows=expected, started=100.0)
    if done:
        stats.finished = 100.0 + ran
    return stats


def test_percent_is_capped_at_99_until_the_stream_ends() -> None:
    assert stream_progress(_stats(500, 1000, 10), 110.0)[0] == 50.0
    assert stream_progress(_stats(1000, 1000, 10), 110.0)[0] == 99.0
    assert stream_progress(_stats(5000, 1000, 10), 110.0)[0] == 99.0  # a low estimate
    assert stream_progress(_stats(1000, 1000, 10, done=True), 110.0) == (100.0, 0.0)
    assert stream_progress(_stats(10, 0, 10), 110.0)[0] == 99.0
    assert stream_progress(_stats(0, 0, 10), 110.0)[0] == 0.0


def test_no_eta_in_the_first_seconds_nor_past_the_estimate_nor_without_one() -> None:
    assert stream_progress(_stats(100, 1000, 1), 101.0) == (10.0, None)
    assert stream_progress(_stats(0, 1000, 30), 130.0) == (0.0, None)
    assert stream_progress(_stats(2000, 1000, 30), 130.0) == (99.0, None)
    assert stream_progress(_stats(100, None, 30), 130.0) == (None, None)
    # 250 rows in 5 s: 50 rows/s, 750 to go: 15 s.
    percent, eta = stream_progress(_stats(250, 1000, 5), 105.0)
    assert percent == 25.0 and eta == 15.0


def test_eta_format() -> None:
    assert format_eta(0) == "00:00"
    assert format_eta(75.4) == "01:15"
    assert format_eta(3599) == "59:59"
    assert format_eta(3600 + 62) == "1:01:02"


def test_progress_line_names_the_running_stream_with_percent_and_eta() -> None:
    streams = {"done": _stats(10, 10, 2, done=True), "orders": _stats(250, 1000, 5)}
    line = progress_line(streams, 7.0, now=105.0)
    assert line.endswith("7.0s elapsed; 'orders' 25% ETA 00:15"), line
    assert "'done'" not in line
    plain = progress_line({"s": _stats(250, None, 5)}, 5.0, now=105.0)
    assert "%" not in plain and "ETA" not in plain
    early = progress_line({"s": _stats(250, 1000, 1)}, 1.0, now=101.0)
    assert early.endswith("'s' 25%")


def test_progress_fields_and_json_records() -> None:
    streams = {"orders": _stats(250, 1000, 5)}
    fields = progress_fields(streams, 5.0, now=105.0)
    assert fields["rows"] == 250 and fields["rows_per_second"] == 50.0
    assert fields["streams"]["orders"] == {
        "rows": 250,
        "committed_rows": 0,
        "memory_bytes": 0,
        "expected_rows": 1000,
        "percent": 25.0,
        "eta_seconds": 15.0,
        "done": False,
    }
    record = logging.LogRecord("dativo", logging.INFO, __file__, 1, "progress: x", (), None)
    record.dativo_fields = fields
    out = JsonFormatter().format(record)
    import json

    parsed = json.loads(out)
    assert parsed["message"] == "progress: x"
    assert parsed["streams"]["orders"]["eta_seconds"] == 15.0


def test_live_table_has_percent_and_eta_columns_only_while_a_sized_stream_runs() -> None:
    running = stats_table({"orders": _stats(250, 1000, 5)}, 5.0, "running", now=105.0)
    headers = [c.header for c in running.columns]
    assert "%" in headers and "ETA" in headers
    cells = {c.header: list(c.cells) for c in running.columns}
    assert cells["%"] == ["25%"] and cells["ETA"] == ["00:15"]
    ended = stats_table({"orders": _stats(1000, 1000, 5, done=True)}, 5.0, "end", now=105.0)
    assert "%" not in [c.header for c in ended.columns]


class _Sized(ArrowReader):
    name = "sized"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("a", SCHEMA), StreamInfo("b", SCHEMA), StreamInfo("c", SCHEMA)]

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        if stream.name == "c":
            raise RuntimeError("statistics unavailable")  # never fails the run
        return {"a": 30}.get(stream.name)

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        for i in range(3):
            yield pa.record_batch([pa.array(range(i * 10, i * 10 + 10), pa.int64())], SCHEMA)


class _Memory(ArrowWriter):
    def write(self, batch: pa.RecordBatch) -> None:
        self.rows = getattr(self, "rows", 0) + batch.num_rows

    def commit(self) -> CommitResult:
        rows, self.rows = getattr(self, "rows", 0), 0
        return CommitResult(rows=rows, bytes=rows * 8)


@pytest.mark.parametrize(
    ("given", "kept"), [(12.7, 12), (-5, 0), (float("nan"), None), (True, None), ("9", None)]
)
def test_an_estimate_that_is_not_a_count_is_ignored(given: Any, kept: int | None) -> None:
    from dativo_bridge.sources import estimated_rows

    class Odd(_Sized):
        def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> Any:
            return given

    assert estimated_rows(Odd(), StreamInfo("a", SCHEMA), None) == kept


def test_the_runner_records_estimates_stream_ends_and_stage_seconds() -> None:
    seen: list[dict[str, tuple[int | None, bool]]] = []

    def progress(streams: Any, elapsed: float) -> None:
        seen.append({n: (s.expected_rows, s.finished is not None) for n, s in streams.items()})

    result = run(_Sized, _Memory, progress=progress, progress_interval=1e-9)
    a, b, c = (result.streams[n] for n in "abc")
    assert (a.expected_rows, b.expected_rows, c.expected_rows) == (30, None, None)
    assert all(s.started is not None and s.finished is not None for s in (a, b, c))
    assert a.finished is not None and b.started is not None and a.finished <= b.started + 1
    # While b ran, a was reported ended and b not.
    assert any(s.get("a") == (30, True) and s.get("b") == (None, False) for s in seen), seen
    for s in (a, b, c):
        assert s.rows == 30 and s.commits >= 1 and s.committed_bytes == 240
        assert s.read_seconds > 0 and s.write_seconds > 0 and s.commit_seconds > 0


def test_csv_reader_estimates_rows_from_file_sizes(tmp_path: Any) -> None:
    import gzip
    import os

    from tap_dativo_csv.reader import CsvReader

    text = "id,name\n" + "".join(f"{i},name-{i:05d}\n" for i in range(20_000))
    (tmp_path / "a.csv").write_text(text)
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write(text)
    os.utime(tmp_path / "a.csv", (1_000_000_000, 1_000_000_000))
    os.utime(tmp_path / "b.csv.gz", (1_000_000_100, 1_000_000_100))
    reader = CsvReader()
    reader.open({"files": [{"stream": "s", "path": str(tmp_path / "*.csv*")}]})
    (info,) = reader.discover()
    estimate = reader.estimated_rows(info, None)
    assert estimate is not None and 38_000 <= estimate <= 42_000, estimate
    rows = sum(b.num_rows for b in reader.read(info, None))
    assert rows == 40_000
    # From a bookmark past the first file: only the gzip one is read.
    later = reader.estimated_rows(info, "2001-09-09T01:47:00+00:00")
    assert later is not None and 19_000 <= later <= 21_000, later
    assert reader.estimated_rows(info, "2030-01-01T00:00:00+00:00") == 0
