"""LOG_BASED streams of tap-dativo-postgres on a real server with wal_level = logical: the
initial copy and the change stream (docs/cdc.md)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.errors import ConfigError, ReadError, WriteError
from dativo_bridge.interfaces import StreamInfo
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


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _slot_lsn(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [SLOT],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_writes_during_the_initial_copy_are_neither_lost_nor_doubled(
    items: str, tmp_path: Path
) -> None:
    _execute(
        items,
        f"""INSERT INTO {SCHEMA}.items SELECT g, repeat('n', 300), g, now(), NULL
            FROM generate_series(1001, 40000) g""",
    )
    stop = threading.Event()
    written: list[int] = []

    def churn(k: int) -> None:
        with psycopg.connect(items, autocommit=True) as conn:
            n = k
            while not stop.is_set():
                n += 2
                conn.execute(
                    f"INSERT INTO {SCHEMA}.items VALUES (%s, 'live', 1, now(), NULL)",
                    [100_000 + n],
                )
                if n % 4 == 0:
                    conn.execute(
                        f"UPDATE {SCHEMA}.items SET name = 'upd' || %s WHERE id = %s", [n, n]
                    )
                    conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id = %s", [20_000 + n])
                written.append(n)

    runs = Runs(items, tmp_path, batch_size_bytes=64 * 1024)
    threads = [threading.Thread(target=churn, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    try:
        runs.run()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert written, "no write happened during the run"
    runs.run()
    changes = runs.landed()
    mirror = _mirror(changes)
    source = _source(items)
    assert mirror.keys() == source.keys(), "rows lost or left over"
    assert mirror == source
    # Every change once: one row per (key, LSN).
    pairs = list(
        zip(changes.column("id").to_pylist(), changes.column("_sdc_lsn").to_pylist(), strict=True)
    )
    assert len(pairs) == len(set(pairs)), "a change was delivered twice"
    # Rows inserted during the run (never changed after): each exactly once, in the
    # initial copy (committed before its snapshot) or in the changes (after it), not both.
    live = [i for i in changes.column("id").to_pylist() if i >= 100_000]
    assert len(live) == len(set(live)), "a row inserted during the copy came twice"


def test_rolled_back_and_multi_table_transactions(items: str, tmp_path: Path) -> None:
    _execute(items, f"CREATE TABLE {SCHEMA}.other (id int PRIMARY KEY, v int)")
    runs = Runs(items, tmp_path)
    runs.run()
    with psycopg.connect(items) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (5000, 'gone', 1, now(), NULL)")
        conn.execute(f"INSERT INTO {SCHEMA}.other VALUES (1, 1)")
        conn.rollback()
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (5001, 'both', 1, now(), NULL)")
        conn.execute(f"UPDATE {SCHEMA}.items SET name = 'both too' WHERE id = 1")
        conn.execute(f"INSERT INTO {SCHEMA}.other VALUES (2, 2)")
        conn.commit()
    runs.run()
    items_changes = runs.landed(2).to_pylist()
    other = runs.landed(2, f"{SCHEMA}-other").to_pylist()
    assert [r["id"] for r in items_changes] == [5001, 1]
    assert [r["id"] for r in other] == [2]
    lsns = {r["_sdc_lsn"] for r in items_changes} | {r["_sdc_lsn"] for r in other}
    assert len(lsns) == 1, "one transaction, one commit LSN in both tables"
    assert 5000 not in _mirror(runs.landed())


def test_unchanged_toasted_values_are_kept(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    big = "0cc175b9c0f1b6a831c399e269772661" * 20000
    _execute(
        items,
        f"UPDATE {SCHEMA}.items SET name = repeat(md5('a'), 20000) WHERE id = 1",
        f"UPDATE {SCHEMA}.items SET price = 1 WHERE id = 1",  # name unchanged, TOASTed
        f"UPDATE {SCHEMA}.items SET id = 4000 WHERE id = 1",  # the key, name unchanged
    )
    runs.run()
    rows = runs.landed(2).to_pylist()
    assert [(r["id"], r["_sdc_deleted_at"] is not None) for r in rows] == [
        (1, False),
        (1, False),
        (1, True),
        (4000, False),
    ]
    assert [r["name"] == big for r in rows] == [True, True, True, True]
    assert _mirror(runs.landed()) == _source(items)


def test_truncate_is_a_truncate_record_in_commit_order(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    copied = runs.state_lsn()
    _execute(
        items,
        f"DELETE FROM {SCHEMA}.items WHERE id = 1",
        f"TRUNCATE {SCHEMA}.items",
        f"INSERT INTO {SCHEMA}.items VALUES (1, 'after', 2, now(), NULL)",
    )
    runs.run()
    changes = runs.landed(2)
    assert [(r["id"], r["_sdc_deleted_at"] is not None) for r in changes.to_pylist()] == [
        (1, True),
        (None, True),  # the truncate record: every column null, deleted
        (1, False),
    ]
    assert runs.state_lsn() > copied
    assert _mirror(runs.landed()) == _source(items)


def test_replica_identity_default_with_toastable_columns_is_refused(
    items: str, tmp_path: Path
) -> None:
    _execute(items, f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY DEFAULT")
    with pytest.raises(ConfigError, match=r"REPLICA IDENTITY FULL") as info:
        Runs(items, tmp_path).run()
    assert "name" in str(info.value)
    _execute(items, f"CREATE TABLE {SCHEMA}.nokey (v int)", f"DROP TABLE {SCHEMA}.items")
    with pytest.raises(ConfigError, match=r"without a primary key.*REPLICA IDENTITY FULL"):
        Runs(items, tmp_path).run()


def _log_based(reader: PostgresReader, name: str = STREAM) -> StreamInfo:
    stream = next(s for s in reader.discover() if s.name == name)
    return reader.log_based_stream(dataclasses.replace(stream, replication_method="LOG_BASED"))


def test_a_column_added_mid_stream_comes_with_a_new_schema(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    _execute(
        items,
        f"INSERT INTO {SCHEMA}.items VALUES (3001, 'before', 1, now(), NULL)",
        f"ALTER TABLE {SCHEMA}.items ADD COLUMN colour text",
        f"INSERT INTO {SCHEMA}.items VALUES (3002, 'after', 1, now(), NULL, 'red')",
    )
    runs.run()  # discovers the column: its SCHEMA has it, older changes have it null
    second = runs.landed(2)
    assert second.column("id").to_pylist() == [3001, 3002]
    assert second.column("colour").to_pylist() == [None, "red"]
    # A column added while a read is under way (after its discovery): the read stops
    # before the first change that has it; the next run's SCHEMA has it.
    state_lsn = runs.state_lsn()
    reader = PostgresReader()
    reader.open(_config(items))
    try:
        stream = _log_based(reader)
        _execute(
            items,
            f"INSERT INTO {SCHEMA}.items VALUES (3003, 'before', 1, now(), NULL, 'blue')",
            f"ALTER TABLE {SCHEMA}.items ADD COLUMN size int",
            f"INSERT INTO {SCHEMA}.items VALUES (3004, 'after', 1, now(), NULL, 'red', 4)",
        )
        batches = list(reader.read(stream, state_lsn))
        rows = pa.Table.from_batches(batches, schema=stream.schema).to_pylist()
        assert [r["id"] for r in rows] == [3003]
        assert "size" not in stream.schema.names
        stopped_at = reader.bookmark(stream, batches[-1], state_lsn)
        assert rows[0]["_sdc_lsn"] == stopped_at
    finally:
        reader.close()
    runs.store.put(
        "test:cdc",
        {
            "bookmarks": {
                STREAM: {"replication_key": "_sdc_lsn", "replication_key_value": stopped_at}
            }
        },
    )
    runs.run()
    third = runs.landed(3)
    assert third.column("id").to_pylist() == [3004]
    assert third.column("size").to_pylist() == [4]


def test_slot_confirmed_only_to_durable_lsns_and_lag_after_acknowledge(
    items: str, tmp_path: Path
) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    copied = runs.state_lsn()
    _execute(items, f"UPDATE {SCHEMA}.items SET price = 0 WHERE id < 10")
    second = runs.run()
    read = runs.state_lsn()
    assert read > copied
    # The runner acknowledged each STATE its destination committed: the slot is there.
    assert _slot_lsn(items) == read
    assert second.replication_lag is not None and second.replication_lag < 256 * 1024
    _execute(items, f"UPDATE {SCHEMA}.items SET price = 1 WHERE id < 10")
    # A reader on its own: what it read is durable only once acknowledged.
    reader = PostgresReader()
    reader.open(_config(items))
    try:
        reader.acknowledge({"bookmarks": {}})  # nothing read by this reader: no change
        assert _slot_lsn(items) == read
        stream = _log_based(reader)
        batches = list(reader.read(stream, read))
        lsns = [v for b in batches for v in b.column("_sdc_lsn").to_pylist()]
        assert lsns and min(lsns) > read
        assert _slot_lsn(items) == read
        state = {
            "bookmarks": {
                stream.name: {"replication_key": "_sdc_lsn", "replication_key_value": max(lsns)}
            }
        }
        lag = reader.acknowledge(state)
        assert _slot_lsn(items) == max(lsns)
        assert lag is not None and lag < 256 * 1024, f"lag {lag}"
        assert reader.replication_lag() == lag
    finally:
        reader.close()


def test_a_slot_confirmed_past_the_state_fails_loudly(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    _execute(items, f"UPDATE {SCHEMA}.items SET price = 0 WHERE id < 10")
    with psycopg.connect(items, autocommit=True) as conn:
        conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", [SLOT])
    with pytest.raises(ReadError, match=r"past the state's LSN"):
        runs.run()
    with psycopg.connect(items, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
    with pytest.raises(ReadError, match=r"does not exist"):
        runs.run()


def test_missing_privilege_and_publication_are_named(items: str, tmp_path: Path) -> None:
    _execute(
        items,
        "DROP ROLE IF EXISTS dativo_cdc_reader",
        "CREATE ROLE dativo_cdc_reader LOGIN",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO dativo_cdc_reader",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO dativo_cdc_reader",
    )
    with pytest.raises(ConfigError, match=r'ALTER ROLE "dativo_cdc_reader" REPLICATION'):
        Runs(items, tmp_path, user="dativo_cdc_reader").run()
    with pytest.raises(ConfigError, match=r"CREATE PUBLICATION \"mine\" FOR TABLE"):
        Runs(items, tmp_path, publication="mine").run()
    _execute(items, "ALTER ROLE dativo_cdc_reader REPLICATION")
    with pytest.raises(ConfigError, match=r"cannot create publication.*must own"):
        Runs(items, tmp_path, user="dativo_cdc_reader").run()


@pytest.mark.parametrize("accelerator", ["python", "rust"])
def test_parallel_initial_copy_in_the_slot_snapshot(
    items: str, tmp_path: Path, accelerator: str
) -> None:
    from dativo_bridge import accel

    if accelerator == "rust" and not accel.available():
        pytest.skip("dativo_accel is not installed")
    _execute(
        items,
        f"""INSERT INTO {SCHEMA}.items SELECT g, repeat('p', 300), g, now(), ARRAY[g]
            FROM generate_series(1001, 20000) g""",
    )
    stop = threading.Event()

    def churn() -> None:
        with psycopg.connect(items, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute(
                    f"INSERT INTO {SCHEMA}.items VALUES (%s, 'live', 1, now(), NULL)",
                    [100_000 + n],
                )

    runs = Runs(
        items, tmp_path, accelerator=accelerator, max_parallelism=3, pages_per_partition=100
    )
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        runs.run()
    finally:
        stop.set()
        thread.join()
    runs.run()
    changes = runs.landed()
    assert _mirror(changes) == _source(items)
    ids = changes.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a row came twice"


def test_follow_keeps_reading_new_changes(items: str, tmp_path: Path) -> None:
    runs = Runs(items, tmp_path)
    runs.run()
    reader = PostgresReader()
    reader.open(_config(items, cdc_stop="follow"))
    try:
        stream = _log_based(reader)
        batches = reader.read(stream, runs.state_lsn())
        _execute(items, f"INSERT INTO {SCHEMA}.items VALUES (7001, 'one', 1, now(), NULL)")
        seen: list[int] = []
        deadline = time.monotonic() + 30
        for batch in batches:
            seen += batch.column("id").to_pylist()
            if seen == [7001]:
                _execute(items, f"INSERT INTO {SCHEMA}.items VALUES (7002, 'two', 1, now(), NULL)")
            if len(seen) == 2 or time.monotonic() > deadline:
                break
        batches.close()
        assert seen == [7001, 7002], "follow stopped at the end of the WAL"
    finally:
        reader.close()


def test_a_server_without_logical_decoding_is_named(tmp_path: Path) -> None:
    import shutil
    import tempfile

    import pgserver

    # Its own directory, as server.py's: pytest's temporary directories are rotated by
    # concurrent sessions.
    directory = tempfile.mkdtemp(prefix="dativo-pg-replica-")
    server = pgserver.get_server(directory, cleanup_mode="stop")
    try:
        dsn = server.get_uri()
        _execute(
            dsn, "CREATE SCHEMA dativo_cdc", "CREATE TABLE dativo_cdc.items (id int PRIMARY KEY)"
        )
        with pytest.raises(ConfigError, match=r"wal_level = logical.*ALTER SYSTEM SET wal_level"):
            Runs(dsn, tmp_path).run()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


class FailingParquetWriter(ParquetWriter):
    """Fails on its third write, like a destination going away mid-copy."""

    def open(self, config: Any, stream: StreamInfo) -> None:
        super().open(config, stream)
        self.writes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.writes += 1
        if self.writes == 3:
            raise WriteError("destination went away")
        super().write(batch)


def test_an_interrupted_initial_copy_releases_no_lsn(items: str, tmp_path: Path) -> None:
    _execute(
        items,
        f"""INSERT INTO {SCHEMA}.items SELECT g, repeat('c', 300), g, now(), NULL
            FROM generate_series(1001, 5000) g""",
    )
    store = LocalStateStore(tmp_path / "state")
    common: dict[str, Any] = {
        "state_store": store,
        "state_id": "test:cdc",
        "metadata": LOG_BASED,
        "checkpoint_rows": 100,
        "source_config": _config(items, batch_size_bytes=16 * 1024),
    }
    with pytest.raises(WriteError):
        run(
            PostgresReader,
            FailingParquetWriter,
            destination_config={"path": str(tmp_path / "out1")},
            **common,
        )
    saved = store.get("test:cdc") or {}
    assert STREAM not in (saved.get("bookmarks") or {}), "an LSN before the copy was whole"
    run(
        PostgresReader,
        ParquetWriter,
        destination_config={"path": str(tmp_path / "out2")},
        **common,
    )
    files = [str(p) for p in (tmp_path / "out2").rglob("*.parquet") if not p.name.startswith(".")]
    ids = ds.dataset(files).to_table().column("id").to_pylist()
    assert sorted(ids) == list(range(1, 5001))


def test_a_table_without_key_under_replica_identity_full_is_a_change_log(
    items: str, tmp_path: Path
) -> None:
    _execute(
        items,
        f"CREATE TABLE {SCHEMA}.events (kind text, n int)",
        f"ALTER TABLE {SCHEMA}.events REPLICA IDENTITY FULL",
        f"INSERT INTO {SCHEMA}.events VALUES ('a', 1), ('b', 2)",
    )
    runs = Runs(items, tmp_path)
    runs.run()
    _execute(items, f"UPDATE {SCHEMA}.events SET n = 3 WHERE kind = 'a'")
    _execute(items, f"DELETE FROM {SCHEMA}.events WHERE kind = 'b'")
    runs.run()
    rows = runs.landed(2, f"{SCHEMA}-events").to_pylist()
    assert [(r["kind"], r["n"], r["_sdc_deleted_at"] is not None) for r in rows] == [
        ("a", 3, False),
        ("b", 2, True),
    ]


def test_acknowledge_waits_for_every_stream_read(items: str, tmp_path: Path) -> None:
    _execute(items, f"CREATE TABLE {SCHEMA}.other (id int PRIMARY KEY, v int)")
    runs = Runs(items, tmp_path)
    first = runs.run()
    before = _slot_lsn(items)
    _execute(items, f"INSERT INTO {SCHEMA}.other VALUES (1, 1)")
    reader = PostgresReader()
    reader.open(_config(items))
    try:
        items_stream = _log_based(reader)
        other = _log_based(reader, f"{SCHEMA}-other")
        bookmarks = first.state["bookmarks"]
        list(reader.read(items_stream, bookmarks[STREAM]["replication_key_value"]))
        list(reader.read(other, None))  # a new initial copy: no LSN in a state yet
        partial = {"bookmarks": {STREAM: bookmarks[STREAM]}}
        reader.acknowledge(partial)
        assert _slot_lsn(items) == before, "confirmed while a stream read had no LSN"
        copied = reader.bookmark(other, pa.RecordBatch.from_pylist([]), None)
        both = {
            "bookmarks": {
                STREAM: bookmarks[STREAM],
                f"{SCHEMA}-other": {"replication_key": "_sdc_lsn", "replication_key_value": copied},
            }
        }
        reader.acknowledge(both)
        smallest = min(int(bookmarks[STREAM]["replication_key_value"]), int(copied))
        assert _slot_lsn(items) == max(before, smallest)
    finally:
        reader.close()


def test_changes_have_the_types_and_values_of_a_full_table_read(tmp_path: Path) -> None:
    from .test_types import DDL, ROWS

    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    schema = fresh_schema("dativo_cdc_types")
    dsn = pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slots(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")
        conn.execute(DDL.format(s=schema))
        conn.execute(f"ALTER TABLE {schema}.all_types REPLICA IDENTITY FULL")
    stream_name = f"{schema}-all_types"
    config = {**_config(dsn), "filter_schemas": [schema]}
    store = LocalStateStore(tmp_path / "state")
    for n in (1, 2):
        run(
            PostgresReader,
            ParquetWriter,
            source_config=config,
            destination_config={"path": str(tmp_path / f"out{n}")},
            state_store=store,
            state_id="test:types",
            metadata={stream_name: {"replication-method": "LOG_BASED"}},
            select=[f"{stream_name}.*"],
        )
        if n == 1:
            _execute(dsn, f"INSERT INTO {schema}.all_types VALUES " + ", ".join(ROWS[:3]))
    reader = PostgresReader()
    reader.open(config)
    try:
        full = next(s for s in reader.discover() if s.name == stream_name)
        expected = pa.Table.from_batches(list(reader.read(full, None)), schema=full.schema)
    finally:
        reader.close()
    files = [str(p) for p in (tmp_path / "out2").rglob("*.parquet") if not p.name.startswith(".")]
    landed = ds.dataset(files).to_table().sort_by("id")
    for field in full.schema:
        assert landed.schema.field(field.name).type == field.type, field.name
        got = landed.column(field.name).to_pylist()
        want = expected.sort_by("id").column(field.name).to_pylist()
        assert _same(got, want), f"column {field.name}: {got} != {want}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slots(conn)
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _same(got: list[Any], want: list[Any]) -> bool:
    """Equal, NaN equal to NaN."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            if not _same(a, b):
                return False
            continue
        if a != b:
            return False
    return True
