"""The Rust replication client (``dativo_accel.ReplicationReader``, START_REPLICATION over
a walsender connection) against the Python path (``pg_logical_slot_peek_binary_changes``):
the same pgoutput messages, the same batches, and a slot it never confirms."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge import accel
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres.accel import rust_dsn
from tap_dativo_postgres.pgoutput import format_lsn, parse_lsn
from tap_dativo_postgres.reader import PostgresReader

from .server import fresh_schema, logical_decoding_missing, pg_dsn

pytestmark = pytest.mark.skipif(not accel.available(), reason="dativo_accel is not built")

SCHEMA = "dativo_cdc_rust"
SLOT = "dativo_test_cdc_rust"
#: An incompressible value well above the TOAST threshold (stored out of line).
BIG = "md5(g::text) || " + " || ".join(f"md5((g * {i})::text)" for i in range(2, 200))


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _slot(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            [SLOT],
        ).fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _flush(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def _cleanup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'dativo_test_%'"
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


@pytest.fixture()
def dsn() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    _cleanup(dsn)
    _execute(
        dsn,
        f"""CREATE TABLE {SCHEMA}.items (id bigint PRIMARY KEY, name text NOT NULL,
            price numeric(10, 2), at timestamptz, tags int[], doc text)""",
        f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL",
        f"CREATE TABLE {SCHEMA}.other (k int PRIMARY KEY, v double precision)",
        f"ALTER TABLE {SCHEMA}.other REPLICA IDENTITY FULL",
        f"""INSERT INTO {SCHEMA}.items SELECT g, 'item ' || g, g * 1.5,
            timestamptz '2026-01-01' + g * interval '1 hour', ARRAY[g, g + 1],
            CASE WHEN g <= 3 THEN {BIG} END FROM generate_series(1, 200) g""",
        f"INSERT INTO {SCHEMA}.other SELECT g, g / 3.0 FROM generate_series(1, 5) g",
        # REPLICA IDENTITY DEFAULT: deletes and key changes carry only the key ('K').
        f"CREATE TABLE {SCHEMA}.keyed (k int PRIMARY KEY, n int, d date)",
        f"INSERT INTO {SCHEMA}.keyed SELECT g, g, date '2026-01-01' + g FROM generate_series(1, 5) g",
    )
    yield dsn
    _cleanup(dsn)


def _config(dsn: str, accelerator: str) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "filter_schemas": [SCHEMA],
        "accelerator": accelerator,
        "replication_slot": SLOT,
        "max_parallelism": 1,
        "cdc_batch_rows": 4,  # several batches: their boundaries must match too
    }


def _log_based(reader: PostgresReader, name: str) -> StreamInfo:
    stream = next(s for s in reader.discover() if s.name == name)
    return reader.log_based_stream(dataclasses.replace(stream, replication_method="LOG_BASED"))


def _walsenders(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'dativo_cdc'"
        ).fetchone()
    return int(row[0]) if row else 0


def _read(dsn: str, accelerator: str, bookmarks: dict[str, Any]) -> dict[str, list[Any]]:
    """Each stream's (batch, bookmark after it) pairs from ``bookmarks``, without
    acknowledging anything (the reader's close confirms only the LSNs it started from)."""
    reader = PostgresReader()
    reader.open(_config(dsn, accelerator))
    try:
        out: dict[str, list[Any]] = {}
        for name in (f"{SCHEMA}-items", f"{SCHEMA}-other", f"{SCHEMA}-keyed"):
            stream = _log_based(reader, name)
            previous = bookmarks.get(name)
            pairs = []
            resumed = previous is not None
            for batch in reader.read(stream, previous):
                if resumed and not pairs:
                    # Mid-read: the Rust path streams over a walsender, the Python one not.
                    assert _walsenders(dsn) == (1 if accelerator == "rust" else 0), accelerator
                previous = reader.bookmark(stream, batch, previous)
                pairs.append((batch, previous))
            out[name] = pairs
        return out
    finally:
        reader.close()


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def _data(pairs: list[Any]) -> list[Any]:
    while pairs and pairs[-1][0].num_rows == 0:
        pairs = pairs[:-1]
    return pairs


def test_the_rust_and_python_paths_give_the_same_batches(dsn: str) -> None:
    first = _read(dsn, "python", {})  # creates the slot; the initial copies
    start = {name: pairs[-1][1] for name, pairs in first.items()}
    assert all(isinstance(v, int) for v in start.values())
    _execute(
        dsn,
        f"INSERT INTO {SCHEMA}.items VALUES (1001, 'new', 2.5, now(), ARRAY[7], NULL)",
        f"UPDATE {SCHEMA}.items SET price = price + 1 WHERE id BETWEEN 10 AND 19",
        f"UPDATE {SCHEMA}.items SET id = 5000 WHERE id = 20",  # the key changes
        f"DELETE FROM {SCHEMA}.items WHERE id BETWEEN 30 AND 34",
        # An update leaving the TOASTed doc unchanged (pgoutput's 'u' marker).
        f"UPDATE {SCHEMA}.items SET name = 'renamed' WHERE id <= 3",
        # A multi-table transaction.
        f"""BEGIN; INSERT INTO {SCHEMA}.other VALUES (6, 'NaN');
            UPDATE {SCHEMA}.items SET tags = NULL WHERE id = 40;
            DELETE FROM {SCHEMA}.other WHERE k = 1; COMMIT""",
        # Rolled back: never appears.
        f"BEGIN; INSERT INTO {SCHEMA}.items VALUES (9999, 'gone', 0, now(), NULL, NULL); ROLLBACK",
        f"TRUNCATE {SCHEMA}.other",
        f"UPDATE {SCHEMA}.keyed SET n = NULL WHERE k = 1",
        f"UPDATE {SCHEMA}.keyed SET k = 50 WHERE k = 2",
        f"DELETE FROM {SCHEMA}.keyed WHERE k = 3",
        f"INSERT INTO {SCHEMA}.other VALUES (7, -0.0)",
        # One transaction larger than a batch.
        f"""INSERT INTO {SCHEMA}.items SELECT g, 'bulk', g, now(), ARRAY[g], NULL
            FROM generate_series(2001, 2010) g""",
    )
    python = _read(dsn, "python", start)
    rust = _read(dsn, "rust", start)
    for name in python:
        # A last empty batch releases the WAL end the read saw (it differs between the
        # reads: the first one wrote WAL, its temporary table); the rest must be equal.
        got, want = _data(rust[name]), _data(python[name])
        assert len(got) == len(want) >= 1, name
        for (g, g_mark), (w, w_mark) in zip(got, want, strict=True):
            assert g.schema.equals(w.schema, check_metadata=True), name
            # Byte for byte (Arrow's equals has NaN != NaN and -0.0 == 0.0).
            assert _ipc(g) == _ipc(w), f"{name}: {g.to_pylist()} != {w.to_pylist()}"
            assert g_mark == w_mark, name
    items = pa.Table.from_batches([b for b, _ in rust[f"{SCHEMA}-items"]]).to_pylist()
    assert 9999 not in [r["id"] for r in items]
    toasted = [r for r in items if r["name"] == "renamed"]
    assert len(toasted) == 3 and all(r["doc"] and len(r["doc"]) > 6000 for r in toasted)
    assert [r["id"] for r in items if r["_sdc_deleted_at"] is not None] == [20, 30, 31, 32, 33, 34]
    other = pa.Table.from_batches([b for b, _ in rust[f"{SCHEMA}-other"]]).to_pylist()
    truncate = [r for r in other if r["k"] is None]
    assert len(truncate) == 1 and truncate[0]["_sdc_deleted_at"] is not None
    assert [r["k"] for r in other] == [6, 1, None, 7]
    keyed = pa.Table.from_batches([b for b, _ in rust[f"{SCHEMA}-keyed"]]).to_pylist()
    assert [(r["k"], r["n"], r["_sdc_deleted_at"] is not None) for r in keyed] == [
        (1, None, False),
        (2, None, True),
        (50, 2, False),
        (3, None, True),
    ]
    # Neither read was acknowledged: the slot is where the initial copies left it.
    assert _slot(dsn) == min(start.values())


def _peek(dsn: str, upto: int) -> list[bytes]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            bytes(row[0])
            for row in conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
                "'proto_version', '1', 'publication_names', %s)",
                [SLOT, format_lsn(upto), SLOT],
            )
        ]


def _stream(dsn: str, start: int, upto: int, confirmed: int) -> tuple[list[bytes], Any]:
    import dativo_accel

    with psycopg.connect(dsn) as conn:
        target = rust_dsn(conn)
    assert target is not None
    reader = dativo_accel.ReplicationReader(target, SLOT, SLOT, start, upto, confirmed)
    try:
        return [m for chunk in reader for _, m in chunk], reader
    finally:
        reader.close()


def _wait_free(dsn: str) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active_pid IS NOT NULL",
            [SLOT],
        ).fetchone():
            assert time.monotonic() < deadline, "the slot stayed in use"
            time.sleep(0.05)


def test_the_stream_ends_where_a_peek_to_the_same_lsn_ends(dsn: str) -> None:
    _execute(
        dsn,
        f"CREATE PUBLICATION {SLOT} FOR TABLE {SCHEMA}.items, {SCHEMA}.other",
        f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')",
    )
    confirmed = _slot(dsn)
    _execute(
        dsn,
        f"UPDATE {SCHEMA}.items SET price = 0 WHERE id < 50",
        # WAL after the commit and before the next transaction: the end is then not a
        # commit's end (the stream must stop at the next transaction's Begin).
        "SELECT pg_logical_emit_message(false, 'dativo_test', 'gap')",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    middle = parse_lsn(row[0])
    _execute(dsn, f"DELETE FROM {SCHEMA}.items WHERE id < 50", f"TRUNCATE {SCHEMA}.other")
    end = _flush(dsn)
    for upto in (middle, end):
        want = _peek(dsn, upto)
        got, _ = _stream(dsn, confirmed, upto, confirmed)
        _wait_free(dsn)
        assert got == want, f"upto {format_lsn(upto)}: {len(got)} != {len(want)} messages"
    assert len(_peek(dsn, middle)) < len(_peek(dsn, end))


def test_status_updates_never_confirm_past_the_acknowledged_lsn(dsn: str) -> None:
    _execute(
        dsn,
        f"CREATE PUBLICATION {SLOT} FOR TABLE {SCHEMA}.items",
        f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')",
    )
    confirmed = _slot(dsn)
    _execute(dsn, f"UPDATE {SCHEMA}.items SET price = 0 WHERE id < 100")
    # A read that waits for WAL not written yet: the client goes quiet, sends status
    # updates, and the server answers with keepalives past what was confirmed.
    upto = _flush(dsn) + 1
    writer = threading.Timer(
        1.5, _execute, [dsn, f"UPDATE {SCHEMA}.items SET price = 1 WHERE id = 1"]
    )
    writer.start()
    try:
        messages, reader = _stream(dsn, confirmed, upto, confirmed)
    finally:
        writer.join()
    _wait_free(dsn)
    assert len(messages) > 100
    assert reader.status_updates >= 2
    assert reader.server_lsn > confirmed
    assert _slot(dsn) == confirmed, (
        f"the slot moved to {format_lsn(_slot(dsn))} from {format_lsn(confirmed)}"
    )
    assert reader.reported_lsn == confirmed
