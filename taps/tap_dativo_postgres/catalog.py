"""PostgreSQL catalog -> Dativo streams: tables and views, columns, keys, and for every
column the Arrow type and the SELECT expression that moves it exactly through CSV COPY.

The full table is in docs/postgres-types.md. Text COPY is ambiguous for some types, so
those are sent in an unambiguous form and rebuilt in Arrow (see ``ColumnPlan.transport``):

- date / timestamp / timestamptz / time: integers (days or microseconds since the epoch);
  PostgreSQL's +/-infinity become the extreme integers it uses itself;
- interval: three integer columns (months, days, microseconds), rebuilt as a struct;
- bytea: hex, decoded in one call over the whole buffer;
- arrays: ``array_to_json`` text, parsed by Arrow's JSON reader against the element type;
- json/jsonb: the JSON text itself (a SQL NULL and a JSON ``null`` stay distinct).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
import pyarrow as pa
from psycopg import sql

from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.schema import JSON_TYPE

if TYPE_CHECKING:
    from dativo_bridge.discovery import SqlDetails

logger = logging.getLogger("dativo.postgres")

INTERVAL_TYPE = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("microseconds", pa.int64())]
)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

_DISCOVER = """
SELECT n.nspname, c.relname, c.relkind, a.attname, a.attnum, a.attnotnull,
       COALESCE(bt.typname, t.typname) AS typname,
       COALESCE(bt.typcategory, t.typcategory) AS typcategory,
       COALESCE(CASE WHEN t.typtype = 'd' THEN t.typtypmod END, a.atttypmod) AS typmod,
       et.typname AS elemname, et.typcategory AS elemcategory,
       format_type(a.atttypid, a.atttypmod) AS declared,
       COALESCE(bt.typtype, t.typtype) AS typtype, et.typtype AS elemtype
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_type et ON et.oid = COALESCE(bt.typelem, t.typelem)
     AND COALESCE(bt.typcategory, t.typcategory) = 'A'
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'
  AND (c.relkind <> 'r' OR NOT c.relispartition)
ORDER BY n.nspname, c.relname, a.attnum
"""

_PRIMARY_KEYS = """
SELECT n.nspname, c.relname, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE i.indisprimary
ORDER BY n.nspname, c.relname, k.pos
"""

_SIMPLE: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "oid": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "char": pa.string(),
    "citext": pa.string(),
    "uuid": pa.string(),
    "timetz": pa.string(),
    "inet": pa.string(),
    "cidr": pa.string(),
    "macaddr": pa.string(),
    "macaddr8": pa.string(),
    "xml": pa.string(),
    "money": pa.string(),
    "bit": pa.string(),
    "varbit": pa.string(),
    "tsvector": pa.string(),
    "tsquery": pa.string(),
}
_TIMES = {"date", "timestamp", "timestamptz", "time"}


@dataclass
class ColumnPlan:
    """How one column is selected, parsed from CSV and rebuilt in Arrow.

    Attributes:
        name: Column name.
        pg_type: Base type name (domains resolved to their base type).
        arrow: The Arrow type of the column in batches.
        transport: One of ``plain``, ``date``, ``timestamp``, ``time``, ``interval``,
            ``bytea``, ``array``, ``json``, ``cast`` (text cast in Arrow), ``text``
            (unknown type sent as text).
        nullable: False for NOT NULL columns.
        declared: The column's type as declared (``format_type``: ``numeric(12,2)``, a
            domain's name), the catalog's ``sql-datatype``.
    """

    name: str
    pg_type: str
    arrow: pa.DataType
    transport: str
    nullable: bool = True
    declared: str = ""

    def csv_columns(self) -> list[tuple[str, pa.DataType]]:
        """(name, type) of the CSV column(s) this column is sent as."""
        if self.transport == "interval":
            return [
                (f"{self.name}\x00m", pa.int32()),
                (f"{self.name}\x00d", pa.int32()),
                (f"{self.name}\x00us", pa.int64()),
            ]
        if self.transport in ("date",):
            return [(self.name, pa.int32())]
        if self.transport in ("timestamp", "time"):
            return [(self.name, pa.int64())]
        if self.transport in ("bytea", "array", "json", "text", "cast"):
            return [(self.name, pa.string())]
        return [(self.name, self.arrow)]

    def select(self) -> sql.Composable:
        """The SELECT expression(s) for this column."""
        col = sql.Identifier(self.name)
        if self.transport == "date":
            return sql.SQL(
                "CASE WHEN {c} = 'infinity' THEN {hi} WHEN {c} = '-infinity' THEN {lo} "
                "ELSE {c} - DATE '1970-01-01' END"
            ).format(c=col, hi=sql.Literal(INT32_MAX), lo=sql.Literal(INT32_MIN))
        if self.transport == "timestamp":
            return sql.SQL(
                "CASE WHEN {c} = 'infinity' THEN {hi} WHEN {c} = '-infinity' THEN {lo} "
                "ELSE (EXTRACT(EPOCH FROM {c}) * 1000000)::int8 END"
            ).format(c=col, hi=sql.Literal(INT64_MAX), lo=sql.Literal(INT64_MIN))
        if self.transport == "time":
            return sql.SQL("(EXTRACT(EPOCH FROM {c}) * 1000000)::int8").format(c=col)
        if self.transport == "interval":
            return sql.SQL(
                "(EXTRACT(YEAR FROM {c}) * 12 + EXTRACT(MONTH FROM {c}))::int4, "
                "EXTRACT(DAY FROM {c})::int4, "
                "((EXTRACT(HOUR FROM {c}) * 3600 + EXTRACT(MINUTE FROM {c}) * 60) * 1000000"
                " + EXTRACT(MICROSECONDS FROM {c}))::int8"
            ).format(c=col)
        if self.transport == "bytea":
            return sql.SQL("encode({c}, 'hex')").format(c=col)
        if self.transport == "array":
            return sql.SQL("array_to_json({c})").format(c=col)
        if self.transport == "text" or self.pg_type in ("money",):
            return sql.SQL("{c}::text").format(c=col)
        return col


@dataclass
class TableInfo:
    """A discovered table or view."""

    schema: str
    table: str
    kind: str
    columns: list[ColumnPlan] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)

    @property
    def stream_id(self) -> str:
        """singer-sdk's SQL tap stream id: ``<schema>-<table>``."""
        return f"{self.schema}-{self.table}"

    def stream_info(self) -> StreamInfo:
        """The Arrow view of the table."""
        schema = pa.schema([pa.field(c.name, c.arrow, nullable=c.nullable) for c in self.columns])
        return StreamInfo(self.stream_id, schema, tuple(self.primary_key))

    def sql_details(self) -> SqlDetails:
        """The catalog metadata of the table beyond its Arrow schema."""
        # Imported here: discovery needs singer-sdk, which an in-process read does not load.
        from dativo_bridge.discovery import SqlDetails

        return SqlDetails(
            schema_name=self.schema,
            table_name=self.table,
            is_view=self.kind in ("v", "m"),
            sql_datatypes={c.name: c.declared for c in self.columns if c.declared},
            valid_replication_keys=[c.name for c in self.columns if is_replication_key(c)],
        )

    def column(self, name: str) -> ColumnPlan:
        """The plan of column ``name``."""
        for plan in self.columns:
            if plan.name == name:
                return plan
        raise KeyError(name)


#: Types whose PostgreSQL order is the order of their Arrow values, so that an incremental
#: read (ORDER BY the key, bookmark = the largest value read) never sees a key go back.
#: Text is not among them: a collation orders it differently from its bytes. Floats are
#: not either (NaN sorts above every number in PostgreSQL).
_KEY_TYPES = {"int2", "int4", "int8", "oid", "date", "timestamp", "timestamptz", "uuid"}


def is_replication_key(plan: ColumnPlan) -> bool:
    """True if an incremental read can use the column as its replication key."""
    if plan.transport == "array":
        return False
    if plan.pg_type == "numeric":
        return pa.types.is_decimal(plan.arrow)
    return plan.pg_type in _KEY_TYPES


def sql_details(reader: ArrowReader, info: StreamInfo) -> SqlDetails | None:
    """The catalog metadata of a PostgresReader's stream (see dativo_bridge.discovery)."""
    table = getattr(reader, "_tables", {}).get(info.name)
    return table.sql_details() if isinstance(table, TableInfo) else None


def _numeric_type(typmod: int) -> pa.DataType:
    if typmod is None or typmod < 4:
        return pa.string()  # unconstrained numeric: every digit kept, as text
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (typmod - 4) & 0x7FF  # 11 bits, signed since PostgreSQL 15
    if scale & 0x400:
        scale -= 0x800
    if scale < 0 or scale > precision:  # e.g. numeric(5,-2): no Arrow decimal holds it
        return pa.string()
    if precision <= 38:
        return pa.decimal128(precision, scale)
    if precision <= 76:
        return pa.decimal256(precision, scale)
    return pa.string()


def _scalar_plan(
    name: str, typname: str, category: str, typtype: str, typmod: int, declared: str, where: str
) -> tuple[pa.DataType, str]:
    if typname in _SIMPLE:
        transport = "text" if typname in ("money", "bit", "varbit") else "plain"
        return _SIMPLE[typname], transport
    if typname == "numeric":
        arrow = _numeric_type(typmod)
        # Arrow's CSV reader has no decimal256 conversion: such columns come as text.
        return arrow, "cast" if pa.types.is_decimal256(arrow) else "plain"
    if typname == "date":
        return pa.date32(), "date"
    if typname == "timestamp":
        return pa.timestamp("us"), "timestamp"
    if typname == "timestamptz":
        return pa.timestamp("us", tz="UTC"), "timestamp"
    if typname == "time":
        return pa.time64("us"), "time"
    if typname == "interval":
        return INTERVAL_TYPE, "interval"
    if typname == "bytea":
        return pa.binary(), "bytea"
    if typname in ("json", "jsonb"):
        return JSON_TYPE, "json"
    if typtype == "e" or category == "E":
        return pa.string(), "plain"
    logger.warning(
        "%s: column %s has type %s, which Dativo does not map; it is read as text",
        where,
        name,
        declared,
    )
    return pa.string(), "text"


def plan_column(
    name: str,
    typname: str,
    category: str,
    typtype: str,
    typmod: int,
    elemname: str | None,
    elemcategory: str | None,
    elemtype: str | None,
    declared: str,
    notnull: bool,
    where: str,
) -> ColumnPlan:
    """The Arrow type and transport of one column (see the module docstring)."""
    if category == "A" and elemname:
        elem_typmod = typmod
        if elemname in ("bytea", "json", "jsonb", "interval") or elemname.startswith("_"):
            logger.warning("%s: column %s (%s) is read as JSON text", where, name, declared)
            return ColumnPlan(name, typname, JSON_TYPE, "array", not notnull, declared)
        element, _ = _scalar_plan(
            name, elemname, elemcategory or "", elemtype or "", elem_typmod, declared, where
        )
        if elemname == "date":
            element = pa.date32()
        return ColumnPlan(name, typname, pa.list_(element), "array", not notnull, declared)
    arrow, transport = _scalar_plan(name, typname, category, typtype, typmod, declared, where)
    return ColumnPlan(name, typname, arrow, transport, not notnull, declared)


def discover(conn: psycopg.Connection, schemas: Sequence[str] | None = None) -> list[TableInfo]:
    """Every table and view (in ``schemas``, default all non-system schemas)."""
    tables: dict[tuple[str, str], TableInfo] = {}
    with conn.cursor() as cur:
        for row in cur.execute(_DISCOVER).fetchall():
            (
                nsp,
                rel,
                kind,
                att,
                _num,
                notnull,
                typname,
                category,
                typmod,
                elemname,
                elemcategory,
                declared,
                typtype,
                elemtype,
            ) = row
            if schemas and nsp not in schemas:
                continue
            info = tables.setdefault((nsp, rel), TableInfo(nsp, rel, kind))
            info.columns.append(
                plan_column(
                    att,
                    typname,
                    category,
                    typtype,
                    typmod,
                    elemname,
                    elemcategory,
                    elemtype,
                    declared,
                    notnull,
                    f"{nsp}.{rel}",
                )
            )
        for nsp, rel, att in cur.execute(_PRIMARY_KEYS).fetchall():
            if (nsp, rel) in tables:
                tables[(nsp, rel)].primary_key.append(att)
    return list(tables.values())
