"""tap-dativo-postgres LOG_BASED into target-dativo-iceberg (upsert) on a real server with
wal_level = logical: after every run the Iceberg table equals the source table value for
value (hard deletes), or holds the deleted rows with ``_sdc_deleted_at`` and their last
values (soft deletes); a column added in the source evolves the table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dativo_bridge import run
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_iceberg.writer import IcebergWriter, open_catalog

from .postgres.server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_icecdc"
SLOT = "dativo_test_icecdc"
TABLE = "singer.dativo_icecdc_items"
LOG_BASED = {f"{SCHEMA}-*": {"replication-method": "LOG_BASED"}}


def _drop_slot(conn: psycopg.Connection) -> None:
    for (name,) in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s", [f"{SLOT}%"]
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
        _drop_slot(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")
        conn.execute(f"""CREATE TABLE {SCHEMA}.items (
            id bigint PRIMARY KEY, name text NOT NULL, price numeric(10, 2),
            at timestamptz, tags int[])""")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"""INSERT INTO {SCHEMA}.items
            SELECT g, 'item ' || g, g * 1.5, timestamptz '2026-01-01' + g * interval '1 hour',
                   ARRAY[g, g + 1]
            FROM generate_series(1, 2000) g""")
        # No toastable column: REPLICA IDENTITY DEFAULT, so a delete carries only the key.
        conn.execute(f"""CREATE TABLE {SCHEMA}.counts (
            id bigint PRIMARY KEY, n int NOT NULL, at timestamptz, ratio float8)""")
        conn.execute(f"""INSERT INTO {SCHEMA}.counts
            SELECT g, g * 10, timestamptz '2026-01-01' + g * interval '1 minute', g / 4.0
            FROM generate_series(1, 500) g""")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slot(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


class Mirror:
    """Runs of one pipeline from the source table into one Iceberg table."""

    def __init__(self, dsn: str, path: Path, hard_delete: bool) -> None:
        self.dsn = dsn
        self.store = LocalStateStore(path / "state")
        self.target = {
            "warehouse": str(path / "warehouse"),
            "load_method": "upsert",
            "hard_delete": hard_delete,
        }

    def run(self) -> None:
        run(
            PostgresReader,
            IcebergWriter,
            source_config={
                "dsn": self.dsn,
                "filter_schemas": [SCHEMA],
                "accelerator": "python",
                "replication_slot": SLOT,
                "max_parallelism": 1,
            },
            destination_config=self.target,
            state_store=self.store,
            state_id="test:icecdc",
            metadata=LOG_BASED,
        )

    def rows(self, table_name: str = TABLE) -> dict[Any, dict[str, Any]]:
        table = open_catalog(self.target).load_table(table_name).scan().to_arrow()
        rows = {r["id"]: r for r in table.to_pylist()}
        assert len(rows) == table.num_rows, "a key is in the table twice"
        return rows


def _source(dsn: str, table: str = "items") -> dict[Any, dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return {r["id"]: dict(r) for r in cur.execute(f"SELECT * FROM {SCHEMA}.{table}")}


def _own(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {k: {c: v for c, v in r.items() if not c.startswith("_sdc_")} for k, r in rows.items()}


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


CHANGES = (
    f"INSERT INTO {SCHEMA}.items VALUES (5001, 'new', 9.99, now(), '{{7}}')",
    f"UPDATE {SCHEMA}.items SET name = 'renamed', tags = NULL WHERE id = 5",
    f"DELETE FROM {SCHEMA}.items WHERE id = 6",
    f"UPDATE {SCHEMA}.items SET id = 6000 WHERE id = 7",  # a key change: delete + insert
    f"UPDATE {SCHEMA}.items SET price = price + 1 WHERE id BETWEEN 100 AND 300",
    f"DELETE FROM {SCHEMA}.items WHERE id BETWEEN 1500 AND 1600",
    # Deleted and inserted again, then updated twice, in one transaction.
    f"""BEGIN; DELETE FROM {SCHEMA}.items WHERE id = 9;
        INSERT INTO {SCHEMA}.items VALUES (9, 'back', 1, now(), NULL);
        UPDATE {SCHEMA}.items SET name = 'back twice' WHERE id = 9;
        UPDATE {SCHEMA}.items SET price = 2 WHERE id = 9; COMMIT""",
    f"""BEGIN; INSERT INTO {SCHEMA}.items VALUES (5002, 'short-lived', 1, now(), NULL);
        DELETE FROM {SCHEMA}.items WHERE id = 5002; COMMIT""",
)


def test_hard_delete_mirror_equals_the_source_after_every_run(items: str, tmp_path: Path) -> None:
    mirror = Mirror(items, tmp_path, hard_delete=True)
    mirror.run()
    assert _own(mirror.rows()) == _source(items)
    _execute(items, *CHANGES)
    mirror.run()
    rows = mirror.rows()
    assert _own(rows) == _source(items)
    assert all(r["_sdc_deleted_at"] is None for r in rows.values())
    assert rows[9]["name"] == "back twice"
    # Nothing new: the run commits no change and the table stays equal.
    mirror.run()
    assert _own(mirror.rows()) == _source(items)


def test_soft_delete_keeps_deleted_rows_with_their_last_values(items: str, tmp_path: Path) -> None:
    mirror = Mirror(items, tmp_path, hard_delete=False)
    mirror.run()
    before = _own(mirror.rows())
    _execute(items, *CHANGES)
    mirror.run()
    rows = mirror.rows()
    source = _source(items)
    live = {k: r for k, r in rows.items() if r["_sdc_deleted_at"] is None}
    assert _own(live) == source
    deleted = {k: r for k, r in rows.items() if r["_sdc_deleted_at"] is not None}
    assert set(deleted) == {6, 7, 5002, *range(1500, 1601)}
    for key in (6, 7, *range(1500, 1601)):
        assert _own({key: deleted[key]})[key] == before[key], f"row {key} lost its values"
    assert deleted[5002]["name"] == "short-lived"


def test_soft_deletes_carrying_only_the_key_keep_the_last_values(
    items: str, tmp_path: Path
) -> None:
    counts = "singer.dativo_icecdc_counts"
    mirror = Mirror(items, tmp_path, hard_delete=False)
    mirror.run()
    before = _own(mirror.rows(counts))
    assert before == _source(items, "counts")
    _execute(
        items,
        f"DELETE FROM {SCHEMA}.counts WHERE id BETWEEN 10 AND 19",
        f"UPDATE {SCHEMA}.counts SET n = -1 WHERE id = 20",
        f"DELETE FROM {SCHEMA}.counts WHERE id = 20",  # updated, then deleted: n = -1 kept
        f"""BEGIN; INSERT INTO {SCHEMA}.counts VALUES (900, 9, now(), 0.5);
            DELETE FROM {SCHEMA}.counts WHERE id = 900; COMMIT""",
    )
    mirror.run()
    rows = mirror.rows(counts)
    source = _source(items, "counts")
    assert _own({k: r for k, r in rows.items() if r["_sdc_deleted_at"] is None}) == source
    deleted = {k: r for k, r in rows.items() if r["_sdc_deleted_at"] is not None}
    assert set(deleted) == {*range(10, 21), 900}
    for key in range(10, 20):
        assert _own({key: deleted[key]})[key] == before[key], f"row {key} lost its values"
    assert deleted[20]["n"] == -1 and deleted[20]["ratio"] == before[20]["ratio"]
    assert deleted[900]["n"] == 9 and deleted[900]["ratio"] == 0.5


def test_a_column_added_in_the_source_evolves_the_table(items: str, tmp_path: Path) -> None:
    mirror = Mirror(items, tmp_path, hard_delete=True)
    mirror.run()
    _execute(
        items,
        f"UPDATE {SCHEMA}.items SET name = 'before' WHERE id = 1",
        f"ALTER TABLE {SCHEMA}.items ADD COLUMN colour text",
        f"INSERT INTO {SCHEMA}.items VALUES (3002, 'after', 1, now(), NULL, 'red')",
        f"UPDATE {SCHEMA}.items SET colour = 'blue' WHERE id = 2",
    )
    mirror.run()
    table = open_catalog(mirror.target).load_table(TABLE)
    assert "colour" in table.schema().column_names
    assert _own(mirror.rows()) == _source(items)
