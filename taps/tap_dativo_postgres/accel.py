"""The Rust path: ``COPY ... TO STDOUT (FORMAT binary)`` decoded by the ``dativo_accel``
extension straight into Arrow, producing the same batches (schema, nullability, JSON
extension type, values) as :func:`tap_dativo_postgres.copy.read_copy`.

Most columns are selected as they are and decoded from PostgreSQL's binary form. Types the
pure-Python reader reads as text are selected as that same text: the output function
(``format('%s', col)``, what CSV COPY prints) for ``plain`` text columns such as timetz,
inet or enums, ``col::text`` for the ``text`` transport (money, bit, unknown types).
Arrays of elements decoded natively become lists in Rust; other arrays go through
``array_to_json`` and the pure-Python reader's own JSON step. See docs/rust-accel.md.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dativo_bridge import accel
from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.schema import JSON_TYPE
from tap_dativo_postgres import copy as pgcopy
from tap_dativo_postgres.catalog import ColumnPlan

#: Session settings the text forms depend on, the same as the Python path's connection.
SESSION_SETUP = "; ".join(pgcopy.SESSION_SETUP)

#: PostgreSQL base type -> the extension's binary decoder.
_DECODERS = {
    "int2": "int2",
    "int4": "int4",
    "int8": "int8",
    "oid": "oid",
    "float4": "float4",
    "float8": "float8",
    "bool": "bool",
    "text": "text",
    "varchar": "text",
    "bpchar": "text",
    "name": "text",
    "uuid": "uuid",
    "numeric": "numeric",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "time": "time",
    "interval": "interval",
    "bytea": "bytea",
    "json": "json",
    "jsonb": "jsonb",
}
#: Element types of arrays decoded natively (the rest go through array_to_json).
_ARRAY_ELEMENTS = frozenset(_DECODERS) - {"interval", "bytea", "json", "jsonb"}

#: Connection keywords passed on (tokio-postgres understands this subset of libpq's).
_DSN_KEYS = ("options", "application_name", "connect_timeout", "keepalives", "keepalives_idle")

#: Largest batch budget: Arrow's 32-bit string offsets must not overflow.
MAX_BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _Column:
    """How one column travels: its SELECT expression, the extension's decoder, the
    Arrow field the extension builds, and an optional Python step after it."""

    select: sql.Composable
    decoder: str
    field: pa.Field
    finish: Callable[[pa.Array], pa.Array] | None = None


def _column(plan: ColumnPlan) -> _Column:
    col = sql.Identifier(plan.name)
    field = pa.field(plan.name, plan.arrow, nullable=plan.nullable)
    if plan.transport == "array":
        if plan.arrow == JSON_TYPE:
            return _Column(sql.SQL("array_to_json({})").format(col), "json", field)
        element = plan.pg_type[1:] if plan.pg_type.startswith("_") else ""
        if element in _ARRAY_ELEMENTS:
            return _Column(col, _DECODERS[element] + "[]", field)

        def from_json(arr: pa.Array) -> pa.Array:
            return pgcopy._json_arrays(plan, arr)

        text = pa.field(plan.name, pa.string(), nullable=plan.nullable)
        return _Column(plan.select(), "text", text, from_json)
    if plan.transport == "text":
        return _Column(sql.SQL("{}::text").format(col), "text", field)
    if plan.pg_type in _DECODERS:
        return _Column(col, _DECODERS[plan.pg_type], field)
    # Read as text by the pure-Python path: the type's output function, as CSV prints it.
    return _Column(
        sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END").format(c=col),
        "text",
        field,
    )


def _binary_select(plan: ColumnPlan) -> sql.Composable:
    return _column(plan).select


#: The binary COPY statement for a (partial) read of a table (copy.copy_query's arguments).
copy_query = functools.partial(pgcopy.copy_query, select=_binary_select, fmt="binary")


def rust_dsn(conn: psycopg.Connection) -> str | None:
    """A connection string reaching what ``conn`` reaches, for the extension.

    libpq has already resolved the settings (environment, service file, ``.pgpass``,
    defaults), so they are read back from the open connection. When ``conn`` uses TLS,
    so does the extension (:func:`rust_tls` gives its settings).

    Returns:
        The libpq ``key=value`` string, or None when ``conn`` uses a TLS setting the
        extension does not implement (``sslrootcert=system``, a key with ``sslpassword``):
        reading without it would downgrade security.
    """
    if conn.pgconn.ssl_in_use and rust_tls(conn) is None:
        return None
    info = conn.info
    params = {k: v for k, v in info.get_parameters().items() if k in _DSN_KEYS}
    # The host libpq actually reached (of a list, or from a service file).
    params.update(host=info.host, port=str(info.port), user=info.user, dbname=info.dbname)
    if info.hostaddr:
        params["hostaddr"] = info.hostaddr
    if info.password:
        params["password"] = info.password
    mode = "require" if conn.pgconn.ssl_in_use else "disable"
    return make_conninfo(**params, sslmode=mode)


def rust_tls(conn: psycopg.Connection) -> dict[str, str] | None:
    """The extension's TLS settings for what ``conn`` uses, as libpq applies them.

    libpq checks the server's certificate chain whenever a root certificate file is
    present (``sslrootcert``, default ``~/.postgresql/root.crt``), whatever the sslmode,
    and the host name only under ``verify-full``; it sends a client certificate when
    ``sslcert`` and ``sslkey`` (default ``~/.postgresql/postgresql.crt`` / ``.key``) exist.

    Returns:
        None when ``conn`` does not use TLS, or uses what the extension cannot do (the
        system's root store, an encrypted key); else ``mode``, ``root_cert``, ``cert``
        and ``key`` for ``dativo_accel.read_copy``.
    """
    if not conn.pgconn.ssl_in_use:
        return None
    options = {
        o.keyword.decode(): (o.val or b"").decode()
        for o in conn.pgconn.info
        if o.keyword is not None
    }
    if options.get("sslrootcert") == "system" or options.get("sslpassword"):
        return None
    home = Path.home() / ".postgresql"
    mode = options.get("sslmode") or "prefer"
    root = options.get("sslrootcert") or str(home / "root.crt")
    cert = options.get("sslcert") or str(home / "postgresql.crt")
    key = options.get("sslkey") or str(home / "postgresql.key")
    tls: dict[str, str] = {}
    if mode in ("verify-ca", "verify-full"):
        tls["mode"] = mode
        tls["root_cert"] = root
    elif Path(root).is_file():
        tls["mode"] = "verify-ca"
        tls["root_cert"] = root
    else:
        tls["mode"] = "require"
    if Path(cert).is_file() and Path(key).is_file():
        tls["cert"] = cert
        tls["key"] = key
    return tls


def read_copy(
    dsn: str,
    query: str | sql.Composable,
    plans: Sequence[ColumnPlan],
    batch_bytes: int,
    where: str,
    setup: Sequence[str] = (),
    tls: dict[str, str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Run one binary COPY in the extension and yield its rows as Arrow batches.

    Args:
        dsn: From :func:`rust_dsn`.
        query: From :func:`copy_query` (its SELECT list must come from ``plans``).
        plans: The columns, in SELECT order.
        batch_bytes: A batch ends after the row that brings its COPY bytes to this.
        where: What is read, for messages (``stream 'public-orders'``).
        setup: Statements run before the COPY on its connection, after the session
            settings (e.g. ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` and
            ``SET TRANSACTION SNAPSHOT '...'`` for a parallel partition).
        tls: From :func:`rust_tls` (None: no TLS).

    Raises:
        ConfigError: The server could not be reached (no password in the message).
        ReadError: The query failed, a value does not fit its column, or a plan has
            no binary decoder.
    """
    dativo_accel = accel.required()

    text = query if isinstance(query, str) else query.as_string(None)
    columns, schema = _columns(plans)
    with _errors(where, plans):
        copy = dativo_accel.read_copy(
            dsn,
            text,
            schema,
            [c.decoder for c in columns],
            max(1, min(int(batch_bytes), MAX_BATCH_BYTES)),
            [SESSION_SETUP, *setup],
            tls,
        )
    return _batches(copy, columns, plans, where)


def read_copy_parallel(
    dsn: str,
    queries: Sequence[str | sql.Composable],
    plans: Sequence[ColumnPlan],
    batch_bytes: int,
    where: str,
    workers: int,
    setup: Sequence[str] = (),
    tls: dict[str, str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Run several binary COPYs at once on Rust threads and yield all their rows.

    Args:
        dsn, plans, batch_bytes, where, setup, tls: As for :func:`read_copy` (``setup``
            runs on every query's connection).
        queries: From :func:`copy_query`, e.g. one per ctid range; each gets a connection.
        workers: How many run at once.

    Raises:
        ConfigError: The server could not be reached (no password in the message).
        ReadError: A query failed or a value does not fit its column.
    """
    dativo_accel = accel.required()

    texts = [q if isinstance(q, str) else q.as_string(None) for q in queries]
    columns, schema = _columns(plans)
    with _errors(where, plans):
        copy = dativo_accel.read_copy_parallel(
            dsn,
            texts,
            schema,
            [c.decoder for c in columns],
            max(1, min(int(batch_bytes), MAX_BATCH_BYTES)),
            max(1, workers),
            [SESSION_SETUP, *setup],
            tls,
        )
    return _batches(copy, columns, plans, where)


def _columns(plans: Sequence[ColumnPlan]) -> tuple[list[_Column], pa.Schema]:
    columns = [_column(p) for p in plans]
    return columns, pa.schema([c.field for c in columns])


@contextlib.contextmanager
def _errors(where: str, plans: Sequence[ColumnPlan]) -> Iterator[None]:
    """The extension's errors when a read starts, as the tap's error classes."""
    dativo_accel = accel.required()

    try:
        yield
    except dativo_accel.ConnectError as exc:
        raise ConfigError(f"{where}: could not connect to PostgreSQL: {exc}") from None
    except (dativo_accel.CopyError, ValueError) as exc:
        _raise_lost(where, exc)
        raise ReadError(f"{where}: {_explain(str(exc), plans)}") from None


def _raise_lost(where: str, exc: BaseException) -> None:
    """A lost connection as the Python path reports it (tap_dativo_postgres.copy.ConnectionLost)."""
    if pgcopy.is_connection_lost(exc):
        message = _ARROW_PREFIX.sub("", pgcopy.first_line(exc))
        raise pgcopy.ConnectionLost(
            f"{where}: the connection to PostgreSQL was lost during the read: {message}"
        ) from None


def _batches(
    copy: Any, columns: Sequence[_Column], plans: Sequence[ColumnPlan], where: str
) -> Iterator[pa.RecordBatch]:
    """The batches of a started read, with the Python-side finishing steps applied."""
    final = pa.schema([pa.field(p.name, p.arrow, nullable=p.nullable) for p in plans])
    reader = pa.RecordBatchReader.from_stream(copy)
    try:
        for batch in reader:
            if any(c.finish for c in columns):
                arrays = [
                    c.finish(batch.column(i)) if c.finish else batch.column(i)
                    for i, c in enumerate(columns)
                ]
                batch = pa.RecordBatch.from_arrays(arrays, schema=final)
            yield batch
    except (pa.ArrowException, OSError) as exc:
        _raise_lost(where, exc)
        raise ReadError(f"{where}: {_explain(str(exc), plans)}") from None
    finally:
        reader.close()  # stops the COPY (every COPY of a parallel read) early


_ARROW_PREFIX = re.compile(r"^(?:[A-Za-z ]+ error: )+")


def _explain(message: str, plans: Sequence[ColumnPlan]) -> str:
    """The extension's message without Arrow's error-kind prefixes, with the same hints
    as the pure-Python reader."""
    return pgcopy._explain(Exception(_ARROW_PREFIX.sub("", message.strip())), plans)
