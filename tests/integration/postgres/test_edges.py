"""tap-dativo-postgres at the edges of the bookmark contract and of PostgreSQL's value
range: rows that arrive late with the bookmark's key, NULL replication keys across an
interrupted first run, and +/-infinity / 24:00:00 delivered as values engines read."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.errors import WriteError
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_parquet.writer import ParquetWriter

from .server import fresh_schema, pg_dsn
from .test_replication import FailingParquetWriter

SCHEMA = "dativo_edges"

ACCELERATORS = [
    "python",
    pytest.param(
        "rust",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("dativo_accel") is None, reason="dativo_accel not installed"
        ),
    ),
]


def _config(accelerator: str, **extra: Any) -> dict[str, Any]:
    return {
        "dsn": pg_dsn(),
        "filter_schemas": [SCHEMA],
        "batch_size_bytes": 4096,
        "accelerator": accelerator,
        **extra,
    }


def _rows(path: Path) -> pa.Table:
    files = [str(p) for p in path.rglob("*.parquet") if not p.name.startswith(".")]
    return ds.dataset(files).to_table()


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_rows_arriving_late_with_the_bookmark_key_are_read(
    accelerator: str, tmp_path: Path
) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.sales (id int PRIMARY KEY, day date NOT NULL)")
        conn.execute(
            f"INSERT INTO {SCHEMA}.sales SELECT g, date '2026-03-01' + g / 2 "
            "FROM generate_series(1, 10) g"
        )
    stream = f"{SCHEMA}-sales"
    common: dict[str, Any] = {
        "state_store": LocalStateStore(tmp_path / "state"),
        "state_id": "t:late",
        "metadata": {stream: {"replication-method": "INCREMENTAL", "replication-key": "day"}},
        "destination_config": {"path": str(tmp_path / "o")},
    }
    first = run(PostgresReader, ParquetWriter, source_config=_config(accelerator), **common)
    assert first.rows == 10
    assert first.state["bookmarks"][stream]["replication_key_value"] == "2026-03-06"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:  # late, with day == bookmark
        conn.execute(
            f"INSERT INTO {SCHEMA}.sales SELECT g, date '2026-03-06' FROM generate_series(11, 15) g"
        )
    run(PostgresReader, ParquetWriter, source_config=_config(accelerator), **common)
    ids = _rows(tmp_path / "o" / stream).column("id").to_pylist()
    assert set(ids) == set(range(1, 16)), "late rows at the bookmark were lost"
    # Only the bookmark's key group (id 10, day 03-06) came twice.
    assert sorted(ids) == [*range(1, 10), 10, 10, *range(11, 16)]


def _nullable_table() -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.docs (id int PRIMARY KEY, changed timestamptz, pad text)"
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.docs SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE "
            "timestamptz '2026-01-01' + g * interval '1 minute' END, repeat('p', 100) "
            "FROM generate_series(1, 6000) g"
        )


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_null_replication_keys_survive_an_interrupted_first_run(
    accelerator: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _nullable_table()
    stream = f"{SCHEMA}-docs"
    metadata = {stream: {"replication-method": "INCREMENTAL", "replication-key": "changed"}}
    config = _config(accelerator)
    reader = PostgresReader()
    reader.open(config)
    with reader:
        info = next(s for s in reader.discover() if s.name == stream)
        info = type(info)(info.name, info.schema, info.key_properties, "changed", "INCREMENTAL")
        batches = sum(1 for _ in reader.read(info, None))
    assert batches > 20
    common: dict[str, Any] = {
        "state_store": LocalStateStore(tmp_path / "state"),
        "state_id": "t:nulls",
        "metadata": metadata,
        "destination_config": {"path": str(tmp_path / "o")},
        "checkpoint_rows": 1,
    }
    # Fail late in the first run: where NULL keys sorted last, they were still unread
    # while the bookmark already stood at the largest key.
    monkeypatch.setattr(FailingParquetWriter, "fail_at", int(batches * 0.9))
    with pytest.raises(WriteError):
        run(PostgresReader, FailingParquetWriter, source_config=config, **common)
    run(PostgresReader, ParquetWriter, source_config=config, **common)
    ids = _rows(tmp_path / "o" / stream).column("id").to_pylist()
    assert set(ids) == set(range(1, 6001)), f"{6000 - len(set(ids))} rows lost"
    assert len(ids) - 6000 <= 1

    with caplog.at_level(logging.WARNING, logger="dativo.postgres"):
        later = run(PostgresReader, ParquetWriter, source_config=config, **common)
    assert later.rows == 1  # the bookmark's own row; NULL keys are not re-read ...
    assert "2000 row(s) have a NULL replication key 'changed'" in caplog.text  # ... but told


def _infinite_table() -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.ranges (id int PRIMARY KEY, d date, ts timestamp, "
            "tz timestamptz, t time)"
        )
        conn.execute(
            f"""INSERT INTO {SCHEMA}.ranges VALUES
            (1, 'infinity', 'infinity', 'infinity', '24:00:00'),
            (2, '-infinity', '-infinity', '-infinity', '00:00:00'),
            (3, '2026-05-01', '2026-05-01 12:00:00', '2026-05-01 12:00:00+00', '12:30:00'),
            (4, NULL, NULL, NULL, NULL)"""
        )


HIGH = {
    "d": dt.date(9999, 12, 31),
    "ts": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    "tz": dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    "t": dt.time(23, 59, 59, 999999),
}
LOW = {
    "d": dt.date(1, 1, 1),
    "ts": dt.datetime(1, 1, 1),
    "tz": dt.datetime(1, 1, 1, tzinfo=dt.UTC),
    "t": dt.time(0, 0),
}


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_infinities_and_24h_are_clamped_to_values_engines_read(
    accelerator: str, tmp_path: Path
) -> None:
    _infinite_table()
    stream = f"{SCHEMA}-ranges"
    run(
        PostgresReader,
        ParquetWriter,
        source_config=_config(accelerator),
        destination_config={"path": str(tmp_path / "o")},
    )
    rows = {r["id"]: r for r in _rows(tmp_path / "o" / stream).to_pylist()}  # to_pylist works
    assert {k: rows[1][k] for k in HIGH} == HIGH
    assert {k: rows[2][k] for k in LOW} == LOW
    assert rows[3]["d"] == dt.date(2026, 5, 1) and rows[3]["t"] == dt.time(12, 30)
    assert all(rows[4][k] is None for k in HIGH)

    reader = PostgresReader()
    reader.open(_config(accelerator))
    with reader:
        info = next(s for s in reader.discover() if s.name == stream)
        batch = pa.Table.from_batches(list(reader.read(info, None))).combine_chunks()
    lines = encode_records(batch.to_batches()[0], stream).splitlines()
    records = {r["id"]: r for r in (json.loads(line)["record"] for line in lines)}
    assert records[1]["d"] == "9999-12-31"
    assert records[1]["t"].startswith("23:59:59.999999")
    assert records[2]["ts"].startswith("0001-01-01T00:00:00")
    assert not any(b"out of range" in line for line in lines)


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_infinities_as_null_when_asked(accelerator: str) -> None:
    _infinite_table()
    reader = PostgresReader()
    reader.open(_config(accelerator, infinity_values="null"))
    with reader:
        info = next(s for s in reader.discover() if s.name == f"{SCHEMA}-ranges")
        rows = {r["id"]: r for b in reader.read(info, None) for r in b.to_pylist()}
    assert all(rows[i][k] is None for i in (1, 4) for k in HIGH)
    assert all(rows[2][k] is None for k in ("d", "ts", "tz"))
    assert rows[2]["t"] == dt.time(0, 0)
