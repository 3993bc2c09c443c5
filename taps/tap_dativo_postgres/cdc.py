"""The change stream of one table: pgoutput messages from the pipeline's slot, assembled
into whole transactions in commit order, and turned into Arrow batches with exactly the
types the COPY path gives (docs/cdc.md).

Values arrive as the type's text output. The common types are typed straight from that
text by Arrow (``_direct``): integers, floats, bool, numeric as a decimal, the string
types (text, varchar, uuid, enums, ...), json(b), bytea (hex), date, timestamp and
timestamptz (+/-infinity as the COPY path gives them). Every other column, and a column
whose text Arrow does not parse (a numeric NaN, a BC date, a non-ISO DateStyle, a
historical time zone offset in seconds), is converted as before: the chunk's rows are
copied into a temporary table with the source's column types and read back with the same
COPY and column plans as the table itself (catalog.py, copy.py): one mapping, the same
Arrow types and the same edge cases (intervals, arrays). Both give the same Arrow values
(tests/integration/postgres/test_cdc_direct.py compares them).

Each row carries ``_sdc_lsn`` (the end LSN of its transaction's commit record, the same
for every row of a transaction and increasing in commit order), ``_sdc_deleted_at``
(the commit time, for deletes and truncates) and ``_sdc_committed_at`` (the commit
time). A delete carries the key (every old value under REPLICA IDENTITY FULL); an update
that changes the key is a delete of the old key and then the new row. A TRUNCATE of the
table is a *truncate record* at its place among its transaction's changes: every column
null (the key too) but ``_sdc_lsn``, ``_sdc_deleted_at`` and ``_sdc_committed_at``: the
shape target-dativo-iceberg applies by emptying the table (docs/cdc.md, 'TRUNCATE').
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from dativo_bridge.errors import ReadError
from tap_dativo_postgres import copy as pgcopy
from tap_dativo_postgres import pgoutput
from tap_dativo_postgres import slot as pgslot
from tap_dativo_postgres.catalog import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    ColumnPlan,
    TableInfo,
)

logger = logging.getLogger("dativo.postgres")

LSN_COLUMN = "_sdc_lsn"
DELETED_COLUMN = "_sdc_deleted_at"
COMMITTED_COLUMN = "_sdc_committed_at"
_TIME = pa.timestamp("us", tz="UTC")
#: The columns every LOG_BASED record carries besides the table's own.
CDC_FIELDS = (
    pa.field(LSN_COLUMN, pa.int64()),
    pa.field(DELETED_COLUMN, _TIME),
    pa.field(COMMITTED_COLUMN, _TIME),
)
_ORD = "_dativo_cdc_ord"


def log_based_schema(schema: pa.Schema) -> pa.Schema:
    """A table's schema as a change stream carries it: every column nullable (a delete
    carries only the key, a truncate no column), then the CDC columns."""
    own = [f.with_nullable(True) for f in schema if f.name not in {c.name for c in CDC_FIELDS}]
    return pa.schema([*own, *CDC_FIELDS])


@dataclass(slots=True)
class Row:
    """One change as it goes into a batch: the relation's values (text or None)."""

    values: tuple[pgoutput.Value, ...]
    relation: pgoutput.Relation
    lsn: int
    commit_us: int
    deleted: bool


@dataclass
class _Transaction:
    begin: pgoutput.Begin
    rows: list[tuple[tuple[pgoutput.Value, ...], pgoutput.Relation, bool]] = field(
        default_factory=list
    )


class SchemaChanged(Exception):
    """The table gained a column the stream was discovered without (the read stops
    before it; the next run discovers the column and goes on from there)."""

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(", ".join(columns))
        self.columns = list(columns)


class ChangeStream:
    """The changes of one table in a slot, from ``after`` (exclusive) up to ``upto``.

    Args:
        conn: A connection of its own (not autocommit: the slot is read through a
            cursor in one transaction, beside the temporary table of the conversion).
        slot: The pipeline's slot.
        publication: The publication that publishes the table.
        table: The discovered table.
        plans: The plans of the stream's selected table columns.
        schema: The stream's schema (``log_based_schema``, restricted to the selection).
        batch_rows: Rows per batch (transactions are never split; a larger one is one
            batch).
        where: ``stream '<name>'`` for errors.
        rust_dsn: Read the slot with the extension's replication client
            (``dativo_accel.ReplicationReader``, START_REPLICATION over a walsender
            connection) at this connection string; None: poll
            ``pg_logical_slot_peek_binary_changes`` (the Python path). Both hand the
            same pgoutput messages to the same decoding.
        rust_tls: The extension's TLS settings for ``rust_dsn`` (``accel.rust_tls``: the
            same sslmode and sslrootcert meanings as the COPY connections); None: no TLS.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        slot: str,
        publication: str,
        table: TableInfo,
        plans: Sequence[ColumnPlan],
        schema: pa.Schema,
        batch_rows: int,
        where: str,
        rust_dsn: str | None = None,
        rust_tls: Mapping[str, str] | None = None,
    ) -> None:
        self.conn = conn
        self.rust_dsn = rust_dsn
        self.rust_tls = dict(rust_tls) if rust_tls else None
        self.slot = slot
        self.publication = publication
        self.table = table
        self.plans = list(plans)
        self.schema = schema
        self.batch_rows = max(1, batch_rows)
        self.where = where
        self.known = {c.name for c in table.columns}
        row = conn.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            [table.schema, table.table],
        ).fetchone()
        if row is None:
            raise ReadError(f"{where}: table {table.schema}.{table.table} no longer exists")
        self.oid = int(row[0])
        self._types: dict[str, str] = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                [self.oid],
            ).fetchall()
        )
        conn.commit()
        self._temp: sql.Identifier | None = None
        #: After each batch: every change of the table up to this LSN has been yielded.
        self.position: int | None = None
        #: The last ``batches`` stopped at a schema change (not at ``upto``).
        self.stopped = False

    def batches(self, after: int, upto: int) -> Iterator[pa.RecordBatch]:
        """Batches of whole transactions committed after ``after``, up to ``upto``;
        ``position`` is set before each is yielded (and to ``upto`` at the end, unless a
        schema change stopped the read)."""
        self.position = after
        if self.rust_dsn is not None and self.assemble_in_rust:
            yield from self._rust_batches(after, upto)
            return
        pending: list[Row] = []
        try:
            for txn_rows, end_lsn in self._transactions(after, upto):
                pending.extend(txn_rows)
                if len(pending) >= self.batch_rows:
                    batch = self._batch(pending)
                    pending = []
                    self.position = end_lsn
                    yield batch
                elif not pending:
                    self.position = end_lsn
        except SchemaChanged as change:
            if pending:
                batch = self._batch(pending)
                self.position = pending[-1].lsn
                yield batch
            self._schema_changed(change.columns, after)
            return
        if pending:
            batch = self._batch(pending)
            self.position = pending[-1].lsn
            yield batch
        self._end()
        self.stopped = False
        self.position = max(self.position or after, upto)

    def _schema_changed(self, columns: Sequence[str], after: int) -> None:
        logger.warning(
            "%s: table %s.%s gained column(s) %s at a change after LSN %s; the read "
            "stops before it, and the next run (which discovers the column) goes on "
            "from there with the new schema",
            self.where,
            self.table.schema,
            self.table.table,
            ", ".join(columns),
            pgoutput.format_lsn(self.position or after),
        )
        self._end()
        self.stopped = True

    #: With the Rust client, assemble the table's transactions in Rust
    #: (``dativo_accel.TableChangeReader``: batches of text columns, no Python object per
    #: value); False: the client hands decoded changes to ``_transactions`` (the reference
    #: the tests compare it with).
    assemble_in_rust = True

    def _rust_batches(self, after: int, upto: int) -> Iterator[pa.RecordBatch]:
        """``batches`` read and assembled by the extension (the same rules as
        ``_transactions``, implemented in rust_accel/src/repl/changes.rs)."""
        import dativo_accel

        assert self.rust_dsn is not None
        pgslot.wait_until_free(self.conn, self.slot)
        confirmed = self._confirmed()
        wanted = [p.name for p in self.plans if p.name in self._types]
        try:
            stream = dativo_accel.TableChangeReader(
                self.rust_dsn,
                self.slot,
                self.publication,
                after,
                upto,
                confirmed,
                self.oid,
                wanted,
                list(self.table.primary_key),
                sorted(self.known),
                self.batch_rows,
                tls=self.rust_tls,
            )
        except dativo_accel.CopyError as exc:
            raise ReadError(f"{self.where}: cannot stream slot '{self.slot}': {exc}") from None
        try:
            while True:
                try:
                    item = next(stream, None)
                except dativo_accel.CopyError as exc:
                    raise ReadError(f"{self.where}: reading slot '{self.slot}': {exc}") from None
                if item is None:
                    break
                raw, position, added = item
                texts = pa.record_batch(raw)
                if texts.num_rows:
                    batch = self._text_batch(texts)
                    self.position = position
                    yield batch
                if added is not None:
                    self._schema_changed(added, after)
                    return
        finally:
            stream.close()
        self._end()
        self.stopped = False
        self.position = max(self.position or after, upto)

    def _text_batch(self, texts: pa.RecordBatch) -> pa.RecordBatch:
        """The stream's batch for a batch of ``TableChangeReader``: the wanted columns'
        text, then the commit's end LSN, its time in microseconds and the deleted flag
        (taken by position: a table may have a column of any name)."""
        rows = texts.num_rows
        wanted = [p.name for p in self.plans if p.name in self._types]
        position = {n: i for i, n in enumerate(wanted)}
        lsn, commit_us, deleted = texts.columns[len(wanted) :]
        out: dict[str, pa.Array] = {}
        rest: list[str] = []
        for plan in self.plans:
            if plan.name not in self._types:
                out[plan.name] = pa.nulls(rows, plan.arrow)
                continue
            text = texts.column(position[plan.name])
            typed = _typed(plan, text) if self.direct else None
            if typed is None:
                rest.append(plan.name)
            else:
                out[plan.name] = typed
        if rest:
            columns = {n: texts.column(position[n]).to_pylist() for n in rest}
            out.update(self._through_table(rows, columns, rest))
        commit = commit_us.cast(_TIME)
        out[LSN_COLUMN] = lsn
        out[COMMITTED_COLUMN] = commit
        out[DELETED_COLUMN] = pc.if_else(deleted, commit, pa.nulls(rows, _TIME))
        return pa.RecordBatch.from_arrays([out[f.name] for f in self.schema], schema=self.schema)

    def _confirmed(self) -> int:
        """The slot's confirmed position (what the Rust client's status updates report)."""
        confirmed = pgslot.slot_position(self.conn, self.slot)
        self.conn.commit()
        if confirmed is None:
            raise ReadError(f"{self.where}: replication slot '{self.slot}' does not exist")
        return confirmed

    def _end(self) -> None:
        """End the read's transaction (its temporary table goes with it)."""
        self.conn.rollback()
        self._temp = None

    def _transactions(self, after: int, upto: int) -> Iterator[tuple[list[Row], int]]:
        """(rows, end LSN) of every transaction committed in (after, upto] that
        changed the table (only committed work is decoded: a rolled-back transaction
        never appears)."""
        relations: dict[int, pgoutput.Relation] = {}
        txn: _Transaction | None = None
        keys = list(self.table.primary_key)
        key_of: tuple[pgoutput.Relation | None, list[int]] = (None, [])
        pgslot.wait_until_free(self.conn, self.slot)
        with contextlib.closing(self._messages(after, upto)) as messages:
            for data in messages:
                message = data if isinstance(data, pgoutput.Change) else pgoutput.decode(data)
                if isinstance(message, pgoutput.Begin):
                    txn = _Transaction(message)
                elif isinstance(message, pgoutput.Relation):
                    relations[message.oid] = message
                    if message.oid == self.oid:
                        added = [c.name for c in message.columns if c.name not in self.known]
                        if added and txn is not None and txn.begin.final_lsn >= after:
                            raise SchemaChanged(added)
                elif isinstance(message, pgoutput.Change):
                    if message.relation != self.oid or txn is None:
                        continue
                    relation = relations[message.relation]
                    if relation is not key_of[0]:
                        key_of = (relation, _key_index(relation, keys))
                    txn.rows.extend(_rows(message, relation, key_of[1]))
                elif isinstance(message, pgoutput.Truncate):
                    if self.oid in message.relations and txn is not None:
                        txn.rows.append(_truncate_row(relations.get(self.oid), self.table))
                elif isinstance(message, pgoutput.Commit):
                    if txn is not None and message.end_lsn > after and txn.rows:
                        yield (
                            [
                                Row(values, rel, message.end_lsn, message.commit_time_us, d)
                                for values, rel, d in txn.rows
                            ],
                            message.end_lsn,
                        )
                    txn = None

    def _messages(self, after: int, upto: int) -> Generator[bytes | pgoutput.Change, None, None]:
        """The slot's pgoutput messages for transactions committed before ``upto`` (the
        Python path also gives those up to ``after``, which the caller skips). The Rust
        client decodes row changes itself (the values as ``pgoutput.decode`` gives them)."""
        if self.rust_dsn is None:
            with self.conn.cursor(name="dativo_cdc_changes") as cur:
                cur.itersize = 2000
                cur.execute(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, "
                    "NULL, 'proto_version', '1', 'publication_names', %s)",
                    [self.slot, pgoutput.format_lsn(upto), self.publication],
                )
                for (data,) in cur:
                    yield bytes(data)
            return
        import dativo_accel

        confirmed = self._confirmed()
        try:
            stream = dativo_accel.ReplicationReader(
                self.rust_dsn,
                self.slot,
                self.publication,
                after,
                upto,
                confirmed,
                unchanged=pgoutput.UNCHANGED,
                tls=self.rust_tls,
            )
        except dativo_accel.CopyError as exc:
            raise ReadError(f"{self.where}: cannot stream slot '{self.slot}': {exc}") from None
        try:
            change = pgoutput.Change
            for chunk in stream:
                for _lsn, data in chunk:
                    yield data if type(data) is bytes else change(*data)
        except dativo_accel.CopyError as exc:
            raise ReadError(f"{self.where}: reading slot '{self.slot}': {exc}") from None
        finally:
            stream.close()

    def _batch(self, rows: list[Row]) -> pa.RecordBatch:
        """Arrow columns for ``rows``, converted through a temporary table (see the
        module docstring)."""
        names = [p.name for p in self.plans]
        converted = self._convert(rows, names)
        lsn = pa.array([r.lsn for r in rows], pa.int64())
        commit_us = pa.array([r.commit_us for r in rows], pa.int64()).cast(_TIME)
        deleted = pa.array([r.commit_us if r.deleted else None for r in rows], pa.int64()).cast(
            _TIME
        )
        arrays = []
        for f in self.schema:
            if f.name == LSN_COLUMN:
                arrays.append(lsn)
            elif f.name == DELETED_COLUMN:
                arrays.append(deleted)
            elif f.name == COMMITTED_COLUMN:
                arrays.append(commit_us)
            else:
                arrays.append(converted[f.name])
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    #: Type the common types straight from their text (False: every column through the
    #: temporary table, the reference the tests compare the direct conversion with).
    direct = True

    def _convert(self, rows: list[Row], names: list[str]) -> dict[str, pa.Array]:
        present = [n for n in names if n in self._types]
        columns = _columns(rows, present)
        out: dict[str, pa.Array] = {}
        rest: list[str] = []
        for plan in self.plans:
            if plan.name not in self._types:
                out[plan.name] = pa.nulls(len(rows), plan.arrow)
                continue
            values = columns[plan.name]
            # An unchanged TOASTed value is no string: never typed directly.
            typed = _direct(plan, values) if self.direct else None
            if typed is None:
                if pgoutput.UNCHANGED in values:
                    _text(values, values.index(pgoutput.UNCHANGED), plan.name, self.where)
                rest.append(plan.name)
            else:
                out[plan.name] = typed
        if rest:
            out.update(self._through_table(len(rows), columns, rest))
        return out

    def _through_table(
        self, rows: int, columns: Mapping[str, Sequence[pgoutput.Value]], names: list[str]
    ) -> dict[str, pa.Array]:
        """``names``' columns converted through the temporary table."""
        if self._temp is None:
            self._temp = sql.Identifier(f"dativo_cdc_{self.oid}")
            columns_sql = [sql.SQL("{} int8").format(sql.Identifier(_ORD))] + [
                sql.SQL("{} {}").format(sql.Identifier(p.name), sql.SQL(self._types[p.name]))
                for p in self.plans
                if p.name in self._types
            ]
            self.conn.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({})").format(
                    self._temp, sql.SQL(", ").join(columns_sql)
                )
            )
        self.conn.execute(sql.SQL("TRUNCATE {}").format(self._temp))
        with self.conn.cursor() as cur:
            target = sql.SQL("COPY {} ({}) FROM STDIN").format(
                self._temp, sql.SQL(", ").join(sql.Identifier(n) for n in [_ORD, *names])
            )
            with cur.copy(target) as copy:
                for row in zip(range(rows), *(columns[n] for n in names), strict=True):
                    copy.write_row(row)
        # The order column is read back too: a CSV line of a lone NULL column would be
        # empty, and Arrow's CSV reader skips empty lines.
        order = ColumnPlan(_ORD, "int8", pa.int64(), "plain", nullable=False)
        plans = [order, *(p for p in self.plans if p.name in names)]
        query = pgcopy.copy_query(self._temp, plans, None, _ORD)
        parts = list(pgcopy.read_copy(self.conn, query, plans, 16 << 20, self.where))
        table = (
            pa.Table.from_batches(parts)
            if parts
            else pa.schema([pa.field(p.name, p.arrow) for p in plans]).empty_table()
        )
        return {p.name: table.column(p.name).combine_chunks() for p in plans[1:]}


def _columns(rows: list[Row], names: list[str]) -> dict[str, list[pgoutput.Value]]:
    """The rows' values column by column (None where a row's relation lacks the column),
    one pass per run of rows sharing a relation."""
    out: dict[str, list[pgoutput.Value]] = {n: [] for n in names}
    start = 0
    while start < len(rows):
        relation = rows[start].relation
        end = start + 1
        while end < len(rows) and rows[end].relation is relation:
            end += 1
        values = [r.values for r in rows[start:end]]
        index = {c.name: j for j, c in enumerate(relation.columns)}
        for name in names:
            j = index.get(name)
            if j is None:
                out[name].extend([None] * (end - start))
            elif min(map(len, values)) > j:
                out[name].extend(map(operator.itemgetter(j), values))
            else:
                out[name].extend([v[j] if j < len(v) else None for v in values])
        start = end
    return out


#: Arrow types Arrow's own cast parses from PostgreSQL's text output exactly as the CSV
#: COPY path does (the same parsers: integers, floats with NaN and +/-Infinity, decimals).
_CASTS = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal128)


def _direct(plan: ColumnPlan, values: list[pgoutput.Value]) -> pa.Array | None:
    """``plan``'s column typed from pgoutput's text values, or None: not a type (or a
    value) handled here, for the temporary table to convert."""
    try:
        text = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a binary-format value: not text
    return _typed(plan, text)


def _typed(plan: ColumnPlan, text: pa.Array) -> pa.Array | None:
    """``plan``'s column typed from a string array of the values' text, or None (see
    ``_direct``)."""
    try:
        if plan.transport == "plain":
            if pa.types.is_string(plan.arrow):
                return text
            if pa.types.is_boolean(plan.arrow):
                return _bool(text)
            if any(check(plan.arrow) for check in _CASTS):
                return text.cast(plan.arrow)
            return None
        if plan.transport == "json":
            return text.cast(plan.arrow)
        if plan.transport == "bytea":
            return _bytea(text)
        if plan.transport == "date":
            return _infinite(text, pa.date32(), pa.int32(), INT32_MAX, INT32_MIN)
        if plan.transport == "timestamp":
            return _infinite(text, plan.arrow, pa.int64(), INT64_MAX, INT64_MIN)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


def _bool(text: pa.Array) -> pa.Array | None:
    is_true = pc.equal(text, "t")
    if pc.any(pc.invert(pc.or_(is_true, pc.equal(text, "f")))).as_py():
        return None
    return is_true


def _bytea(text: pa.Array) -> pa.Array | None:
    """bytea's hex output (``\\x0a1b``; ``bytea_output = escape`` goes the other way)."""
    if pc.any(pc.invert(pc.starts_with(text, "\\x"))).as_py():
        return None
    return pgcopy._hex_to_binary(pc.utf8_slice_codeunits(text, 2))


def _infinite(
    text: pa.Array, arrow: pa.DataType, storage: pa.DataType, high: int, low: int
) -> pa.Array:
    """A date or timestamp column: ISO text parsed by Arrow, +/-infinity as the extreme
    integers the COPY path gives (catalog.py)."""
    up = pc.equal(text, "infinity")
    down = pc.equal(text, "-infinity")
    if not pc.any(pc.or_(up, down)).as_py():
        return text.cast(arrow)
    finite = pc.if_else(pc.or_(up, down), pa.scalar(None, pa.string()), text)
    ints = finite.cast(arrow).view(storage)
    ints = pc.if_else(up, pa.scalar(high, storage), ints)
    ints = pc.if_else(down, pa.scalar(low, storage), ints)
    return ints.view(arrow)


def _text(values: Sequence[pgoutput.Value], index: int | None, name: str, where: str) -> object:
    if index is None or index >= len(values):
        return None
    value = values[index]
    if value is pgoutput.UNCHANGED:
        raise ReadError(f"{where}: column '{name}': an unchanged TOASTed value reached a batch")
    return value


def _truncate_row(
    relation: pgoutput.Relation | None, table: TableInfo
) -> tuple[tuple[pgoutput.Value, ...], pgoutput.Relation, bool]:
    """The truncate record of a TRUNCATE: no column value, deleted (pgoutput sends the
    table's Relation before the Truncate; without one, a relation with no column)."""
    if relation is None:
        relation = pgoutput.Relation(0, table.schema, table.table, "d", ())
    return (tuple(None for _ in relation.columns), relation, True)


def _key_index(relation: pgoutput.Relation, keys: Sequence[str]) -> list[int]:
    """The positions of the primary key's columns in ``relation``."""
    wanted = set(keys)
    return [i for i, c in enumerate(relation.columns) if c.name in wanted]


def _rows(
    change: pgoutput.Change, relation: pgoutput.Relation, index: list[int]
) -> list[tuple[tuple[pgoutput.Value, ...], pgoutput.Relation, bool]]:
    """The rows a change becomes: insert -> the row; delete -> the old key (or old row);
    update -> the new row, after a delete of the old key when the key changed."""
    if change.kind == "delete":
        assert change.old is not None
        return [(change.old, relation, True)]
    new = pgoutput.new_row(change, relation)
    old = change.old
    if change.kind == "update" and old is not None and any(old[i] != new[i] for i in index):
        return [(old, relation, True), (new, relation, False)]
    return [(new, relation, False)]
