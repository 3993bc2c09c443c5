"""LOG_BASED streams over TLS with the Rust replication client, against a server that
refuses plain TCP connections (tls_server, with ``wal_level = logical``): the walsender
session is encrypted, its batches are those of the Python path, and the certificate is
checked as sslmode says (docs/cdc.md, 'TLS')."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge import accel
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres.pgoutput import parse_lsn
from tap_dativo_postgres.reader import PostgresReader

from . import tls_server

pytestmark = pytest.mark.skipif(not accel.available(), reason="dativo_accel is not built")

SCHEMA = "cdc_tls"
STREAM = f"{SCHEMA}-items"
SLOT = "dativo_test_cdc_tls"


@pytest.fixture(scope="module")
def server() -> Iterator[tls_server.TlsServer]:
    if tls_server.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs a system PostgreSQL for the TLS tests (scripts/test.sh)")
        pytest.skip("no system PostgreSQL with TLS (apt-get install postgresql)")
    srv = tls_server.start()
    try:
        data = srv.directory / "data"
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("wal_level = logical\n")
        subprocess_args = [str(srv.bin / "pg_ctl"), "-D", str(data), "-l"]
        tls_server._run(
            [*subprocess_args, str(srv.directory / "log"), "-w", "-m", "fast", "restart"],
            srv.user,
        )
        with psycopg.connect(_dsn(srv), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(
                f"CREATE TABLE {SCHEMA}.items (id int PRIMARY KEY, name text, "
                "price numeric(10, 2), at timestamptz)"
            )
            conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
            conn.execute(
                f"INSERT INTO {SCHEMA}.items SELECT g, 'item ' || g, g * 1.5, "
                "timestamptz '2026-01-01' + g * interval '1 hour' FROM generate_series(1, 100) g"
            )
        yield srv
    finally:
        srv.stop()


def _dsn(srv: tls_server.TlsServer, host: str = "localhost") -> str:
    return srv.dsn(host, sslmode="verify-full", sslrootcert=str(srv.ca))


def _log_based(reader: PostgresReader) -> StreamInfo:
    stream = next(s for s in reader.discover() if s.name == STREAM)
    return reader.log_based_stream(dataclasses.replace(stream, replication_method="LOG_BASED"))


def _encrypted_walsenders(dsn: str) -> list[bool]:
    """pg_stat_ssl.ssl of every walsender of the Rust client."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            bool(ssl)
            for (ssl,) in conn.execute(
                "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) "
                "WHERE r.application_name = 'dativo_cdc'"
            ).fetchall()
        ]


def _read(dsn: str, accelerator: str, bookmark: Any) -> tuple[list[pa.RecordBatch], Any, Any]:
    """The stream's batches from ``bookmark``, the bookmark after them, and what
    pg_stat_ssl said of the walsender mid-read (None: no batch to look at)."""
    reader = PostgresReader()
    reader.open(
        {
            "dsn": dsn,
            "filter_schemas": [SCHEMA],
            "accelerator": accelerator,
            "replication_slot": SLOT,
            "max_parallelism": 1,
            "cdc_batch_rows": 3,  # several batches: the read is under way at the first
        }
    )
    try:
        assert reader.accelerator == accelerator
        stream = _log_based(reader)
        batches, seen = [], None
        for batch in reader.read(stream, bookmark):
            if seen is None and bookmark is not None:
                seen = _encrypted_walsenders(dsn)
            bookmark = reader.bookmark(stream, batch, bookmark)
            batches.append(batch)
        return batches, bookmark, seen
    finally:
        reader.close()


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def _rows(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    while batches and batches[-1].num_rows == 0:  # the last empty one releases the WAL end
        batches = batches[:-1]
    return batches


def test_the_rust_client_streams_over_tls_with_the_python_batches(
    server: tls_server.TlsServer,
) -> None:
    dsn = _dsn(server)
    try:
        copy, start, _ = _read(dsn, "python", None)  # the slot and the initial copy
        assert sum(b.num_rows for b in copy) == 100
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(1, 11):  # ten transactions: batches of three rows
                conn.execute(f"UPDATE {SCHEMA}.items SET price = price + 1 WHERE id = %s", [i])
            conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (500, 'new', 1, now())")
            conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id BETWEEN 20 AND 24")
        python, _, python_seen = _read(dsn, "python", start)
        rust, _, rust_seen = _read(dsn, "rust", start)
        assert python_seen == []  # the Python path peeks over a plain session
        assert rust_seen == [True]  # one walsender, encrypted
        got, want = _rows(rust), _rows(python)
        assert len(got) == len(want) > 1
        assert [_ipc(b) for b in got] == [_ipc(b) for b in want]
        assert sum(b.num_rows for b in got) == 10 + 1 + 5
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
            ).fetchone():
                conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
            conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def test_the_certificate_is_checked_as_sslmode_says(server: tls_server.TlsServer) -> None:
    import dativo_accel

    dsn = _dsn(server)
    slot = f"{SLOT}_cert"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP PUBLICATION IF EXISTS {slot}")
        conn.execute(f"CREATE PUBLICATION {slot} FOR TABLE {SCHEMA}.items")
        row = conn.execute(
            "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", [slot]
        ).fetchone()
        assert row is not None
        at = parse_lsn(row[0])
        flush = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert flush is not None
        upto = parse_lsn(flush[0])

    def stream(host: str, tls: dict[str, str] | None, sslmode: str = "require") -> int:
        target = f"host={host} port={server.port} user=postgres dbname=postgres sslmode={sslmode}"
        reader = dativo_accel.ReplicationReader(target, slot, slot, at, upto, at, tls=tls)
        try:
            return sum(len(chunk) for chunk in reader)
        finally:
            reader.close()

    try:
        verify_full = {"mode": "verify-full", "root_cert": str(server.ca)}
        assert stream("localhost", verify_full) >= 0  # the name the certificate has
        # The certificate names localhost only: reached by address, verify-full refuses.
        with pytest.raises(
            dativo_accel.ConnectError, match=r"TLS handshake with 127\.0\.0\.1: .*(?i:name)"
        ):
            stream("127.0.0.1", verify_full)
        # verify-ca checks the chain, not the name.
        assert stream("127.0.0.1", {"mode": "verify-ca", "root_cert": str(server.ca)}) >= 0
        with pytest.raises(dativo_accel.ConnectError, match="TLS handshake"):
            stream("localhost", {"mode": "verify-ca", "root_cert": str(server.other_ca)})
        # No TLS settings: sslmode=require is refused, and plain TCP is refused by the server.
        with pytest.raises(ValueError, match="sslmode=require"):
            stream("localhost", None)
        with pytest.raises(dativo_accel.ConnectError, match=r"no encryption|pg_hba"):
            stream("localhost", None, sslmode="disable")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            conn.execute(f"DROP PUBLICATION {slot}")
