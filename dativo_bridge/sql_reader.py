"""SQLReader: an ArrowReader for any SQL database with a DB-API 2.0 driver.

A subclass gives a connection (``connect``), the tables (``tables``), their columns
(``columns``) and a ``type_map`` from declared column types to Arrow types; the base class
does discovery, full-table and incremental reads, batching by bytes and value conversion,
under the rules every Dativo reader keeps:

- Types come from the declared column types, never from the values. A value that does not
  fit its column's Arrow type (an int64 overflow, text in an integer column, a float in a
  decimal column) is a ReadError naming the stream, the column and the row; nothing is
  rounded or guessed. Text in a temporal or decimal column is parsed by Arrow's strict
  cast (ISO 8601 dates and times, exact decimal digits).
- The bookmark contract (docs/writing-plugins.md): incremental reads are ordered by the
  replication key with NULL keys first (``is_sorted``), and resume at ``>=`` the bookmark,
  which is bound as a value of the key's type, not as text.
"""

from __future__ import annotations

import decimal
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import pyarrow as pa

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.reading import comparable_bookmark
from dativo_bridge.settings import with_defaults, with_settings

logger = logging.getLogger("dativo.sql")

#: A type_map entry: an Arrow type, or a function of the declared type's parameters
#: (``DECIMAL(10, 2)`` -> ``f(10, 2)``).
ArrowTypeRule: TypeAlias = pa.DataType | Callable[..., pa.DataType]

#: Settings every SQLReader has, added to the subclass's ``config_jsonschema``.
SQL_SETTINGS: dict[str, Any] = {
    "batch_size_bytes": {
        "type": "integer",
        "default": 4 * 1024 * 1024,
        "minimum": 1,
        "description": "Arrow bytes per batch (memory grows with it).",
    },
}


def _decimal(precision: int = 0, scale: int = 0) -> pa.DataType:
    if precision <= 0:
        return pa.string()  # unconstrained: every digit kept, as text
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


#: Standard SQL type names -> Arrow: the default ``type_map`` (subclasses extend it:
#: ``type_map = {**SQL_TYPES, "MONEY": pa.decimal128(19, 4)}``). Each type holds every
#: value of its SQL type (REAL is float64, which holds single precision exactly).
SQL_TYPES: dict[str, ArrowTypeRule] = {
    **dict.fromkeys(("INTEGER", "INT", "BIGINT", "INT8", "INT4"), pa.int64()),
    **dict.fromkeys(("SMALLINT", "INT2"), pa.int16()),
    "TINYINT": pa.int16(),
    **dict.fromkeys(("REAL", "FLOAT", "DOUBLE", "DOUBLE PRECISION", "FLOAT8"), pa.float64()),
    **dict.fromkeys(("DECIMAL", "NUMERIC"), _decimal),
    **dict.fromkeys(
        ("TEXT", "VARCHAR", "CHAR", "CHARACTER", "CHARACTER VARYING", "NVARCHAR", "CLOB"),
        pa.string(),
    ),
    **dict.fromkeys(("BLOB", "BINARY", "VARBINARY", "BYTEA"), pa.binary()),
    **dict.fromkeys(("BOOLEAN", "BOOL"), pa.bool_()),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    **dict.fromkeys(("TIMESTAMP", "DATETIME"), pa.timestamp("us")),
    **dict.fromkeys(("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"), pa.timestamp("us", tz="UTC")),
}

_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s", "numeric": ":1"}
_DECLARED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class Column:
    """A column as the database declares it.

    Attributes:
        name: Column name.
        declared: Declared type as the database spells it (``VARCHAR(20)``).
        nullable: Whether it may hold NULL.
        primary_key: Position in the primary key (1-based), 0 if not part of it.
    """

    name: str
    declared: str
    nullable: bool = True
    primary_key: int = 0


class SQLReader(ArrowReader):
    """Tables of a DB-API 2.0 database as streams (docs/writing-plugins.md, "A SQL reader").

    Subclasses set ``name``, ``config_jsonschema`` and ``type_map``, and implement
    ``connect``, ``tables`` and ``columns``. Streams are FULL_TABLE unless the catalog
    metadata makes them INCREMENTAL with a replication key.
    """

    is_sorted = True  # incremental reads are ORDER BY the key, NULLs first
    #: Declared type (upper case, without parameters) -> Arrow type or rule.
    type_map: ClassVar[Mapping[str, ArrowTypeRule]] = SQL_TYPES
    #: The Arrow type of columns whose declared type is not in ``type_map`` (values read
    #: as their text); None refuses such columns at discovery.
    unknown_type: ClassVar[pa.DataType | None] = pa.string()
    #: The driver's DB-API paramstyle (``qmark``, ``format``, ``pyformat``, ``numeric``).
    paramstyle: ClassVar[str] = "qmark"
    #: Read Arrow batches straight from ADBC cursors (``fetch_record_batch``), cast to the
    #: declared types, instead of Python rows.
    arrow_fetch: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.config_jsonschema = with_settings(cls.config_jsonschema, SQL_SETTINGS)

    # --- what a subclass gives ----------------------------------------------------------
    def connect(self) -> Any:
        """A DB-API connection to the database ``self.config`` names."""
        raise NotImplementedError

    def tables(self, conn: Any) -> Sequence[tuple[str | None, str]]:
        """``(schema or None, table)`` for every table or view to offer, in a stable order."""
        raise NotImplementedError

    def columns(self, conn: Any, schema: str | None, table: str) -> Sequence[Column]:
        """The columns of one table, in table order."""
        raise NotImplementedError

    # --- overridable details ------------------------------------------------------------
    def quote(self, identifier: str) -> str:
        """``identifier`` quoted for SQL (standard double quotes)."""
        return '"' + identifier.replace('"', '""') + '"'

    def stream_name(self, schema: str | None, table: str) -> str:
        """The stream id of a table: ``schema-table``, or the table alone."""
        return f"{schema}-{table}" if schema else table

    def arrow_type(self, column: Column) -> pa.DataType | None:
        """The Arrow type of a declared column type, by ``type_map`` (exact spelling first,
        then the name without parameters); None when the map has no entry."""
        declared = column.declared.strip().upper()
        if declared in self.type_map:
            return self._apply(self.type_map[declared], ())
        match = _DECLARED.match(declared)
        if match is None or match.group(1) not in self.type_map:
            return None
        params = tuple(int(p) for p in re.findall(r"-?\d+", match.group(2) or ""))
        return self._apply(self.type_map[match.group(1)], params)

    @staticmethod
    def _apply(rule: ArrowTypeRule, params: tuple[int, ...]) -> pa.DataType:
        if isinstance(rule, pa.DataType):
            return rule
        return rule(*params)

    def bind_bookmark(self, bookmark: Any, key_type: pa.DataType) -> Any:
        """The bookmark (as STATE holds it: ISO text for a date-time) as the query parameter:
        a Python value of the key's type, so the database compares values, not text."""
        scalar = comparable_bookmark(bookmark, key_type)
        if scalar is None or not scalar.is_valid:
            raise ConfigError(f"the bookmark {bookmark!r} cannot be read as {key_type}")
        return scalar.as_py()

    # --- the ArrowReader ----------------------------------------------------------------
    def open(self, config: Mapping[str, Any]) -> None:
        super().open(with_defaults(self.config_jsonschema, config))
        self._batch_bytes = int(self.config["batch_size_bytes"])
        self._tables: dict[str, tuple[str | None, str, list[Column]]] = {}
        self._conn = self.connect()

    def discover(self) -> Sequence[StreamInfo]:
        streams = []
        self._tables = {}
        for schema, table in self.tables(self._conn):
            name = self.stream_name(schema, table)
            columns = list(self.columns(self._conn, schema, table))
            fields = []
            for column in columns:
                type_ = self.arrow_type(column)
                if type_ is None:
                    if self.unknown_type is None:
                        raise ConfigError(
                            f"stream '{name}', column '{column.name}': declared type "
                            f"{column.declared!r} is not in {type(self).__name__}.type_map"
                        )
                    logger.warning(
                        "stream '%s', column '%s': declared type %r is not in type_map; read as %s",
                        name,
                        column.name,
                        column.declared,
                        self.unknown_type,
                    )
                    type_ = self.unknown_type
                nullable = column.nullable and not column.primary_key
                fields.append(pa.field(column.name, type_, nullable=nullable))
            keys = [c.name for c in sorted(columns, key=lambda c: c.primary_key) if c.primary_key]
            self._tables[name] = (schema, table, columns)
            streams.append(StreamInfo(name, pa.schema(fields), tuple(keys)))
        return streams

    def _relation(self, stream: StreamInfo) -> str:
        if not self._tables:
            self.discover()
        try:
            schema, table, _ = self._tables[stream.name]
        except KeyError:
            raise ConfigError(f"stream '{stream.name}' is not a table of the database") from None
        return ".".join(self.quote(p) for p in (schema, table) if p)

    def query(self, stream: StreamInfo, bookmark: Any | None) -> tuple[str, list[Any]]:
        """The SELECT of a read and its parameters."""
        relation = self._relation(stream)
        select = ", ".join(self.quote(n) for n in stream.schema.names)
        sql, params = f"SELECT {select} FROM {relation}", []
        key = stream.replication_key
        if stream.replication_method == "INCREMENTAL" and key:
            column = self.quote(key)
            if bookmark is not None:
                # >=: rows committed late with the bookmark's own key are read again.
                sql += f" WHERE {column} >= {_PLACEHOLDERS.get(self.paramstyle, '?')}"
                params.append(self.bind_bookmark(bookmark, stream.schema.field(key).type))
                self._warn_null_keys(stream, relation, column)
            sql += f" ORDER BY CASE WHEN {column} IS NULL THEN 0 ELSE 1 END, {column}"
        return sql, params

    def _warn_null_keys(self, stream: StreamInfo, relation: str, column: str) -> None:
        cursor = self._conn.cursor()
        try:
            cursor.execute(f"SELECT COUNT(*) FROM {relation} WHERE {column} IS NULL")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row and row[0]:
            logger.warning(
                "stream '%s': %d row(s) have a NULL replication key; an incremental run reads "
                "rows at or after the bookmark, so they are read only by a full read",
                stream.name,
                row[0],
            )

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        sql, params = self.query(stream, bookmark)
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, params)
            if self.arrow_fetch and callable(getattr(cursor, "fetch_record_batch", None)):
                yield from self._arrow_batches(stream, cursor.fetch_record_batch())
            else:
                yield from self._batches(stream, cursor)
        finally:
            cursor.close()

    def _arrow_batches(self, stream: StreamInfo, source: Any) -> Iterator[pa.RecordBatch]:
        """An ADBC cursor's Arrow batches with the declared types (drivers infer theirs
        from the values), re-cut to about ``batch_size_bytes``."""
        pending: list[pa.RecordBatch] = []
        pending_bytes, row = 0, 0
        for raw in source:
            batch = self.conformed_batch(stream, raw, row)
            row += batch.num_rows
            per_row = max(1, batch.nbytes // max(1, batch.num_rows))
            start = 0
            while start < batch.num_rows:
                # The rows that take the pending bytes to the limit (rounded up).
                step = max(1, -(-(self._batch_bytes - pending_bytes) // per_row))
                part = batch.slice(start, step)
                start += step
                pending.append(part)
                pending_bytes += part.num_rows * per_row
                if pending_bytes >= self._batch_bytes:
                    yield _combine(pending, stream.schema)
                    pending, pending_bytes = [], 0
        if pending:
            yield _combine(pending, stream.schema)

    def conformed_batch(
        self, stream: StreamInfo, batch: pa.RecordBatch, first: int
    ) -> pa.RecordBatch:
        """An Arrow batch from the driver as ``stream.schema``: each column cast exactly
        (Arrow's safe cast), else converted value by value as DB-API rows are."""
        columns = []
        for i, field in enumerate(stream.schema):
            column = batch.column(i)
            if column.type != field.type and _lossy_in_arrow(column.type, field.type):
                column = _to_array(stream.name, field, column.to_pylist(), first)
            elif column.type != field.type:
                try:
                    column = column.cast(field.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    column = _to_array(stream.name, field, column.to_pylist(), first)
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, schema=stream.schema)

    def _batches(self, stream: StreamInfo, cursor: Any) -> Iterator[pa.RecordBatch]:
        """Rows fetched in chunks sized from the bytes per row seen so far, yielded as
        batches of about ``batch_size_bytes``."""
        pending: list[pa.RecordBatch] = []
        pending_bytes, fetch, row, seen_bytes = 0, 1, 0, 0
        while True:
            rows = cursor.fetchmany(fetch)
            if not rows:
                break
            batch = self.to_batch(stream, rows, row)
            row += len(rows)
            seen_bytes += batch.nbytes
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= self._batch_bytes:
                yield _combine(pending, stream.schema)
                pending, pending_bytes = [], 0
            # The first fetch is one row: later ones are sized by the bytes per row so far.
            per_row = max(1, seen_bytes // row)
            fetch = max(1, min(100_000, (self._batch_bytes - pending_bytes) // per_row))
        if pending:
            yield _combine(pending, stream.schema)

    def to_batch(
        self, stream: StreamInfo, rows: Sequence[Sequence[Any]], first: int
    ) -> pa.RecordBatch:
        """DB-API rows as a batch of ``stream.schema`` (``first``: the first row's number)."""
        columns = []
        for i, field in enumerate(stream.schema):
            values = [r[i] for r in rows]
            columns.append(_to_array(stream.name, field, values, first))
        return pa.RecordBatch.from_arrays(columns, schema=stream.schema)

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            self._conn = None
            conn.close()


def _combine(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema=schema).combine_chunks().to_batches()[0]


def _to_array(stream: str, field: pa.Field, values: list[Any], first: int) -> pa.Array:
    """A column's values as ``field.type``, exactly, or a ReadError naming the first value
    that does not fit."""
    try:
        return pa.array(values, field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    converted = _converted(field.type, values)
    if converted is not None:
        try:
            return pa.array(converted, field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        if all(v is None or isinstance(v, str | int | float) for v in values):
            return pa.array([None if v is None else str(v) for v in values], field.type)
    elif all(v is None or isinstance(v, str) for v in values) and _parsed_from_text(field.type):
        try:
            return pa.array(values, pa.string()).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    for offset, value in enumerate(values):
        try:
            pa.array(_converted(field.type, [value]) or [value], field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            if isinstance(value, str) and _parsed_from_text(field.type):
                try:
                    pa.array([value], pa.string()).cast(field.type)
                    continue
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
            raise ReadError(
                f"stream '{stream}', column '{field.name}', row {first + offset + 1}: a "
                f"{type(value).__name__} value that does not fit {field.type} (values are "
                "never rounded or guessed: map the declared type to a type that holds it)"
            ) from None
    raise ReadError(f"stream '{stream}', column '{field.name}': values do not fit {field.type}")


def _converted(type_: pa.DataType, values: list[Any]) -> list[Any] | None:
    """Values a driver returns in another Python type, converted exactly: 0/1 in a boolean
    column (SQLite), floats in a decimal column taken by their shortest decimal text (which
    must then fit the scale: pyarrow refuses a value that would need rounding)."""
    if pa.types.is_boolean(type_) and all(v in (None, 0, 1) for v in values):
        return [None if v is None else bool(v) for v in values]
    if pa.types.is_decimal(type_) and any(isinstance(v, float) for v in values):
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return None
        return [decimal.Decimal(repr(v)) if isinstance(v, float) else v for v in values]
    return None


def _lossy_in_arrow(got: pa.DataType, want: pa.DataType) -> bool:
    """Casts Arrow performs without complaint that lose values: float -> decimal rounds
    (1.005 -> 1.00), integer -> boolean makes every non-zero true."""
    if pa.types.is_floating(got) and pa.types.is_decimal(want):
        return True
    return bool(pa.types.is_integer(got) and pa.types.is_boolean(want))


def _parsed_from_text(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_temporal(type_) or pa.types.is_decimal(type_) or pa.types.is_boolean(type_)
    )
