"""Progress with % and ETA where the source knows its size: tap-dativo-postgres estimates a
stream's rows (table statistics for a full read, the planner's estimate for a read from a
bookmark) and `dativo run` shows them off a terminal, as text and as JSON fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres.reader import PostgresReader
from tests.integration.postgres.server import fresh_schema, pg_dsn

from .helpers import dativo_run, write_project

SCHEMA = "dativo_eta"
STREAM = f"{SCHEMA}-items"
ROWS = 60_000

# A Parquet writer that takes its time, so that the run lasts a few seconds and the reader
# (held back by the run's bounded queue) is measured mid-way.
SLOW_WRITER = """
import time
from target_dativo_parquet.writer import ParquetWriter

class SlowParquet(ParquetWriter):
    name = "slow-parquet"

    def write(self, batch):
        time.sleep(0.25)
        super().write(batch)
"""


def _table(analyze: bool = True) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO {SCHEMA}.items SELECT g, repeat('x', 40) FROM generate_series(1, {ROWS}) g"
        )
        if analyze:
            conn.execute(f"ANALYZE {SCHEMA}.items")


def _project(tmp_path: Path, metadata: dict | None = None) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_writer.py").write_text(SLOW_WRITER)
    tap = {
        "name": "tap-dativo-postgres",
        "config": {
            "dsn": pg_dsn(),
            "filter_schemas": [SCHEMA],
            "max_parallelism": 1,
            "batch_size_bytes": 100_000,  # about 2,000 rows a batch: ~30 batches
        },
        **({"metadata": metadata} if metadata else {}),
    }
    target = {
        "name": "target-slow",
        "config": {
            "writer_class": "slow_writer:SlowParquet",
            "plugin_dirs": ["plugins"],
            "path": str(tmp_path / "out"),
        },
    }
    return write_project(tmp_path, [tap], [target])


def test_progress_lines_show_percent_and_eta_for_a_postgres_table(tmp_path: Path) -> None:
    _table()
    project = _project(tmp_path)
    done = dativo_run(
        project,
        "tap-dativo-postgres",
        "target-slow",
        "--state-dir",
        str(tmp_path / "state"),
        "--progress-interval",
        "0.5",
    )
    lines = [line for line in done.stderr.splitlines() if "progress:" in line]
    percents = [int(m.group(1)) for m in (re.search(r"(\d+)% ", x + " ") for x in lines) if m]
    assert percents, done.stderr[-3000:]
    # Rises with the rows read, and never says 100% while the stream runs.
    assert percents == sorted(percents), percents
    assert max(percents) <= 99 and min(percents) < 90, percents
    assert f"'{STREAM}'" in lines[0]
    # No ETA in the first seconds, then one.
    early = [x for x in lines if float(re.search(r"([\d.]+)s elapsed", x).group(1)) < 2.5]
    assert early and all("ETA" not in x for x in early), lines
    assert any(re.search(r"ETA \d\d:\d\d", x) for x in lines), lines


def test_json_progress_records_carry_the_numbers(tmp_path: Path) -> None:
    _table()
    project = _project(tmp_path)
    done = dativo_run(
        project,
        "tap-dativo-postgres",
        "target-slow",
        "--state-dir",
        str(tmp_path / "state"),
        "--log-format",
        "json",
        "--progress-interval",
        "0.5",
    )
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    progress = [r for r in records if r["message"].startswith("progress:")]
    assert progress, done.stderr[-3000:]
    stream = progress[0]["streams"][STREAM]
    # The table's statistics after ANALYZE: the exact count.
    assert stream["expected_rows"] == ROWS
    assert 0 <= stream["percent"] <= 99
    assert isinstance(progress[0]["rows"], int) and progress[0]["elapsed_seconds"] > 0
    with_eta = [r["streams"][STREAM]["eta_seconds"] for r in progress]
    assert any(isinstance(e, int | float) and e > 0 for e in with_eta), with_eta


def _reader() -> PostgresReader:
    reader = PostgresReader()
    reader.open({"dsn": pg_dsn(), "filter_schemas": [SCHEMA]})
    return reader


def test_estimates_for_full_incremental_and_never_analysed_reads() -> None:
    _table(analyze=False)
    reader = _reader()
    try:
        (info,) = reader.discover()
        # Never analysed: the planner's guess from the table's pages, not zero and not None.
        guess = reader.estimated_rows(info, None)
        assert guess is not None and ROWS / 3 < guess < ROWS * 3, guess
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"ANALYZE {SCHEMA}.items")
        assert reader.estimated_rows(info, None) == ROWS
        incremental = StreamInfo(info.name, info.schema, info.key_properties, "id", "INCREMENTAL")
        # From a bookmark: the planner's estimate of the rows at or after it.
        tail = reader.estimated_rows(incremental, ROWS - 15_000)
        assert tail is not None and 12_000 <= tail <= 18_000, tail
        assert reader.estimated_rows(incremental, ROWS + 10) is not None
        log_based = StreamInfo(info.name, info.schema, info.key_properties, "id", "LOG_BASED")
        assert reader.estimated_rows(log_based, None) is None
    finally:
        reader.close()


@pytest.mark.parametrize("bookmark", [None, 1])
def test_an_empty_table_is_estimated_as_empty(bookmark: int | None) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, body text)")
    reader = _reader()
    try:
        (info,) = reader.discover()
        if bookmark is not None:
            info = StreamInfo(info.name, info.schema, info.key_properties, "id", "INCREMENTAL")
        estimate = reader.estimated_rows(info, bookmark)
        assert estimate is not None and estimate >= 0
        if bookmark is None:
            assert estimate == 0
    finally:
        reader.close()
