"""LOG_BASED streams of tap-dativo-postgres: an initial copy in a snapshot consistent with
the pipeline's replication slot, then the table's changes from the slot (cdc.py).

The handover has no gap and no duplicate. The pipeline's slot is created (if missing)
before anything is read; a stream without an LSN in its state then takes its initial copy
in the snapshot a temporary slot exports, whose consistent point C is after the pipeline
slot's position: the copy holds every transaction that committed before C, the stream goes
on with those that committed after it (``_sdc_lsn`` > C), and its bookmark is C only once
the whole copy was yielded. A stream with an LSN resumes after it.

One slot per pipeline: unless ``replication_slot`` names one, the slot is derived from the
database and the pipeline's state id (slot.choose_slot), so two pipelines reading one
database never confirm each other's slot; a pipeline resuming on the slot of the earlier
default (derived from the tap's name) keeps it.

Acknowledge only what is durable: the slot is confirmed (``pg_replication_slot_advance``)
to the smallest LSN of the LOG_BASED bookmarks of a STATE the destination committed, never
to a position merely read: :meth:`LogBasedReads.acknowledge` (``dativo run`` after each
commit) and, at close, the LSNs of the state the run started from (on every path). A slot
confirmed past a state's LSN means someone else consumed changes this pipeline needs: the
read fails loudly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres import slot as pgslot
from tap_dativo_postgres.cdc import LSN_COLUMN, ChangeStream, log_based_schema
from tap_dativo_postgres.pgoutput import format_lsn, parse_lsn

if TYPE_CHECKING:
    from tap_dativo_postgres.reader import PostgresReader

logger = logging.getLogger("dativo.postgres")

#: Changes per batch (whole transactions: a larger one is one batch).
BATCH_ROWS = 10_000
#: Seconds between polls of the slot under ``cdc_stop: follow``.
POLL_SECONDS = 1.0


def state_lsns(state: Mapping[str, Any]) -> dict[str, int]:
    """The LSN of every LOG_BASED stream that has one in ``state`` (Singer STATE)."""
    lsns: dict[str, int] = {}
    for name, entry in (state.get("bookmarks") or {}).items():
        if isinstance(entry, Mapping) and entry.get("replication_key") == LSN_COLUMN:
            value = lsn_value(entry.get("replication_key_value"))
            if value is not None:
                lsns[name] = value
    return lsns


def lsn_value(value: Any) -> int | None:
    """A bookmark as an LSN: the integer STATE holds, or PostgreSQL's ``X/Y`` text."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    if "/" in text:
        return parse_lsn(text)
    return int(text)


class LogBasedReads:
    """The LOG_BASED side of one PostgresReader (one slot and publication per reader)."""

    def __init__(self, reader: PostgresReader) -> None:
        self.reader = reader
        config = reader.config
        self.stop = str(config.get("cdc_stop") or "end")
        if self.stop not in ("end", "follow"):
            raise ConfigError(f"cdc_stop must be end or follow, not {self.stop!r}")
        self.batch_rows = int(config.get("cdc_batch_rows") or BATCH_ROWS)
        self.poll_seconds = float(config.get("cdc_poll_seconds") or POLL_SECONDS)
        self._slot: str | None = config.get("replication_slot") or None
        self._publication: str | None = config.get("publication") or None
        #: The LSN each stream's latest batch completes (what ``bookmark`` reports).
        self.positions: dict[str, int] = {}
        #: The LSN each stream read by this reader started from (None: initial copy).
        self.started: dict[str, int | None] = {}
        self._checked = False
        self._ack_conn: psycopg.Connection | None = None
        self._ack_lock = threading.Lock()
        self._closed = False  # acknowledgements after close use a connection each

    @property
    def slot(self) -> str:
        """The pipeline's slot name: the setting, or one derived from the database and the
        pipeline's state id (:meth:`choose_slot`)."""
        if self._slot is None:
            self.choose_slot(None)
        assert self._slot is not None
        return self._slot

    def choose_slot(self, bookmark: Any) -> None:
        """Name the pipeline's slot (once) when the setting does not (slot.choose_slot).

        The pipeline resumes when the STATE the run started from holds an LSN for any
        LOG_BASED stream (the reader's ``start_state``, set by ``dativo run`` and by the
        Singer tap); when a caller gives no STATE, when the first stream read has one
        (``bookmark``)."""
        if self._slot is not None:
            return
        reader = self.reader
        conn = reader._conn
        row = conn.execute("SELECT current_database()").fetchone()
        start_state = getattr(reader, "start_state", None)
        if start_state is not None:
            resuming = bool(state_lsns(start_state))
        else:
            resuming = lsn_value(bookmark) is not None
        pipeline = pgslot.pipeline_id(getattr(reader, "state_id", None), os.environ)
        self._slot = pgslot.choose_slot(
            conn, str(row[0]) if row else "db", reader.name, pipeline, resuming
        )
        conn.commit()
        logger.info("LOG_BASED streams read replication slot %s", self._slot)

    @property
    def publication(self) -> str:
        """The publication read (the setting, or the default named as the slot)."""
        return self._publication or self.slot

    def stream(self, stream: StreamInfo) -> StreamInfo:
        """The stream as a LOG_BASED read yields it (see cdc.log_based_schema)."""
        if stream.replication_method != "LOG_BASED":
            return stream
        return dataclasses.replace(
            stream, schema=log_based_schema(stream.schema), replication_key=LSN_COLUMN
        )

    def bookmark(self, stream: StreamInfo, previous: Any) -> Any:
        """The LSN every yielded change of ``stream`` is at or below (None until the
        initial copy is complete)."""
        return self.positions.get(stream.name, previous)

    def read(self, stream: StreamInfo, bookmark: Any) -> Iterator[pa.RecordBatch]:
        """The stream's initial copy (without a bookmark) and then its changes."""
        reader = self.reader
        conn = reader._conn
        where = f"stream '{stream.name}'"
        options = (reader.config.get("stream_options") or {}).get(stream.name) or {}
        if options.get("custom_where"):
            raise ConfigError(
                f"{where}: stream_options.custom_where cannot apply to a LOG_BASED stream "
                "(its changes come from the WAL); remove it, or read it INCREMENTAL"
            )
        stream = self.stream(stream)
        self.choose_slot(bookmark)
        table = reader._table(stream)
        if table.kind not in ("r", "p"):
            raise ConfigError(
                f"{where}: {table.schema}.{table.table} is a view, not a table: LOG_BASED "
                "reads only tables (read it FULL_TABLE or INCREMENTAL)"
            )
        if not self._checked:
            pgslot.check_server(conn)
            self._checked = True
        pgslot.check_replica_identity(conn, table.schema, table.table, table.primary_key)
        pgslot.ensure_publication(
            conn, self.publication, table.schema, table.table, ours=self._publication is None
        )
        start = lsn_value(bookmark)
        self.started[stream.name] = start
        position = pgslot.slot_position(conn, self.slot)
        if start is not None:
            if position is None:
                others = [s for s in pgslot.dativo_slots(conn) if s != self.slot]
                conn.commit()
                snapshot = (
                    "re-read the stream from a new snapshot (remove its bookmark from the "
                    "state, or --full-refresh)"
                )
                advice = (
                    f"If this pipeline used another slot (this database has "
                    f"{', '.join(others)}), name it in the replication_slot setting; else "
                    f"{snapshot}"
                    if others
                    else f"The changes since are gone: {snapshot}"
                )
                raise ReadError(
                    f"{where}: the state has LSN {format_lsn(start)} but replication slot "
                    f"'{self.slot}' does not exist (dropped, or named otherwise). {advice}"
                )
            pgslot.check_not_ahead(self.slot, position, start, stream.name)
        else:
            if position is None:
                pgslot.create_slot(conn, self.slot)
            start = yield from self._initial_copy(stream)
            self.positions[stream.name] = start
            yield pa.RecordBatch.from_pylist([], schema=stream.schema)  # releases the LSN
        yield from self._changes(stream, table, start, where)

    def _initial_copy(self, stream: StreamInfo) -> Generator[pa.RecordBatch, None, int]:
        """The table as of a temporary slot's exported snapshot; returns its consistent
        point (every batch has ``_sdc_lsn`` = that point)."""
        from tap_dativo_postgres.reader import connection_kwargs

        kwargs = pgslot.replication_conninfo(connection_kwargs(self.reader.config))
        try:
            holder = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise ConfigError(
                f"stream '{stream.name}': cannot open a replication connection: "
                f"{str(exc).strip().splitlines()[0]} (the role needs REPLICATION, and "
                "pg_hba.conf must allow it; docs/cdc.md, 'Privileges')"
            ) from None
        try:
            name = f"dativo_snap_{holder.pgconn.backend_pid}"
            result = holder.pgconn.exec_(
                f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput "
                "(SNAPSHOT 'export')".encode()
            )
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise ReadError(f"stream '{stream.name}': cannot export a snapshot: {message}")
            consistent = parse_lsn(result.get_value(0, 1).decode())  # type: ignore[union-attr]
            snapshot = result.get_value(0, 2).decode()  # type: ignore[union-attr]
            logger.info(
                "stream '%s': initial copy in snapshot %s (consistent point %s)",
                stream.name,
                snapshot,
                format_lsn(consistent),
            )
            position = pgslot.slot_position(self.reader._conn, self.slot)
            pgslot.check_not_ahead(self.slot, position, consistent, stream.name)
            lsn = pa.array([consistent], pa.int64())
            for batch in self.reader._read_in_snapshot(stream, snapshot):
                yield _with_cdc_columns(batch, stream.schema, lsn)
            return consistent
        finally:
            holder.close()  # drops the temporary slot

    def _changes(
        self, stream: StreamInfo, table: Any, start: int, where: str
    ) -> Iterator[pa.RecordBatch]:
        from tap_dativo_postgres.reader import connect

        plans = [
            table.column(n) for n in stream.schema.names if n in {c.name for c in table.columns}
        ]
        conn = connect(self.reader.config)
        conn.autocommit = False
        try:
            changes = ChangeStream(
                conn,
                self.slot,
                self.publication,
                table,
                plans,
                stream.schema,
                self.batch_rows,
                where,
                rust_dsn=self.rust_dsn(),
                rust_tls=self.reader._rust_tls,
            )
            after = start
            while True:
                upto = _flush_lsn(conn)
                for batch in changes.batches(after, upto):
                    assert changes.position is not None
                    self.positions[stream.name] = changes.position
                    yield batch
                assert changes.position is not None
                after = changes.position
                if changes.stopped:
                    return
                if self.positions.get(stream.name) != after:
                    self.positions[stream.name] = after
                    yield pa.RecordBatch.from_pylist([], schema=stream.schema)
                if self.stop == "end":
                    return
                time.sleep(self.poll_seconds)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()

    def rust_dsn(self) -> str | None:
        """Where the extension's replication client connects, or None for the Python
        path: the reader's ``accelerator`` decides, as for COPY (and over TLS with the
        COPY connections' TLS settings, ``reader._rust_tls``)."""
        reader = self.reader
        if getattr(reader, "accelerator", "python") != "rust" or reader._rust_dsn is None:
            return None
        return reader._rust_dsn

    def acknowledge(self, state: Mapping[str, Any]) -> int | None:
        """Confirm the slot up to the smallest LOG_BASED LSN of a committed ``state``, and
        return the slot's lag in WAL bytes after it (None when nothing was confirmed).

        Nothing is confirmed while a stream this reader read has no LSN in it (its
        initial copy is not durable yet). Safe to call from another thread than the
        read's (it uses a connection of its own), and after :meth:`close` (a runner's
        last commit comes after its reader closed)."""
        started = list(self.started)  # the reader's thread may add to it meanwhile
        if not started:
            return None
        lsns = state_lsns(state)
        if any(name not in lsns for name in started):
            return None
        if not lsns:
            return None
        from tap_dativo_postgres.reader import connect

        with self._ack_lock:  # called from the runner's thread: a connection of its own
            if self._ack_conn is None or self._ack_conn.closed:
                self._ack_conn = connect(self.reader.config)
            try:
                pgslot.advance_slot(self._ack_conn, self.slot, min(lsns.values()))
                return pgslot.slot_lag_bytes(self._ack_conn, self.slot)
            finally:
                if self._closed:
                    self._ack_conn.close()
                    self._ack_conn = None

    def lag(self) -> int | None:
        """The slot's lag in WAL bytes, or None when no LOG_BASED stream was read."""
        conn = self.reader._conn
        if not self.started or conn.closed or conn.broken:
            return None
        return pgslot.slot_lag_bytes(conn, self.slot)

    def close(self) -> None:
        """Confirm the slot up to the smallest LSN the run started from (durable: it was
        in the state given to the run), and log the slot's lag."""
        with self._ack_lock:
            self._closed = True
            if self._ack_conn is not None:
                self._ack_conn.close()
                self._ack_conn = None
        if not self.started:
            return
        conn = self.reader._conn
        if conn.closed or conn.broken:
            return
        begun = [lsn for lsn in self.started.values() if lsn is not None]
        if begun:
            pgslot.advance_slot(conn, self.slot, min(begun))
        lag = self.lag()
        if lag is not None:
            logger.info("replication slot %s: %d byte(s) of WAL retained for it", self.slot, lag)


def _flush_lsn(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    conn.commit()
    assert row is not None
    return parse_lsn(row[0])


def _with_cdc_columns(batch: pa.RecordBatch, schema: pa.Schema, lsn: pa.Array) -> pa.RecordBatch:
    """An initial-copy batch with the stream's columns: ``_sdc_lsn`` the consistent point,
    the delete and commit times null."""
    rows = batch.num_rows
    arrays = []
    for f in schema:
        if f.name in batch.schema.names:
            arrays.append(batch.column(f.name))
        elif f.name == LSN_COLUMN:
            arrays.append(pa.repeat(lsn[0], rows) if rows else pa.array([], pa.int64()))
        else:
            arrays.append(pa.nulls(rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
