"""COPY ... TO STDOUT (FORMAT csv) streamed into Arrow batches by pyarrow's C++ CSV reader,
typed from the catalog (never inferred), then the unambiguous transports rebuilt.

A connection that ends during a COPY (server gone, backend terminated, network or TLS
failure) is a :class:`ConnectionLost` carrying the first error seen, never the later errors
of closing the dead cursor; the reader decides whether the read can be resumed."""

from __future__ import annotations

import binascii
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pj
from psycopg import sql

from dativo_bridge.errors import ReadError
from dativo_bridge.schema import JSON_TYPE
from tap_dativo_postgres.catalog import INTERVAL_TYPE, ColumnPlan

#: The session settings both paths read with (the Python connection and every connection
#: of the Rust extension): text forms as the converters expect them (UTC, ISO dates,
#: floats that round-trip).
SESSION_SETUP = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET extra_float_digits = 3",
)


class ConnectionLost(ReadError):
    """The connection to PostgreSQL ended during a read; the message names what was read
    and its first error."""


#: Texts of a lost connection in the Rust extension's (tokio-postgres, rustls) errors.
_LOST_TEXT = re.compile(
    r"terminating connection|server closed the connection|connection closed|"
    r"connection reset|broken pipe|unexpected eof|could not receive data|"
    r"consuming input failed|ssl syscall|close_notify",
    re.IGNORECASE,
)
#: SQLSTATEs of a connection that ended: class 08, admin/crash shutdown, cannot connect now.
_LOST_STATES = ("57P01", "57P02", "57P03")


def is_connection_lost(error: BaseException | str) -> bool:
    """Whether ``error`` means the connection ended (rather than the query failed)."""
    if isinstance(error, psycopg.Error):
        state = error.sqlstate
        if state:
            return state.startswith("08") or state in _LOST_STATES
        return isinstance(error, psycopg.OperationalError)
    return bool(_LOST_TEXT.search(str(error)))


def first_line(error: BaseException | str) -> str:
    """An error's first line (libpq adds hint lines to a lost connection's message)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_FLOAT_TOKENS = (('"NaN"', "NaN"), ('"Infinity"', "Infinity"), ('"-Infinity"', "-Infinity"))


class CopyStream(io.RawIOBase):
    """A file object over a psycopg COPY OUT (one CopyData message per row)."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._pending = bytearray()
        self._done = False
        self.bytes_read = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        pending = self._pending
        read = self._copy.read
        while len(pending) < want and not self._done:
            try:
                data = read()
            except BaseException as exc:
                self.error = self.error or exc  # the first error; closing adds others
                raise
            if not data:
                self._done = True
                break
            pending += data
        n = min(want, len(pending))
        buffer[:n] = pending[:n]
        del pending[:n]
        self.bytes_read += n
        return n


def _hex_to_binary(arr: pa.Array) -> pa.Array:
    """Hex text -> binary, one unhexlify over the whole value buffer."""
    import pyarrow.compute as pc  # here: --discover does not need it

    if len(arr) == 0:
        return pa.array([], pa.binary())
    validity, offsets_buf, data = arr.buffers()
    count = arr.offset + len(arr)
    offsets = pa.Array.from_buffers(pa.int32(), count + 1, [None, offsets_buf])
    end = offsets[-1].as_py()
    raw = binascii.unhexlify(memoryview(data)[:end]) if data is not None and end else b""
    halved = pc.cast(pc.divide(offsets, 2), pa.int32())
    return pa.Array.from_buffers(
        pa.binary(), len(arr), [validity, halved.buffers()[1], pa.py_buffer(raw)], offset=arr.offset
    )


def _json_arrays(plan: ColumnPlan, arr: pa.Array) -> pa.Array:
    """array_to_json text -> Arrow lists, parsed by Arrow's JSON reader."""
    import pyarrow.compute as pc  # here: --discover does not need it

    if plan.arrow == JSON_TYPE:
        return arr.cast(JSON_TYPE)
    element = plan.arrow.value_type
    text = arr
    if pa.types.is_floating(element):
        for quoted, token in _FLOAT_TOKENS:  # to_json writes non-finite floats as strings
            text = pc.replace_substring(text, quoted, token)
    parse_element = (
        pa.string() if pa.types.is_date(element) or pa.types.is_time(element) else element
    )
    lines = pc.binary_join_element_wise('{"v":', pc.fill_null(text, "null"), "}\n", "")
    data = pa.concat_arrays([lines]).buffers()[2] if len(lines) else pa.py_buffer(b"")
    try:
        table = pj.read_json(
            io.BytesIO(memoryview(data)),
            read_options=pj.ReadOptions(block_size=max(1 << 20, data.size + 1)),
            parse_options=pj.ParseOptions(
                explicit_schema=pa.schema([("v", pa.list_(parse_element))])
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReadError(
            f"column '{plan.name}' ({plan.pg_type}): an array value does not fit "
            f"list<{element}> ({exc}). Arrays map to one-dimensional lists; a "
            "multi-dimensional array, or an element such as an infinite date, cannot be "
            "read as such: select the column through a view (e.g. array_to_json(col)::json)"
        ) from None
    values = table.column("v").combine_chunks()
    if parse_element != element:
        if pa.types.is_time(element):
            flat = values.values
            joined = pc.binary_join_element_wise("1970-01-01T", flat, "")
            micros = pc.cast(pc.cast(joined, pa.timestamp("us")), pa.int64())
            cast = pa.ListArray.from_arrays(
                values.offsets, pc.cast(micros, element), mask=values.is_null()
            )
            return cast
        values = values.cast(pa.list_(element))
    return values


def rebuild(plans: Sequence[ColumnPlan], batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV-parsed columns -> the columns' real Arrow types."""
    arrays = []
    index = 0
    for plan in plans:
        width = len(plan.csv_columns())
        parts = [batch.column(index + i) for i in range(width)]
        index += width
        first = parts[0]
        if plan.transport == "date":
            arrays.append(first.view(pa.date32()))
        elif plan.transport == "timestamp":
            arrays.append(first.view(plan.arrow))
        elif plan.transport == "time":
            arrays.append(first.view(pa.time64("us")))
        elif plan.transport == "interval":
            arrays.append(
                pa.StructArray.from_arrays(parts, fields=list(INTERVAL_TYPE), mask=first.is_null())
            )
        elif plan.transport == "bytea":
            arrays.append(_hex_to_binary(first))
        elif plan.transport == "array":
            arrays.append(_json_arrays(plan, first))
        elif plan.transport == "json":
            arrays.append(first.cast(JSON_TYPE))
        elif plan.transport == "cast":
            arrays.append(first.cast(plan.arrow))
        else:
            arrays.append(first)
    schema = pa.schema([pa.field(p.name, p.arrow, nullable=p.nullable) for p in plans])
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def copy_statement(
    table: sql.Composable,
    columns: Iterable[sql.Composable],
    where: sql.Composable | None,
    order_by: str | None,
    fmt: str,
) -> sql.Composed:
    """``COPY (SELECT <columns> FROM <table> [WHERE ...] [ORDER BY <key> NULLS FIRST]) TO
    STDOUT (FORMAT <fmt>)``: the statement of every read, on either path (``csv`` here,
    ``binary`` for the Rust path). NULL keys come first (see the reader's docstring)."""
    query = sql.SQL("SELECT {cols} FROM {table}").format(
        cols=sql.SQL(", ").join(columns), table=table
    )
    if where is not None:
        query = sql.SQL("{q} WHERE {w}").format(q=query, w=where)
    if order_by:
        query = sql.SQL("{q} ORDER BY {o} NULLS FIRST").format(q=query, o=sql.Identifier(order_by))
    return sql.SQL("COPY ({q}) TO STDOUT (FORMAT {f})").format(q=query, f=sql.SQL(fmt))


def copy_query(
    table: sql.Composable,
    plans: Sequence[ColumnPlan],
    where: sql.Composable | None,
    order_by: str | None,
    *,
    select: Callable[[ColumnPlan], sql.Composable] = ColumnPlan.select,
    fmt: str = "csv",
) -> sql.Composed:
    """The COPY statement for a (partial) read of a table: each column as ``select``
    gives it, in ``fmt`` (the Rust path: its own select expressions and ``binary``)."""
    return copy_statement(table, (select(p) for p in plans), where, order_by, fmt)


def read_copy(
    conn: psycopg.Connection,
    query: sql.Composed,
    plans: Sequence[ColumnPlan],
    batch_bytes: int,
    where: str,
) -> Iterator[pa.RecordBatch]:
    """Run one COPY and yield its rows as Arrow batches of about ``batch_bytes`` of CSV."""
    names: list[str] = []
    types: dict[str, pa.DataType] = {}
    for plan in plans:
        for name, dtype in plan.csv_columns():
            names.append(name)
            types[name] = dtype
    texty = any(pa.types.is_string(t) for t in types.values())
    stream: CopyStream | None = None
    try:
        with conn.cursor() as cur, cur.copy(query) as copy:
            stream = CopyStream(copy)
            yield from _read_stream(stream, plans, names, types, texty, batch_bytes, where)
    except psycopg.Error as exc:
        first = stream.error if stream is not None and stream.error is not None else exc
        if is_connection_lost(first):
            raise ConnectionLost(
                f"{where}: the connection to PostgreSQL was lost during the read: "
                f"{first_line(first)}"
            ) from None
        raise


def _read_stream(
    stream: CopyStream,
    plans: Sequence[ColumnPlan],
    names: list[str],
    types: dict[str, pa.DataType],
    texty: bool,
    batch_bytes: int,
    where: str,
) -> Iterator[pa.RecordBatch]:
    """The batches of a started COPY (see read_copy)."""
    try:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(
                block_size=batch_bytes, column_names=names, use_threads=True
            ),
            parse_options=pcsv.ParseOptions(newlines_in_values=texty),
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return
        raise ReadError(f"{where}: {_explain(exc, plans)}") from None
    try:
        for batch in reader:
            yield rebuild(plans, batch)
    except pa.ArrowInvalid as exc:
        raise ReadError(f"{where}: {_explain(exc, plans)}") from None


def _explain(exc: Exception, plans: Sequence[ColumnPlan]) -> str:
    message = str(exc)
    names = [name.split("\x00")[0] for plan in plans for name, _ in plan.csv_columns()]
    found = re.search(r"CSV column #(\d+)", message)
    if found and int(found.group(1)) < len(names):
        message = f"column '{names[int(found.group(1))]}': {message}"
    if "decimal" in message.lower() and "NaN" in message:
        message += (
            ". A numeric(p,s) column holds NaN, which an Arrow decimal cannot: read it "
            "through a view that casts it, or filter it with stream_options.custom_where"
        )
    return message
