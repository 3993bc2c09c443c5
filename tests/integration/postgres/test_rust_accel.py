"""The Rust binary-COPY path (taps/tap_dativo_postgres/accel.py + the dativo_accel extension) reads
exactly what the pure-Python CSV path reads: same schema, nullability, JSON extension
type and values, for the whole type corpus of test_types.py and the types read as text."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql

from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.interfaces import StreamInfo
from tap_dativo_postgres import accel
from tap_dativo_postgres import copy as pgcopy
from tap_dativo_postgres.catalog import ColumnPlan, TableInfo
from tap_dativo_postgres.reader import PostgresReader

from . import test_types
from .server import fresh_schema, pg_dsn

dativo_accel = pytest.importorskip(
    "dativo_accel",
    reason="the dativo_accel extension is not installed (pip install ./rust_accel)",
)

SCHEMA = "dativo_accel"


@pytest.fixture(scope="module")
def reader() -> Iterator[PostgresReader]:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(test_types.DDL.format(s=SCHEMA))
        conn.execute(f"INSERT INTO {SCHEMA}.all_types VALUES " + ", ".join(test_types.ROWS[:3]))
        conn.execute(f"""CREATE TABLE {SCHEMA}.texty (
            id int PRIMARY KEY, p point, r int4range, m money, ip inet, ip6 inet, cn cidr,
            mac macaddr, tz timetz, bt bit(4), vb varbit, c1 "char", tsv tsvector,
            ea {SCHEMA}.mood[], tza timetz[], ipa inet[], ma money[], iva interval[],
            bya bytea[], ja json[], jba jsonb[], ba bool[], i2a int2[], i8a int8[],
            f4a float4[], ua uuid[], ta time[], tsa timestamp[], bpa char(3)[],
            vca varchar[], na name[], nba numeric(60,5)[], o oid,
            nb numeric(50,2), nan numeric)""")
        conn.execute(f"""INSERT INTO {SCHEMA}.texty VALUES (1, '(1.5,2)', '[1,5)', 12.34,
            '192.168.0.1', '::ffff:1.2.3.4/128', '10.0.0.0/8', '08:00:2b:01:02:03',
            '12:00:00+02', B'1010', B'101', 'x', 'a fat cat', '{{sad,NULL,ok}}',
            '{{12:00:00+02,NULL}}', '{{1.2.3.4,NULL}}', '{{1.5}}', '{{1 day,NULL}}',
            '{{\\\\x00ff}}', '{{"{{}}","[1]"}}', '{{"{{\\"a\\": 1}}"}}', '{{t,f,NULL}}',
            '{{1,-2}}', '{{9223372036854775807}}', '{{1.5,NaN,-Infinity}}',
            '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}', '{{12:00:00.5,NULL}}',
            '{{"2020-01-01 00:00:00.000001"}}', '{{a,bc}}', '{{x,""}}', '{{nm}}',
            '{{1.5,-0.00001}}', 4294967295,
            -123456789012345678901234567890123456789012345678.99, 'Infinity'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}',
            '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', NULL, NULL, '-Infinity'),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""")
        conn.execute(f"""CREATE TABLE {SCHEMA}.sized (id int4 PRIMARY KEY, t text NOT NULL);
            INSERT INTO {SCHEMA}.sized SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g""")
    pg = PostgresReader()
    pg.open({"dsn": pg_dsn(), "filter_schemas": [SCHEMA], "accelerator": "python"})
    with pg:
        pg.discover()
        yield pg


def _stream(reader: PostgresReader, table: str, columns: list[str] | None = None) -> StreamInfo:
    info = {s.name: s for s in reader.discover()}[f"{SCHEMA}-{table}"]
    return info.with_columns(columns) if columns else info


def _plans(reader: PostgresReader, stream: StreamInfo) -> tuple[TableInfo, list[ColumnPlan]]:
    table = reader._table(stream)
    return table, [table.column(n) for n in stream.schema.names]


def _read_rust(
    reader: PostgresReader, stream: StreamInfo, batch_bytes: int = 1 << 20
) -> list[pa.RecordBatch]:
    table, plans = _plans(reader, stream)
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    query = accel.copy_query(sql.Identifier(table.schema, table.table), plans, None, None)
    return list(accel.read_copy(dsn, query, plans, batch_bytes, f"stream '{stream.name}'"))


def _read_python(reader: PostgresReader, stream: StreamInfo) -> list[pa.RecordBatch]:
    table, plans = _plans(reader, stream)
    query = pgcopy.copy_query(sql.Identifier(table.schema, table.table), plans, None, None)
    return list(pgcopy.read_copy(reader._conn, query, plans, 1 << 20, f"stream '{stream.name}'"))


def _comparable(table: pa.Table) -> pa.Table:
    """Floats (and lists of them) as text, so NaN equals NaN and -0.0 differs from 0.0."""
    columns = []
    for column in table.columns:
        dtype = column.type
        if pa.types.is_floating(dtype):
            column = pc.cast(column, pa.string())
        elif pa.types.is_list(dtype) and pa.types.is_floating(dtype.value_type):
            column = pc.cast(column, pa.list_(pa.string()))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _assert_same(reader: PostgresReader, stream: StreamInfo) -> pa.Table:
    rust = pa.Table.from_batches(_read_rust(reader, stream), schema=stream.schema)
    python = pa.Table.from_batches(_read_python(reader, stream), schema=stream.schema)
    assert rust.schema.equals(python.schema, check_metadata=True)
    assert rust.num_rows == python.num_rows
    rust, python = rust.sort_by("id"), python.sort_by("id")
    for name in stream.schema.names:
        mine, theirs = _comparable(rust.select([name])), _comparable(python.select([name]))
        assert mine.equals(theirs), (name, mine.to_pylist(), theirs.to_pylist())
    return rust


def test_the_type_corpus_reads_the_same(reader: PostgresReader) -> None:
    stream = _stream(reader, "all_types")
    table = _assert_same(reader, stream)
    assert table.num_rows == 3
    assert table.schema.field("j").type == test_types.JSON_TYPE
    assert not table.schema.field("id").nullable
    # The values the comparison must have seen: NaN, infinities, 38 digits, unicode.
    rows = table.to_pydict()
    assert rows["f4"][0] != rows["f4"][0] and rows["f8"][0] == float("inf")
    assert str(rows["n38"][0]) == "1234567890123456789012345678.0123456789"
    assert rows["nu"][1] == "NaN" and rows["ai"][1] == [] and rows["ai"][0] == [1, None, 3]
    assert "\U0001f600" in rows["t"][0]


def test_infinities_and_extreme_dates_read_the_same(reader: PostgresReader) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.all_types VALUES {test_types.ROWS[3]}")
    try:
        names = [n for n in _stream(reader, "all_types").schema.names if n != "ai"]
        table = _assert_same(reader, _stream(reader, "all_types", names))
        row = table.filter(pc.equal(table["id"], 4))
        assert row["d"].cast(pa.int32()).to_pylist() == [2**31 - 1]
        assert row["tstz"].cast(pa.int64()).to_pylist() == [-(2**63)]
        # A multi-dimensional array: the same clear error on both paths.
        ai = _stream(reader, "all_types", ["id", "ai"])
        for read in (_read_rust, _read_python):
            with pytest.raises(DativoError, match=r"column 'ai'.*one-dimensional lists"):
                read(reader, ai)
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"DELETE FROM {SCHEMA}.all_types WHERE id = 4")


def test_types_read_as_text_and_other_arrays_read_the_same(reader: PostgresReader) -> None:
    table = _assert_same(reader, _stream(reader, "texty"))
    rows = table.sort_by("id").to_pydict()
    assert rows["ip"][0] == "192.168.0.1" and rows["tz"][0] == "12:00:00+02"
    assert rows["m"][0] == "$12.34" and rows["ea"][0] == ["sad", None, "ok"]
    assert rows["nan"][:2] == ["Infinity", "-Infinity"]


def test_arrays_the_python_path_cannot_read(reader: PostgresReader) -> None:
    """oid[] and unconstrained numeric[] fail in the JSON step of the Python path; the
    binary decoder reads them."""
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.odd (id int, oa oid[], nua numeric[])")
        conn.execute(f"TRUNCATE {SCHEMA}.odd")
        conn.execute(f"INSERT INTO {SCHEMA}.odd VALUES (1, '{{4294967295}}', '{{1.50,NULL,NaN}}')")
    table = pa.Table.from_batches(_read_rust(reader, _stream(reader, "odd")))
    assert table.to_pylist() == [{"id": 1, "oa": [4294967295], "nua": ["1.50", None, "NaN"]}]


def test_nan_in_a_constrained_numeric_is_the_same_clear_error(reader: PostgresReader) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.amounts (id int, amount numeric(12,2))")
        conn.execute(f"INSERT INTO {SCHEMA}.amounts VALUES (1, 1.5), (2, 'NaN')")
    try:
        stream = _stream(reader, "amounts")
        with pytest.raises(DativoError, match=r"column 'amount'.*NaN.*custom_where"):
            _read_rust(reader, stream)
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE {SCHEMA}.amounts")


def test_batches_are_cut_by_copy_bytes(reader: PostgresReader) -> None:
    # Each row: 2 (field count) + 4 + 4 (id) + 4 + 100 (text) = 114 bytes.
    stream = _stream(reader, "sized")
    batches = _read_rust(reader, stream, batch_bytes=114 * 100)
    assert [b.num_rows for b in batches] == [100] * 10
    ids = pa.concat_arrays([b.column("id") for b in batches]).to_pylist()
    assert sorted(ids) == list(range(1, 1001))
    assert all(not b.schema.field("t").nullable for b in batches)
    assert [b.num_rows for b in _read_rust(reader, stream, batch_bytes=1)] == [1] * 1000


def test_where_order_and_snapshot_setup(reader: PostgresReader) -> None:
    """What the reader needs for incremental and parallel reads: a WHERE clause, ORDER BY,
    and setup statements that put the COPY in an exported snapshot."""
    stream = _stream(reader, "sized")
    table, plans = _plans(reader, stream)
    where = sql.SQL("{} > {}").format(sql.Identifier("id"), sql.Literal(990))
    relation = sql.Identifier(table.schema, table.table)
    query = accel.copy_query(relation, plans, where, "id")
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    with psycopg.connect(pg_dsn()) as holder:
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot = holder.execute("SELECT pg_export_snapshot()").fetchone()
        assert snapshot is not None
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {SCHEMA}.sized VALUES (1001, 'late')")
        try:
            setup = [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                f"SET TRANSACTION SNAPSHOT '{snapshot[0]}'",
            ]
            old = list(accel.read_copy(dsn, query, plans, 1 << 20, "x", setup))
            new = list(accel.read_copy(dsn, query, plans, 1 << 20, "x"))
        finally:
            with psycopg.connect(pg_dsn(), autocommit=True) as conn:
                conn.execute(f"DELETE FROM {SCHEMA}.sized WHERE id = 1001")
    assert pa.Table.from_batches(old)["id"].to_pylist() == list(range(991, 1001))
    assert pa.Table.from_batches(new)["id"].to_pylist() == list(range(991, 1002))


def test_stopping_early_ends_the_copy(reader: PostgresReader) -> None:
    stream = _stream(reader, "sized")
    table, plans = _plans(reader, stream)
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    query = accel.copy_query(sql.Identifier(table.schema, table.table), plans, None, None)
    batches = accel.read_copy(dsn, query, plans, 1000, "x", ["SET application_name = 'stop-me'"])
    assert next(batches).num_rows > 0
    batches.close()
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        for _ in range(50):
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stop-me'"
            ).fetchone()
            if left == (0,):
                break
            conn.execute("SELECT pg_sleep(0.1)")
        assert left == (0,)


def test_closing_early_cancels_a_running_query(reader: PostgresReader) -> None:
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    plans = [ColumnPlan("x", "text", pa.string(), "plain")]
    # Three large rows (the server flushes them), then one that takes a minute.
    slow = """COPY (SELECT CASE WHEN g > 3 THEN (SELECT 'late' FROM pg_sleep(60))
        ELSE repeat('x', 100000) END FROM generate_series(1, 5) g) TO STDOUT (FORMAT binary)"""
    setup = ["SET application_name = 'slow'"]
    batches = accel.read_copy(dsn, slow, plans, 1, "x", setup)
    assert next(batches).num_rows == 1
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        running = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slow'"
        assert conn.execute(running).fetchone() == (1,)
        batches.close()
        for _ in range(50):
            if conn.execute(running).fetchone() == (0,):
                break
            conn.execute("SELECT pg_sleep(0.1)")
        assert conn.execute(running).fetchone() == (0,)


def test_server_errors_are_clear(reader: PostgresReader) -> None:
    plans = [ColumnPlan("x", "int4", pa.int32(), "plain")]
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    missing = "COPY (SELECT nope) TO STDOUT (FORMAT binary)"
    with pytest.raises(DativoError, match=r"stream 's': ERROR: column \"nope\" does not exist"):
        list(accel.read_copy(dsn, missing, plans, 1, "stream 's'"))
    failing = (
        "COPY (SELECT 1 / (g - 500) FROM generate_series(1, 1000) g) TO STDOUT (FORMAT binary)"
    )
    with pytest.raises(DativoError, match=r"^stream 's': ERROR: division by zero$"):
        list(accel.read_copy(dsn, failing, plans, 100, "stream 's'"))


def test_a_connection_error_never_shows_the_password() -> None:
    plans = [ColumnPlan("x", "int4", pa.int32(), "plain")]
    for dsn in (
        "host=/nonexistent/dir user=u password=pw-s3cret-42 connect_timeout=2",
        "postgresql://u:pw-s3cret-42@127.0.0.1:1/db?connect_timeout=2",
        "host=/tmp port=notaport password=pw-s3cret-42",
    ):
        with pytest.raises(ConfigError) as caught:
            list(accel.read_copy(dsn, "COPY (SELECT 1) TO STDOUT (FORMAT binary)", plans, 1, "x"))
        message = str(caught.value)
        assert "pw-s3cret-42" not in message
        assert re.search(
            r"could not connect to PostgreSQL: (error connecting|invalid conn)", message
        )


def test_the_extension_checks_its_arguments() -> None:
    schema = pa.schema([("x", pa.int32())])
    with pytest.raises(ValueError, match=r"column 'x' \(int8 as int32\)"):
        dativo_accel.read_copy("host=/nowhere", "x", schema, ["int8"], 1)
    with pytest.raises(ValueError, match="unknown decoder 'point'"):
        dativo_accel.read_copy("host=/nowhere", "x", schema, ["point"], 1)
    with pytest.raises(ValueError, match="2 decoders for 1 columns"):
        dativo_accel.read_copy("host=/nowhere", "x", schema, ["int4", "int4"], 1)


def test_the_stream_is_read_once_through_the_capsule_interface() -> None:
    schema = pa.schema([pa.field("x", pa.int32(), nullable=False)])
    copy = dativo_accel.read_copy(
        pg_dsn(), "COPY (SELECT 7) TO STDOUT (FORMAT binary)", schema, ["int4"], 1
    )
    assert pa.schema(copy) == schema
    assert pa.RecordBatchReader.from_stream(copy).read_all().to_pylist() == [{"x": 7}]
    with pytest.raises(dativo_accel.CopyError, match="already read"):
        pa.RecordBatchReader.from_stream(copy)


def _range_query(lo: int, hi: int, extra: str = "") -> str:
    return f"COPY (SELECT g{extra} FROM generate_series({lo}, {hi}) g) TO STDOUT (FORMAT binary)"


def test_parallel_queries_on_rust_threads_read_every_row_once(reader: PostgresReader) -> None:
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    plans = [ColumnPlan("g", "int4", pa.int32(), "plain")]
    queries = [_range_query(i * 1000 + 1, (i + 1) * 1000) for i in range(7)]
    for workers in (1, 2, 3, 10):
        batches = list(accel.read_copy_parallel(dsn, queries, plans, 512, "x", workers))
        assert len(batches) > 7  # small batches from all partitions
        got = pa.Table.from_batches(batches)["g"].to_pylist()
        assert sorted(got) == list(range(1, 7001)), workers


def test_parallel_read_fails_clearly_when_one_partition_fails(reader: PostgresReader) -> None:
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    plans = [ColumnPlan("g", "int4", pa.int32(), "plain")]
    queries = [_range_query(1, 5000) for _ in range(3)]
    queries.append(_range_query(1, 5000, " / (g - 4000)"))
    with pytest.raises(DativoError, match=r"^stream 's': ERROR: division by zero$"):
        list(accel.read_copy_parallel(dsn, queries, plans, 100, "stream 's'", 2))
    with pytest.raises(DativoError, match=r"column \"nope\" does not exist"):
        accel.read_copy_parallel(dsn, ["COPY (SELECT nope) TO STDOUT"], plans, 1, "s", 2)
    with pytest.raises(ConfigError, match="could not connect"):
        accel.read_copy_parallel(
            "host=/nonexistent/dir user=u connect_timeout=2", queries, plans, 1, "s", 2
        )


def test_closing_a_parallel_read_early_cancels_every_query(reader: PostgresReader) -> None:
    dsn = accel.rust_dsn(reader._conn)
    assert dsn is not None
    plans = [ColumnPlan("x", "text", pa.string(), "plain")]
    slow = """COPY (SELECT CASE WHEN g > 3 THEN (SELECT 'late' FROM pg_sleep(60))
        ELSE repeat('x', 100000) END FROM generate_series(1, 5) g) TO STDOUT (FORMAT binary)"""
    setup = ["SET application_name = 'slow-parallel'"]
    batches = accel.read_copy_parallel(dsn, [slow] * 4, plans, 1, "x", 2, setup)
    assert next(batches).num_rows == 1
    running = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slow-parallel'"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        assert conn.execute(running).fetchone() == (2,)  # two workers, two connections
        batches.close()
        for _ in range(50):
            if conn.execute(running).fetchone() == (0,):
                break
            conn.execute("SELECT pg_sleep(0.1)")
        assert conn.execute(running).fetchone() == (0,)
