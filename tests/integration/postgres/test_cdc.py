"""LOG_BASED streams of tap-dativo-postgres on a real server with wal_level = logical: the
initial copy and the change stream (docs/cdc.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.runner import RunResult
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_parquet.writer import ParquetWriter

from .server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_cdc"
STREAM = f"{SCHEMA}-items"
SLOT = "dativo_test_cdc"
LOG_BASED = {f"{SCHEMA}-*": {"replication-method": "LOG_BASED"}}


def _drop_slots(conn: psycopg.Connection) -> None:
    for (name,) in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'dativo_test_%'"
    ).fetchall():
        conn.execute("SELECT pg_drop_replication_slot(%s)", [name])


@pytest.fixture()
def items() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slots(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")
        conn.execute(f"""CREATE TABLE {SCHEMA}.items (
            id bigint PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
            at timestamptz, tags int[])""")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"""INSERT INTO {SCHEMA}.items
            SELECT g, 'item ' || g, g * 1.5, timestamptz '2026-01-01' + g * interval '1 hour',
                   ARRAY[g, g + 1]
            FROM generate_series(1, 1000) g""")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slots(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _config(dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "filter_schemas": [SCHEMA],
        "accelerator": "python",
        "replication_slot": SLOT,
        "max_parallelism": 1,
        **extra,
    }


class Runs:
    """Runs of one pipeline (state kept between them) into Parquet, and what landed."""

    def __init__(self, dsn: str, path: Path, **config: Any) -> None:
        self.dsn = dsn
        self.path = path
        self.store = LocalStateStore(path / "state")
        self.config = _config(dsn, **config)
        self.count = 0

    def run(self, **extra: Any) -> RunResult:
        self.count += 1
        return run(
            PostgresReader,
            ParquetWriter,
            source_config=self.config,
            destination_config={"path": str(self.path / f"out{self.count}")},
            state_store=self.store,
            state_id="test:cdc",
            metadata=LOG_BASED,
            **extra,
        )

    def landed(self, run: int | None = None, stream: str = STREAM) -> pa.Table:
        """Every row the runs (or run ``run``) wrote for ``stream``, in _sdc_lsn order."""
        runs = [run] if run else range(1, self.count + 1)
        files = [
            str(p)
            for n in runs
            for p in (self.path / f"out{n}").rglob("*.parquet")
            if stream in str(p) and not p.name.startswith(".")
        ]
        if not files:
            return pa.table({})
        table = ds.dataset(files).to_table()
        return table.sort_by([("_sdc_lsn", "ascending")])

    def state_lsn(self, stream: str = STREAM) -> int:
        state = self.store.get("test:cdc") or {}
        return int(state["bookmarks"][stream]["replication_key_value"])


def _mirror(changes: pa.Table, key: str = "id") -> dict[Any, dict[str, Any]]:
    """The table the change log describes (applied in _sdc_lsn order)."""
    rows: dict[Any, dict[str, Any]] = {}
    for row in changes.to_pylist():
        if row["_sdc_deleted_at"] is not None:
            if row[key] is None:
                rows.clear()  # a truncate
            else:
                rows.pop(row[key], None)
        else:
            rows[row[key]] = {k: v for k, v in row.items() if not k.startswith("_sdc_")}
    return rows


def _source(dsn: str) -> dict[Any, dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return {r["id"]: dict(r) for r in cur.execute(f"SELECT * FROM {SCHEMA}.items")}


def test_initial_copy_then_changes(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    first = runs.run()
    copy = runs.landed(1)
    assert copy.num_rows == 1000
    assert set(copy.column("_sdc_lsn").to_pylist()) == {runs.state_lsn()}
    assert copy.schema.field("price").type == pa.decimal128(10, 2)
    assert copy.schema.field("tags").type == pa.list_(pa.int32())
    assert first.state["bookmarks"][STREAM]["replication_key"] == "_sdc_lsn"
    with psycopg.connect(items, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (1001, 'new', 9.99, now(), '{{7}}')")
        conn.execute(f"UPDATE {SCHEMA}.items SET name = 'renamed', tags = NULL WHERE id = 5")
        conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id = 6")
        conn.execute(f"UPDATE {SCHEMA}.items SET id = 2000 WHERE id = 7")
    runs.run()
    changes = runs.landed(2)
    kinds = [(r["id"], r["_sdc_deleted_at"] is not None) for r in changes.to_pylist()]
    assert kinds == [(1001, False), (5, False), (6, True), (7, True), (2000, False)]
    assert changes.schema.field("price").type == pa.decimal128(10, 2)
    assert changes.schema == copy.schema
    assert pc.all(pc.greater(changes.column("_sdc_lsn"), copy.column("_sdc_lsn")[0])).as_py()
    assert _mirror(runs.landed()) == _source(items)
