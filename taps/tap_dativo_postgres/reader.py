"""PostgresReader: tables and views read with COPY into Arrow, serially or in parallel
ctid ranges under one exported snapshot.

A connection lost during a read is retried (``max_reconnects`` times) only where the read
can go on without losing or inventing rows: an incremental read resumes strictly after the
last replication key it yielded (batches hold whole key groups, so every row at that key
was yielded: none comes twice, which keeps exactly-once destinations exact); any read that
has yielded nothing starts again. A full-table read that has yielded rows is one snapshot
and cannot be resumed mid-way without duplicates, nor can a parallel read: they fail with
one error naming the stream and how many rows were read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from dativo_bridge import accel as dativo_accel
from dativo_bridge.errors import ConfigError, DativoError, ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.settings import with_defaults
from tap_dativo_postgres import accel
from tap_dativo_postgres import copy as pgcopy
from tap_dativo_postgres.batches import finite_values, whole_key_groups
from tap_dativo_postgres.catalog import (
    ColumnPlan,
    TableInfo,
    discover,
)
from tap_dativo_postgres.dsn import parse_dsn
from tap_dativo_postgres.logbased import LogBasedReads
from tap_dativo_postgres.settings import CONFIG_JSONSCHEMA

logger = logging.getLogger("dativo.postgres")


_PASSWORD_IN_TEXT = re.compile(r"(password=)\S+", re.IGNORECASE)

#: Default batch_size_bytes: binary COPY bytes per batch on the Rust path; CSV bytes on the
#: pure-Python path, where pyarrow's CSV parse of a block holds several times its size (1M
#: rows of the `wide` table: 4 MiB blocks peaked at 377 MB RSS, 1 MiB blocks at 200 MB).
RUST_BATCH_BYTES = 4 * 1024 * 1024
PYTHON_BATCH_BYTES = 1024 * 1024


def connection_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """psycopg.connect keyword arguments from the settings (the ``dsn``'s keywords, then
    the explicit settings, which take precedence).

    Raises:
        ConfigError: A malformed ``dsn`` (the message holds no part of its values).
    """
    config = with_defaults(CONFIG_JSONSCHEMA, config)
    kwargs: dict[str, Any] = {
        "connect_timeout": int(config["connect_timeout"]),
        "application_name": config["application_name"],
        "autocommit": True,
    }
    if config.get("dsn"):
        # Parsed here, never by libpq: its parse errors quote parts of the password.
        kwargs.update(parse_dsn(str(config["dsn"])))
    for setting, keyword in (
        ("host", "host"),
        ("port", "port"),
        ("user", "user"),
        ("password", "password"),
        ("database", "dbname"),
        ("ssl_mode", "sslmode"),
        ("ssl_root_cert", "sslrootcert"),
        ("ssl_cert", "sslcert"),
        ("ssl_key", "sslkey"),
    ):
        if config.get(setting) not in (None, ""):
            kwargs[keyword] = config[setting]
    return kwargs


def connect(config: Mapping[str, Any]) -> psycopg.Connection:
    """Open a connection with the session settings the reader relies on.

    Raises:
        ConfigError: On any connection failure, with a message free of the password.
    """
    kwargs = connection_kwargs(config)
    try:
        conn = psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        message = str(exc).strip()
        secrets = {config.get("password"), config.get("dsn"), kwargs.get("password")}
        for secret in sorted((str(s) for s in secrets if s), key=len, reverse=True):
            message = message.replace(secret, "********")
        message = _PASSWORD_IN_TEXT.sub(r"\1********", message)
        raise ConfigError(
            f"could not connect to PostgreSQL at {kwargs.get('host') or 'the default host'} "
            f"(database {kwargs.get('dbname') or 'default'}, user "
            f"{kwargs.get('user') or 'default'}): {message}"
        ) from None
    for statement in pgcopy.SESSION_SETUP:
        conn.execute(statement)
    return conn


class PostgresReader(ArrowReader):
    """Reads PostgreSQL tables and views as Arrow batches (see docs/postgres-types.md).

    Incremental reads are ordered by the replication key with NULLs first: rows with a
    NULL key are delivered before any bookmark exists (a first or full read), and later
    runs, which resume at ``>=`` the bookmark, cannot see them (warned with their count).
    """

    name = "tap-dativo-postgres"
    config_jsonschema = CONFIG_JSONSCHEMA
    is_sorted = True  # incremental reads are ORDER BY the replication key
    supports_log_based = True  # LOG_BASED streams: tap_dativo_postgres.logbased

    def open(self, config: Mapping[str, Any]) -> None:
        config = with_defaults(self.config_jsonschema, config)
        super().open(config)
        accelerator = config["accelerator"]
        if accelerator == "rust" and not dativo_accel.available():
            raise ConfigError(
                "accelerator is 'rust' but the dativo_accel extension is not "
                "installed (pip install dativo-accel), use 'auto' or 'python'"
            )
        rust = accelerator != "python" and dativo_accel.available()
        self.accelerator = "rust" if rust else "python"
        self._conn = connect(config)
        self._rust_dsn: str | None = None
        self._rust_tls: dict[str, str] | None = None
        if self.accelerator == "rust":
            self._rust_dsn = accel.rust_dsn(self._conn)
            self._rust_tls = accel.rust_tls(self._conn)
            if self._rust_dsn is None:
                if accelerator == "rust":
                    self._conn.close()
                    raise ConfigError(
                        "accelerator is 'rust' but the connection uses a TLS setting the "
                        "Rust reader does not implement (sslrootcert=system or an encrypted "
                        "key with sslpassword): use 'auto' or 'python'"
                    )
                logger.info(
                    "the connection's TLS settings (sslrootcert=system or sslpassword) are "
                    "not implemented by the Rust reader: reading with the Python COPY path"
                )
                self.accelerator = "python"
        self._tables: dict[str, TableInfo] = {}
        self._batch_bytes = int(
            config.get("batch_size_bytes")
            or (RUST_BATCH_BYTES if self._rust_dsn is not None else PYTHON_BATCH_BYTES)
        )
        self._parallelism = max(1, int(config.get("max_parallelism") or os.cpu_count() or 1))
        self._pages_per_partition = max(1, int(config["pages_per_partition"]))
        self._reconnects = max(0, int(config["max_reconnects"]))
        self._infinity = str(config["infinity_values"])
        if self._infinity not in ("clamp", "null"):
            raise ConfigError(f"infinity_values must be clamp or null, not {self._infinity!r}")
        self._log_based = LogBasedReads(self)

    def discover(self) -> Sequence[StreamInfo]:
        tables = discover(self._conn, self.config.get("filter_schemas"))
        self._tables = {t.stream_id: t for t in tables}
        return [t.stream_info() for t in tables]

    def _table(self, stream: StreamInfo) -> TableInfo:
        if not self._tables:
            self.discover()
        try:
            return self._tables[stream.name]
        except KeyError:
            raise ConfigError(
                f"stream '{stream.name}' is not a table or view in the "
                "database (or not in filter_schemas)"
            ) from None

    def _where(
        self, stream: StreamInfo, bookmark: Any | None, *, after: Any | None = None
    ) -> list[sql.Composable]:
        """The read's conditions: ``custom_where``, the key ``>=`` the bookmark, and (when
        resuming within a read) the key ``>`` the last key group already yielded."""
        conditions: list[sql.Composable] = []
        options = (self.config.get("stream_options") or {}).get(stream.name) or {}
        if options.get("custom_where"):
            conditions.append(sql.SQL("(") + sql.SQL(options["custom_where"]) + sql.SQL(")"))
        if bookmark is not None and stream.replication_key:
            # Rows committed after the last run with the bookmark's own key value are not
            # lost: resume at >= (the bookmark's key group may come twice; see
            # docs/writing-plugins.md, "The bookmark contract").
            conditions.append(
                sql.SQL("{k} >= {v}").format(
                    k=sql.Identifier(stream.replication_key), v=sql.Literal(bookmark)
                )
            )
        if after is not None and stream.replication_key:
            conditions.append(
                sql.SQL("{k} > {v}").format(
                    k=sql.Identifier(stream.replication_key), v=sql.Literal(after)
                )
            )
        return conditions

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        finite = finite_values(stream.schema, self._infinity)
        if stream.replication_method == "LOG_BASED":
            batches = self._log_based.read(stream, bookmark)
        else:
            batches = self._read(stream, bookmark)
        for batch in batches:
            yield finite(batch)

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        """The rows a read will yield, as PostgreSQL estimates them (for progress % and
        ETA): a full read of a table from its statistics (``pg_class.reltuples`` per page,
        scaled to the table's pages now, as the planner does); a read with conditions (an
        incremental one from its bookmark, ``custom_where``) or of a view from the
        planner's row estimate of that query (EXPLAIN, which plans without reading any
        row, under a 2 s statement timeout). None for LOG_BASED streams (their change
        count is not known ahead) and when PostgreSQL cannot tell."""
        if stream.replication_method == "LOG_BASED":
            return None
        table = self._table(stream)
        relation = sql.Identifier(table.schema, table.table)
        conditions = self._where(stream, bookmark)
        try:
            with self._conn.transaction():
                self._conn.execute("SET LOCAL statement_timeout = '2s'")
                if not conditions and table.kind in ("r", "m"):
                    row = self._conn.execute(
                        "SELECT c.reltuples, c.relpages, "
                        "pg_relation_size(c.oid) / current_setting('block_size')::int "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relname = %s",
                        [table.schema, table.table],
                    ).fetchone()
                    if row is not None:
                        tuples, relpages, pages = float(row[0]), int(row[1]), int(row[2])
                        if pages == 0:
                            return 0
                        if tuples >= 0 and relpages > 0:
                            return max(0, round(tuples / relpages * pages))
                # Never analysed (or a view, or conditions): the planner's estimate.
                query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(relation)
                where = _and(conditions)
                if where is not None:
                    query += sql.SQL(" WHERE ") + where
                plan = self._conn.execute(query).fetchone()
        except psycopg.Error as exc:
            logger.debug("stream '%s': no row estimate: %s", stream.name, exc)
            return None
        if plan is None:
            return None
        document = plan[0]
        if isinstance(document, str):
            document = json.loads(document)
        try:
            return max(0, round(float(document[0]["Plan"]["Plan Rows"])))
        except (LookupError, TypeError, ValueError):
            return None

    def log_based_stream(self, stream: StreamInfo) -> StreamInfo:
        """``stream`` as a LOG_BASED read yields it: every column nullable, the CDC columns
        added, ``_sdc_lsn`` its replication key (see tap_dativo_postgres.cdc)."""
        return self._log_based.stream(stream)

    def bookmark(self, stream: StreamInfo, batch: pa.RecordBatch, previous: Any | None) -> Any:
        if stream.replication_method == "LOG_BASED":
            return self._log_based.bookmark(stream, previous)
        return super().bookmark(stream, batch, previous)

    def acknowledge(self, state: Mapping[str, Any]) -> int | None:
        """The destination made ``state`` durable: confirm the replication slot up to the
        smallest LSN it holds for the LOG_BASED streams (the server may then recycle the
        WAL before it), and return the slot's lag in WAL bytes (None: nothing confirmed).
        ``dativo run`` calls it after each commit; a Singer tap confirms the LSNs of the
        state it was started with when it closes."""
        return self._log_based.acknowledge(state)

    def replication_lag(self) -> int | None:
        """WAL bytes the server retains for the LOG_BASED streams' slot beyond its
        confirmed position (for a run summary), or None when no LOG_BASED stream was
        read."""
        return self._log_based.lag()

    def _read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        table = self._table(stream)
        plans = [table.column(name) for name in stream.schema.names]
        relation = sql.Identifier(table.schema, table.table)
        conditions = self._where(stream, bookmark)
        incremental = stream.replication_method == "INCREMENTAL" and stream.replication_key
        where = f"stream '{stream.name}'"
        if not incremental and table.kind in ("r", "m") and self._parallelism > 1:
            pages = self._conn.execute(
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                [table.schema, table.table],
            ).fetchone()
            npages = int(pages[0]) if pages else 0
            if npages >= 2 * self._pages_per_partition:
                yield from self._read_parallel(relation, plans, conditions, npages, where)
                return
        order_by = stream.replication_key if incremental else None
        if incremental and bookmark is not None and stream.replication_key:
            self._warn_null_keys(conn=self._conn, relation=relation, stream=stream)
        yield from self._read_serial(stream, relation, plans, bookmark, order_by, where)

    def _read_serial(
        self,
        stream: StreamInfo,
        relation: sql.Composable,
        plans: Sequence[ColumnPlan],
        bookmark: Any | None,
        order_by: str | None,
        where: str,
    ) -> Iterator[pa.RecordBatch]:
        """One COPY; after a lost connection, again from where it can resume (see the
        module docstring)."""
        resume: Any | None = None  # the last key group yielded (whole: see whole_key_groups)
        rows, lost = 0, 0
        while True:
            conditions = self._where(stream, bookmark, after=resume)
            batches = self._copy(self._conn, relation, plans, _and(conditions), order_by, where)
            if order_by:
                batches = whole_key_groups(batches, order_by)
            try:
                for batch in batches:
                    if order_by and batch.num_rows:
                        last = batch.column(order_by)[batch.num_rows - 1]
                        if last.is_valid:
                            resume = last.as_py()
                    rows += batch.num_rows
                    yield batch
                return
            except pgcopy.ConnectionLost as exc:
                lost += 1
                # With a key to resume after, every row yielded is at or below it (NULL keys,
                # which come first, are not read again by >); without one, only a read
                # that yielded nothing can start again.
                resumable = rows == 0 or (order_by is not None and resume is not None)
                if not resumable:
                    raise pgcopy.ConnectionLost(
                        f"{exc} ({rows} row(s) had been read). A full-table read is one "
                        "snapshot and cannot resume mid-way without duplicates, so it is not "
                        "retried; the stream is read again from its start by the next run"
                    ) from None
                if lost > self._reconnects:
                    raise pgcopy.ConnectionLost(
                        f"{exc} ({rows} row(s) read; gave up after {lost} lost connection(s), "
                        f"max_reconnects {self._reconnects}). The next run resumes at the last "
                        "bookmark in STATE"
                    ) from None
                self._reconnect(exc, lost)
                logger.warning(
                    "%s; reconnected (%d of %d), resuming %s after %d row(s)",
                    exc,
                    lost,
                    self._reconnects,
                    f"after {order_by} = {resume!r}" if resume is not None else "from the start",
                    rows,
                )

    def _reconnect(self, lost: pgcopy.ConnectionLost, attempt: int) -> None:
        """A fresh main connection after a loss (waits 1, 2, 4... seconds first).

        Raises:
            ConnectionLost: The server cannot be reached again.
        """
        self.retries = getattr(self, "retries", 0) + 1  # for the run's metrics
        time.sleep(min(2.0 ** (attempt - 1), 30.0))
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
        try:
            self._conn = connect(self.config)
        except ConfigError as exc:
            raise pgcopy.ConnectionLost(f"{lost}; reconnecting failed: {exc}") from None

    def _warn_null_keys(
        self, conn: psycopg.Connection, relation: sql.Composable, stream: StreamInfo
    ) -> None:
        """An incremental run from a bookmark cannot see rows whose key is NULL: say how
        many there are (they were delivered by the first, full read)."""
        key = stream.replication_key
        plan = self._table(stream).column(key) if key else None
        if key is None or (plan is not None and not plan.nullable):
            return
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {r} WHERE {k} IS NULL").format(
                r=relation, k=sql.Identifier(key)
            )
        ).fetchone()
        count = int(row[0]) if row else 0
        if count:
            logger.warning(
                "stream '%s': %d row(s) have a NULL replication key '%s'; an incremental run "
                "reads rows at or after the bookmark, so they are read only by a full read "
                "(the first run, or --full-refresh)",
                stream.name,
                count,
                key,
            )

    def _copy(
        self,
        conn: psycopg.Connection,
        relation: sql.Composable,
        plans: Sequence[ColumnPlan],
        condition: sql.Composable | None,
        order_by: str | None,
        where: str,
    ) -> Iterator[pa.RecordBatch]:
        """One COPY through the Rust extension when in use, else through psycopg + CSV."""
        if self._rust_dsn is not None:
            query = accel.copy_query(relation, plans, condition, order_by)
            return accel.read_copy(
                self._rust_dsn, query, plans, self._batch_bytes, where, tls=self._rust_tls
            )
        query = pgcopy.copy_query(relation, plans, condition, order_by)
        return pgcopy.read_copy(conn, query, plans, self._batch_bytes, where)

    def _read_parallel(
        self,
        relation: sql.Composable,
        plans: Sequence[ColumnPlan],
        conditions: list[sql.Composable],
        npages: int,
        where: str,
        *,
        snapshot: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """ctid page ranges, one connection each, all in one exported snapshot (the one
        given, else a new one)."""
        step = max(self._pages_per_partition, -(-npages // (self._parallelism * 4)))
        bounds = list(range(0, npages, step))
        partitions: queue.Queue[tuple[int, int | None]] = queue.Queue()
        for i, lo in enumerate(bounds):
            partitions.put((lo, bounds[i + 1] if i + 1 < len(bounds) else None))
        workers = min(self._parallelism, len(bounds))
        logger.info(
            "%s: %d pages in %d ctid ranges on %d connections", where, npages, len(bounds), workers
        )
        results: queue.Queue[Any] = queue.Queue(maxsize=workers * 2)
        stop = threading.Event()
        coordinator = connect(self.config)
        _repeatable_read(coordinator)
        try:
            if snapshot is not None:
                coordinator.execute(
                    sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
                )
            exported = coordinator.execute("SELECT pg_export_snapshot()").fetchone()
            assert exported is not None
            snapshot = exported[0]
            setup = [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                sql.SQL("SET TRANSACTION SNAPSHOT {}")
                .format(sql.Literal(snapshot))
                .as_string(coordinator),
            ]

            def partition(lo: int, hi: int | None) -> sql.Composable | None:
                ctid: list[sql.Composable] = [
                    sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({lo},0)"))
                ]
                if hi is not None:
                    ctid.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({hi},0)")))
                return _and(conditions + ctid)

            rows = 0
            if self._rust_dsn is not None:
                # Every partition on a Rust thread with its own connection, one stream.
                queries = [
                    accel.copy_query(relation, plans, partition(lo, hi), None)
                    for lo, hi in list(partitions.queue)
                ]
                try:
                    for batch in accel.read_copy_parallel(
                        self._rust_dsn,
                        queries,
                        plans,
                        self._batch_bytes,
                        where,
                        workers,
                        setup,
                        self._rust_tls,
                    ):
                        rows += batch.num_rows
                        yield batch
                except DativoError as exc:
                    raise _parallel_error(exc, coordinator, where, rows) from None
                return

            def deliver(batches: Iterator[pa.RecordBatch]) -> None:
                for batch in batches:
                    while not stop.is_set():
                        try:
                            results.put(batch, timeout=0.2)
                            break
                        except queue.Full:
                            continue

            # Nothing is yielded before every worker holds the snapshot itself: from then
            # on the coordinator's connection is not needed (its loss loses nothing).
            imported = threading.Semaphore(0)

            def work() -> None:
                try:
                    conn = None
                    try:
                        conn = connect(self.config)
                        _repeatable_read(conn)
                        conn.execute(
                            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
                        )
                    except BaseException:
                        if conn is not None:
                            conn.close()
                        raise
                    finally:
                        imported.release()  # a failure is reported through ``results``
                    with conn:
                        while not stop.is_set():
                            try:
                                lo, hi = partitions.get_nowait()
                            except queue.Empty:
                                break
                            deliver(
                                self._copy(conn, relation, plans, partition(lo, hi), None, where)
                            )
                        conn.rollback()
                    results.put(None)
                except BaseException as exc:
                    results.put(exc)

            threads = [
                threading.Thread(target=work, daemon=True, name=f"dativo-pg-{i}")
                for i in range(workers)
            ]
            for thread in threads:
                thread.start()
            for _ in threads:
                imported.acquire()
            finished = 0
            while finished < workers:
                item = results.get()
                if item is None:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise _parallel_error(item, coordinator, where, rows) from None
                else:
                    rows += item.num_rows
                    yield item
        finally:
            stop.set()
            # The read's outcome is decided: a dead coordinator must not replace it.
            with contextlib.suppress(psycopg.Error):
                coordinator.rollback()
            coordinator.close()

    def _read_in_snapshot(self, stream: StreamInfo, snapshot: str) -> Iterator[pa.RecordBatch]:
        """The selected columns of the stream's table as of an exported ``snapshot`` (a
        LOG_BASED stream's initial copy), in ctid ranges when the table is large."""
        table = self._table(stream)
        names = [n for n in stream.schema.names if n in {c.name for c in table.columns}]
        plans = [table.column(name) for name in names]
        relation = sql.Identifier(table.schema, table.table)
        where = f"stream '{stream.name}'"
        if table.kind in ("r", "m") and self._parallelism > 1:
            pages = self._conn.execute(
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                [table.schema, table.table],
            ).fetchone()
            npages = int(pages[0]) if pages else 0
            if npages >= 2 * self._pages_per_partition:
                yield from self._read_parallel(
                    relation, plans, [], npages, where, snapshot=snapshot
                )
                return
        setup = [
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            sql.SQL("SET TRANSACTION SNAPSHOT {}")
            .format(sql.Literal(snapshot))
            .as_string(self._conn),
        ]
        if self._rust_dsn is not None:
            query = accel.copy_query(relation, plans, None, None)
            yield from accel.read_copy_parallel(
                self._rust_dsn, [query], plans, self._batch_bytes, where, 1, setup, self._rust_tls
            )
            return
        conn = connect(self.config)
        try:
            _repeatable_read(conn)
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            query = pgcopy.copy_query(relation, plans, None, None)
            yield from pgcopy.read_copy(conn, query, plans, self._batch_bytes, where)
            conn.rollback()
        finally:
            conn.close()

    def close(self) -> None:
        log_based = getattr(self, "_log_based", None)
        try:
            if log_based is not None:
                log_based.close()
        finally:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()


def _parallel_error(
    error: BaseException, coordinator: psycopg.Connection, where: str, rows: int
) -> DativoError:
    """The first real error of a parallel read, as one DativoError with the rows read.

    A worker that cannot import the snapshot (``invalid snapshot identifier``) fails because
    the connection holding it is gone: that loss is the error reported.
    """
    held = True
    if not coordinator.broken:
        try:
            coordinator.execute("SELECT 1")
        except psycopg.Error:
            held = False
    if coordinator.broken or not held:
        return pgcopy.ConnectionLost(
            f"{where}: the connection holding the parallel read's snapshot was lost after "
            f"{rows} row(s); a parallel read is one snapshot and is not retried, the stream "
            "is read again from its start by the next run"
        )
    if isinstance(error, pgcopy.ConnectionLost):
        return pgcopy.ConnectionLost(
            f"{error} (a parallel read, {rows} row(s) read); a parallel read is one snapshot "
            "and is not retried, the stream is read again from its start by the next run"
        )
    if isinstance(error, DativoError):
        return error
    if isinstance(error, psycopg.Error) and pgcopy.is_connection_lost(error):
        return pgcopy.ConnectionLost(
            f"{where}: the connection to PostgreSQL was lost during a parallel read after "
            f"{rows} row(s): {pgcopy.first_line(error)}; not retried, the stream is read "
            "again from its start by the next run"
        )
    return ReadError(f"{where}: parallel read failed: {pgcopy.first_line(error)}")


def _repeatable_read(conn: psycopg.Connection) -> None:
    """Transactions (opened by the first statement) in REPEATABLE READ, read only."""
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True


def _and(conditions: list[sql.Composable]) -> sql.Composable | None:
    if not conditions:
        return None
    return sql.SQL(" AND ").join(conditions)
