"""Incremental runs, resuming after a failure, and parallel reads in one snapshot."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.errors import WriteError
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_parquet.writer import ParquetWriter

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_repl"
STREAM = f"{SCHEMA}-events"


@pytest.fixture()
def events() -> Iterator[str]:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {SCHEMA}.events (
            id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, payload text)""")
        conn.execute(f"""INSERT INTO {SCHEMA}.events
            SELECT g, timestamptz '2026-01-01' + g * interval '1 second', repeat('x', 200)
            FROM generate_series(1, 20000) g""")
    yield pg_dsn()


def _config(dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "filter_schemas": [SCHEMA],
        "batch_size_bytes": 256 * 1024,
        "accelerator": "python",
        **extra,
    }


INCREMENTAL = {STREAM: {"replication-method": "INCREMENTAL", "replication-key": "updated_at"}}


def _ids(path: Path) -> list[int]:
    files = [str(p) for p in path.rglob("*.parquet") if not p.name.startswith(".")]
    return ds.dataset(files).to_table().column("id").to_pylist() if files else []


def test_two_incremental_runs_read_only_new_rows(events: str, tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    common = {
        "state_store": store,
        "state_id": "t:pg-to-parquet",
        "metadata": INCREMENTAL,
        "select": [f"{STREAM}.*"],
        "destination_config": {"path": str(tmp_path / "o")},
    }
    first = run(PostgresReader, ParquetWriter, source_config=_config(events), **common)
    assert first.rows == 20000
    bookmark = first.state["bookmarks"][STREAM]
    assert bookmark["replication_key"] == "updated_at"
    assert bookmark["replication_key_value"].startswith("2026-01-01T05:33:20")
    with psycopg.connect(events, autocommit=True) as conn:
        conn.execute(f"""INSERT INTO {SCHEMA}.events
            SELECT g, timestamptz '2026-02-01' + g * interval '1 second', 'new'
            FROM generate_series(20001, 20100) g""")
    second = run(PostgresReader, ParquetWriter, source_config=_config(events), **common)
    # The second run resumes at >= the bookmark (rows that arrive late with the bookmark's
    # key are not lost), so the bookmark's key group (one row here) comes again.
    assert second.rows == 101
    assert (
        second.state["bookmarks"][STREAM]["replication_key_value"]
        > bookmark["replication_key_value"]
    )
    _assert_every_row_once_but_the_boundary(_ids(tmp_path / "o"), range(1, 20101), group=1)


def _assert_every_row_once_but_the_boundary(ids: list[int], expected: range, group: int) -> None:
    """Parquet appends: every source row lands; only a resumed bookmark's key group (at
    most ``group`` rows per resume) may land twice (the bookmark contract)."""
    assert set(ids) == set(expected), "rows lost"
    assert len(ids) - len(expected) <= group, "more duplicated than one boundary key group"


class FailingParquetWriter(ParquetWriter):
    """Fails on its N-th write, like a destination going away mid-run."""

    fail_at = 10

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.writes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise WriteError("destination went away")
        super().write(batch)


def test_interrupted_run_resumes_from_its_last_state(events: str, tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    common = {
        "state_store": store,
        "state_id": "t:resume",
        "metadata": INCREMENTAL,
        "select": [f"{STREAM}.*"],
        "destination_config": {"path": str(tmp_path / "o")},
        "checkpoint_rows": 1000,
    }
    with pytest.raises(WriteError):
        run(PostgresReader, FailingParquetWriter, source_config=_config(events), **common)
    saved = store.get("t:resume")
    assert saved is not None, "checkpoints before the failure must have been recorded"
    landed = set(_ids(tmp_path / "o"))
    assert 0 < len(landed) < 20000
    value = saved["bookmarks"][STREAM]["replication_key_value"]
    with psycopg.connect(events) as conn:
        covered = conn.execute(
            f"SELECT count(*) FROM {SCHEMA}.events WHERE updated_at <= %s", [value]
        ).fetchone()[0]
    assert set(range(1, covered + 1)) <= landed, "the state promised rows that did not land"
    again = run(PostgresReader, ParquetWriter, source_config=_config(events), **common)
    assert again.rows < 20000
    # Uncommitted files were discarded and the resume starts at the bookmark: every source
    # row, and none twice but the bookmark's own key group (one row: keys are unique).
    _assert_every_row_once_but_the_boundary(_ids(tmp_path / "o"), range(1, 20001), group=1)


ACCELERATORS = [
    "python",
    pytest.param(
        "rust",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("dativo_accel") is None, reason="dativo_accel not installed"
        ),
    ),
]


def _full_read(dsn: str, parallelism: int, accelerator: str = "python") -> pa.Table:
    reader = PostgresReader()
    config = _config(dsn, max_parallelism=parallelism, pages_per_partition=50)
    reader.open({**config, "accelerator": accelerator})
    with reader:
        info = {s.name: s for s in reader.discover()}[STREAM]
        return pa.Table.from_batches(list(reader.read(info, None)), schema=info.schema)


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_parallel_read_equals_serial_read(events: str, accelerator: str) -> None:
    serial = _full_read(events, 1).sort_by("id")
    parallel = _full_read(events, 3, accelerator).sort_by("id")
    assert parallel.num_rows == 20000
    assert parallel.equals(serial)


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_parallel_read_is_one_snapshot_under_concurrent_inserts(
    events: str, accelerator: str
) -> None:
    stop = threading.Event()

    def insert() -> None:
        with psycopg.connect(events, autocommit=True) as conn:
            next_id = 20001
            while not stop.is_set():
                # Each insert adds a row at the end of the table and removes the first
                # remaining one, in one transaction: any consistent snapshot holds a
                # contiguous id range of exactly 20000 rows.
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.events VALUES (%s, now(), 'late')", [next_id]
                    )
                    conn.execute(f"DELETE FROM {SCHEMA}.events WHERE id = %s", [next_id - 20000])
                next_id += 1
                time.sleep(0.001)

    thread = threading.Thread(target=insert, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        table = _full_read(events, 3, accelerator)
    finally:
        stop.set()
        thread.join(timeout=10)
    ids = sorted(table.column("id").to_pylist())
    assert len(ids) == 20000 == len(set(ids))
    assert ids == list(range(ids[0], ids[0] + 20000)), "rows from different snapshots mixed"
    assert ids[0] > 1, "the concurrent writer did not get to run during the read"


def test_ties_on_the_replication_key_never_split_or_repeat(tmp_path: Path) -> None:
    """Many rows share each key value; batches are tiny: every row lands exactly once
    across an interrupted run and its resumption."""
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.events (id bigint PRIMARY KEY, "
            "updated_at timestamptz NOT NULL, payload text)"
        )
        conn.execute(f"""INSERT INTO {SCHEMA}.events
            SELECT g, timestamptz '2026-01-01' + (g / 37) * interval '1 minute', 'p' || g
            FROM generate_series(1, 5000) g""")
    store = LocalStateStore(tmp_path / "state")
    common = {
        "state_store": store,
        "state_id": "t:ties",
        "metadata": INCREMENTAL,
        "select": [f"{STREAM}.*"],
        "destination_config": {"path": str(tmp_path / "o")},
        "checkpoint_rows": 1,
    }
    config = _config(pg_dsn(), batch_size_bytes=2048)
    FailingParquetWriter.fail_at = 7
    with pytest.raises(WriteError):
        run(PostgresReader, FailingParquetWriter, source_config=config, **common)
    run(PostgresReader, ParquetWriter, source_config=config, **common)
    # Groups of 37 rows share a key: a group is never split, and at most the one at the
    # resumed bookmark comes twice.
    _assert_every_row_once_but_the_boundary(_ids(tmp_path / "o"), range(1, 5001), group=37)


def test_parallel_read_of_a_table_with_quotes_in_its_name() -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE {SCHEMA}."odd ""name""" (id int PRIMARY KEY, pad text)')
        conn.execute(
            f'INSERT INTO {SCHEMA}."odd ""name""" '
            "SELECT g, repeat('p', 300) FROM generate_series(1, 5000) g"
        )
    reader = PostgresReader()
    reader.open(_config(pg_dsn(), max_parallelism=2, pages_per_partition=20))
    with reader:
        info = {s.name: s for s in reader.discover()}[f'{SCHEMA}-odd "name"']
        ids = [i for b in reader.read(info, None) for i in b.column("id").to_pylist()]
    assert sorted(ids) == list(range(1, 5001))
