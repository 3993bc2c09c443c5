"""Every supported PostgreSQL type arrives exactly: compared value by value with what
PostgreSQL returns for the same rows through psycopg (and, for the values no Python type
holds, with SQL run against the server)."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import json
import uuid
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge.errors import DativoError
from dativo_bridge.schema import JSON_TYPE
from tap_dativo_postgres.catalog import INTERVAL_TYPE
from tap_dativo_postgres.reader import PostgresReader

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_types"

DDL = """
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN {s}.posint AS int CHECK (VALUE > 0);
CREATE TABLE {s}.all_types (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
  n38 numeric(38, 10), n12 numeric(12, 2), nbig numeric(60, 5), nu numeric,
  t text, vc varchar(10), ch char(4), nm name, b bool,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, by bytea,
  ai int[], at text[], af float8[], ad date[], an numeric(6,2)[], ats timestamptz[],
  e {s}.mood, dom {s}.posint
);
CREATE VIEW {s}.v_small AS SELECT id, t, b FROM {s}.all_types;
"""

ROWS = [
    "(1, 32767, 2147483647, 9223372036854775807, 'NaN', 'Infinity', "
    "1234567890123456789012345678.0123456789, 9999999999.99, "
    "123456789012345678901234567890123456789012345678901234.12345, "
    "3.14159265358979323846264338327950288419716939937510582097494459, "
    "E'h\\u00e9 \"q\", x\\ny\\t\\u0001\\u001f \\u2028 \U0001f600', 'abc', 'ab', 'nm', true, "
    "'2020-02-29', '23:59:59.999999', '12:00:00+02', '1999-12-31 23:59:59.999999', "
    "'2020-01-01 12:34:56.789012+02', '1 year 2 months 3 days 04:05:06.789', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, null], \"b\": \"\\u00e9\"}', 'null', "
    "'\\x00ff10', '{1,NULL,3}', '{\"a\",\"\",NULL,\"x,y\"}', '{NaN,Infinity,-Infinity,-1.5}', "
    "'{2020-01-01,NULL}', '{1.25,NULL,-0.01}', '{\"2020-01-01 00:00:00+00\"}', 'ok', 5)",
    "(2, -32768, -2147483648, -9223372036854775808, '-Infinity', '-0', "
    "-0.0000000001, -0.01, 0, 'NaN', '', '', '', '', false, "
    "'0001-01-01', '00:00:00', '00:00:00-14:59', '0001-01-01 00:00:00', "
    "'9999-12-31 23:59:59.999999+00', '-1 mon -2 days -00:00:01.5', "
    "'00000000-0000-0000-0000-000000000000', '[]', '{\"k\": {}}', '\\x', '{}', '{}', "
    "'{}', '{}', '{}', '{}', 'sad', 1)",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL)",
    "(4, 0, 0, 0, 1.5, 1e308, 0, 0, 0, '-12345678901234567890.123456789', 'x', 'x', 'x', "
    "'x', true, 'infinity', '24:00:00', NULL, 'infinity', '-infinity', '0', NULL, "
    "'\"str\"', '[1, 2.5, true]', '\\xdeadbeef', '{{1,2},{3,4}}', NULL, NULL, NULL, NULL, "
    "NULL, 'happy', 7)",
]


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(DDL.format(s=SCHEMA))
        conn.execute(f"INSERT INTO {SCHEMA}.all_types VALUES " + ", ".join(ROWS[:3]))
    yield pg_dsn()


ACCELERATORS = ["python"] + (["rust"] if importlib.util.find_spec("dativo_accel") else [])
_path = {"accelerator": "python"}


@pytest.fixture(autouse=True, params=ACCELERATORS)
def accelerator(request: pytest.FixtureRequest) -> str:
    """Every test here runs on the Python CSV path and, when built, the Rust binary path."""
    _path["accelerator"] = request.param
    return str(request.param)


def _read(dsn: str, stream_id: str, columns: list[str] | None = None) -> pa.Table:
    reader = PostgresReader()
    reader.open({"dsn": dsn, "filter_schemas": [SCHEMA], "accelerator": _path["accelerator"]})
    with reader:
        info = {s.name: s for s in reader.discover()}[stream_id]
        if columns:
            info = info.with_columns(columns)
        return pa.Table.from_batches(list(reader.read(info, None)), schema=info.schema)


def test_discovery_types_keys_and_views(db: str) -> None:
    reader = PostgresReader()
    reader.open({"dsn": db, "filter_schemas": [SCHEMA]})
    with reader:
        streams = {s.name: s for s in reader.discover()}
    assert set(streams) == {f"{SCHEMA}-all_types", f"{SCHEMA}-v_small"}
    table = streams[f"{SCHEMA}-all_types"]
    assert table.key_properties == ("id",)
    expected = {
        "id": pa.int32(),
        "i2": pa.int16(),
        "i8": pa.int64(),
        "f4": pa.float32(),
        "n38": pa.decimal128(38, 10),
        "n12": pa.decimal128(12, 2),
        "nbig": pa.decimal256(60, 5),
        "nu": pa.string(),
        "ch": pa.string(),
        "d": pa.date32(),
        "tm": pa.time64("us"),
        "ttz": pa.string(),
        "ts": pa.timestamp("us"),
        "tstz": pa.timestamp("us", tz="UTC"),
        "iv": INTERVAL_TYPE,
        "u": pa.string(),
        "j": JSON_TYPE,
        "jb": JSON_TYPE,
        "by": pa.binary(),
        "ai": pa.list_(pa.int32()),
        "an": pa.list_(pa.decimal128(6, 2)),
        "ad": pa.list_(pa.date32()),
        "e": pa.string(),
        "dom": pa.int32(),
    }
    for name, dtype in expected.items():
        assert table.schema.field(name).type == dtype, name
    assert not table.schema.field("id").nullable
    assert streams[f"{SCHEMA}-v_small"].schema.names == ["id", "t", "b"]


def test_every_value_matches_postgres(db: str) -> None:
    ours = _read(db, f"{SCHEMA}-all_types").sort_by("id")
    names = ours.schema.names
    simple = [n for n in names if n not in ("ts", "d", "iv", "nu", "f4", "f8", "af", "ttz")]
    with psycopg.connect(db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        theirs = conn.execute(
            f"SELECT {', '.join(simple)} FROM {SCHEMA}.all_types ORDER BY id"
        ).fetchall()
    rows = ours.select(simple).to_pylist()
    for mine, expected in zip(rows, theirs, strict=True):
        for name, value in zip(simple, expected, strict=True):
            got = mine[name]
            if name in ("j", "jb"):
                assert (None if got is None else json.loads(got)) == value, name
            elif name == "u":
                assert got == (None if value is None else str(value)), name
            elif name == "tstz" and value is not None:
                assert got == value.astimezone(dt.UTC), name
            elif name == "ats" and value:
                assert got == [v.astimezone(dt.UTC) for v in value], name
            elif name == "ai" and mine["id"] == 4:
                continue  # multi-dimensional, checked below
            else:
                assert got == value, (name, got, value)


def test_values_python_cannot_hold(db: str) -> None:
    """NaN, infinities, -0, unconstrained numerics, intervals, timetz, year 1."""
    ours = _read(db, f"{SCHEMA}-all_types").sort_by("id").to_pydict()
    f4, f8 = ours["f4"], ours["f8"]
    assert f4[0] != f4[0] and f4[1] == float("-inf") and f8[0] == float("inf")
    assert str(f8[1]) == "-0.0" and f4[2] is None
    assert ours["af"][0][0] != ours["af"][0][0] and ours["af"][0][1:] == [
        float("inf"),
        float("-inf"),
        -1.5,
    ]
    assert ours["nu"][:3] == [
        "3.14159265358979323846264338327950288419716939937510582097494459",
        "NaN",
        None,
    ]
    assert ours["ttz"][:3] == ["12:00:00+02", "00:00:00-14:59", None]
    assert ours["d"][0] == dt.date(2020, 2, 29) and ours["d"][1] == dt.date(1, 1, 1)
    assert ours["iv"][0] == {"months": 14, "days": 3, "microseconds": 14_706_789_000}
    assert ours["iv"][1] == {"months": -1, "days": -2, "microseconds": -1_500_000}
    # The interval parts rebuild the same interval inside PostgreSQL.
    with psycopg.connect(db) as conn:
        for i, parts in enumerate(ours["iv"][:2], start=1):
            same = conn.execute(
                f"SELECT iv = make_interval(months => %s, days => %s, secs => %s / 1e6) "
                f"FROM {SCHEMA}.all_types WHERE id = %s",
                [parts["months"], parts["days"], parts["microseconds"], i],
            ).fetchone()
            assert same == (True,)


def test_infinities_are_clamped_to_the_extremes_engines_read(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.all_types VALUES {ROWS[3]}")
    try:
        table = _read(db, f"{SCHEMA}-all_types", ["id", "d", "ts", "tstz", "tm", "j", "jb", "by"])
        row = table.filter(pa.compute.equal(table["id"], 4))
        # infinity_values: clamp (the default); see tests/integration/postgres/test_edges.py
        assert row["d"].to_pylist() == [dt.date(9999, 12, 31)]
        assert row["ts"].to_pylist() == [dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]
        assert row["tstz"].to_pylist() == [dt.datetime(1, 1, 1, tzinfo=dt.UTC)]
        assert row["tm"].to_pylist() == [dt.time(23, 59, 59, 999999)]  # '24:00:00'
        assert json.loads(row["j"][0].as_py()) == "str"
        assert json.loads(row["jb"][0].as_py()) == [1, 2.5, True]
        assert row["by"].to_pylist() == [bytes.fromhex("deadbeef")]
        # A multi-dimensional array does not fit list<int32>: a clear error, not a guess.
        with pytest.raises(DativoError, match=r"column 'ai'.*one-dimensional lists"):
            _read(db, f"{SCHEMA}-all_types", ["id", "ai"])
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {SCHEMA}.all_types WHERE id = 4")


def test_unknown_type_falls_back_to_text_with_a_warning(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.geo")
        conn.execute(f"CREATE TABLE {SCHEMA}.geo (id int, p point, r int4range)")
        conn.execute(f"INSERT INTO {SCHEMA}.geo VALUES (1, '(1,2)', '[1,5)')")
    table = _read(db, f"{SCHEMA}-geo")
    assert table.to_pylist() == [{"id": 1, "p": "(1,2)", "r": "[1,5)"}]
    assert "point" in caplog.text and "read as text" in caplog.text


def test_uuid_and_decimal_roundtrip_types(db: str) -> None:
    table = _read(db, f"{SCHEMA}-all_types", ["id", "u", "n38", "an"]).sort_by("id")
    assert uuid.UUID(table["u"][0].as_py()).version == 4
    assert table["n38"][1].as_py() == decimal.Decimal("-0.0000000001")
    assert table["an"][0].as_py() == [decimal.Decimal("1.25"), None, decimal.Decimal("-0.01")]


def test_nan_in_a_constrained_numeric_is_a_clear_error(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.amounts (id int, amount numeric(12,2))")
        conn.execute(f"INSERT INTO {SCHEMA}.amounts VALUES (1, 1.5), (2, 'NaN')")
    try:
        with pytest.raises(DativoError, match=r"column 'amount'.*NaN.*custom_where"):
            _read(db, f"{SCHEMA}-amounts")
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {SCHEMA}.amounts")


def test_numeric_with_negative_scale_is_read_as_exact_text(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("negative numeric scales need PostgreSQL 15")
        conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.rounded")
        conn.execute(f"CREATE TABLE {SCHEMA}.rounded (id int, n numeric(5, -2))")
        conn.execute(f"INSERT INTO {SCHEMA}.rounded VALUES (1, 1234567), (2, NULL)")
    table = _read(db, f"{SCHEMA}-rounded").sort_by("id")
    assert table.schema.field("n").type == pa.string()
    assert table.column("n").to_pylist() == ["1234600", None]
