"""The direct conversion of pgoutput's text values (cdc.py ``_direct``) against the
temporary-table conversion (the COPY path's own plans): byte-identical Arrow batches for
every type typed directly, on its edge values, on the Python and the Rust slot readers;
columns the direct conversion does not take (interval, arrays, a BC timestamp) still go
through the temporary table, per column."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge import accel
from tap_dativo_postgres import cdc
from tap_dativo_postgres.reader import PostgresReader

from .server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_cdc_direct"
SLOT = "dativo_test_cdc_direct"

COLUMNS = """id int8 PRIMARY KEY, i2 int2, i4 int4, f4 float4, f8 float8,
    n12 numeric(12, 2), n38 numeric(38, 10), nfree numeric, t text, vc varchar(8),
    ch char(5), b bool, d date, ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
    by bytea, iv interval, arr int4[]"""

#: One row per edge case (id, then the columns above in order); NULL everywhere in row 1.
ROWS = [
    "(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL)",
    "(2, -32768, -2147483648, 'NaN', 'NaN', -9999999999.99,"
    " 1234567890123456789012345678.0123456789, 'NaN', '', '', '', true, '1969-12-31',"
    " '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999999+00',"
    " '00000000-0000-0000-0000-000000000000', 'null', 'null', '\\x', '-1 day -00:00:01',"
    " '{}')",
    "(3, 32767, 2147483647, 'Infinity', 'Infinity', 0.01,"
    " -0.0000000001, '-123456789012345678901234567890.123456789', 'żółć 🚀 \"q\" \\ x',"
    " 'ünï', 'ab', false, 'infinity', 'infinity', 'infinity',"
    ' \'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\', \'{"a": [1, 2.50, null], "é": "🚀"}\','
    " '{\"b\": {\"c\": 1e3}}', '\\x00ff10', '1 year 2 mons 3 days 04:05:06.7',"
    " '{1,NULL,3}')",
    "(4, 0, 0, '-Infinity', '-Infinity', 0, 0, '0', E'line\\nbreak\\ttab,comma', 'x', 'abcde',"
    " NULL, '-infinity', '-infinity', '-infinity', NULL, '[]', '{}', '\\xdeadbeef', '0',"
    " '{-1}')",
    "(5, 1, 1, '-0', '-0', -0.00, 99999999999999999999999999.9999999999, '1e-20', 'a',"
    " 'b', 'c', true, '1900-02-28', '1900-01-01 00:00:00', '1950-06-01 12:00:00.5+02:30',"
    " NULL, '1', '2', NULL, NULL, NULL)",
    "(6, 7, 8, '3.4028235e+38', '1e-300', 1.5, 2.5, '3.5', 'z', 'z', 'z', false,"
    " '2000-02-29', '2262-04-11 23:47:16.854775', '9999-12-31 23:59:59.999999+00',"
    " NULL, NULL, NULL, '\\x61', NULL, NULL)",
]


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _cleanup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", [SLOT]
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


@pytest.fixture()
def dsn() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    fresh_schema(SCHEMA)
    dsn = pg_dsn()
    _cleanup(dsn)
    _execute(
        dsn,
        f"CREATE TABLE {SCHEMA}.typed ({COLUMNS})",
        f"ALTER TABLE {SCHEMA}.typed REPLICA IDENTITY FULL",
        # A timestamptz column with a BC value: that column falls back, the others not.
        f"CREATE TABLE {SCHEMA}.bc (id int8 PRIMARY KEY, at timestamptz, n int4)",
        f"ALTER TABLE {SCHEMA}.bc REPLICA IDENTITY FULL",
    )
    yield dsn
    _cleanup(dsn)


def _read(dsn: str, accelerator: str, bookmarks: dict[str, Any]) -> dict[str, list[Any]]:
    reader = PostgresReader()
    reader.open(
        {
            "dsn": dsn,
            "filter_schemas": [SCHEMA],
            "accelerator": accelerator,
            "replication_slot": SLOT,
            "max_parallelism": 1,
            "cdc_batch_rows": 5,  # the bc rows in one batch: its lone fallback column
        }
    )
    try:
        out: dict[str, list[Any]] = {}
        for name in (f"{SCHEMA}-typed", f"{SCHEMA}-bc"):
            stream = next(s for s in reader.discover() if s.name == name)
            stream = reader.log_based_stream(
                dataclasses.replace(stream, replication_method="LOG_BASED")
            )
            previous = bookmarks.get(name)
            pairs = []
            for batch in reader.read(stream, previous):
                previous = reader.bookmark(stream, batch, previous)
                pairs.append((batch, previous))
            out[name] = pairs
        return out
    finally:
        reader.close()


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def _data(pairs: list[Any]) -> list[pa.RecordBatch]:
    batches = [b for b, _ in pairs]
    while batches and batches[-1].num_rows == 0:
        batches = batches[:-1]
    return batches


ACCELERATORS = [
    "python",
    pytest.param(
        "rust", marks=pytest.mark.skipif(not accel.available(), reason="dativo_accel is not built")
    ),
]


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_direct_conversion_equals_the_temporary_table(
    dsn: str, accelerator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _read(dsn, "python", {})  # creates the slot; the (empty) initial copies
    start = {name: pairs[-1][1] for name, pairs in first.items()}
    _execute(
        dsn,
        f"INSERT INTO {SCHEMA}.typed VALUES {', '.join(ROWS)}",
        f"UPDATE {SCHEMA}.typed SET i4 = i4 + 1, t = t || '+' WHERE id IN (2, 5)",
        f"DELETE FROM {SCHEMA}.typed WHERE id = 3",
        f"""INSERT INTO {SCHEMA}.bc VALUES (1, '0044-03-15 12:00:00+00 BC', 1),
            (2, NULL, NULL), (3, '2026-01-01 00:00:00+00', 3)""",
    )
    direct = _read(dsn, accelerator, start)
    monkeypatch.setattr(cdc.ChangeStream, "direct", False)
    reference = _read(dsn, accelerator, start)
    for name in direct:
        got, want = _data(direct[name]), _data(reference[name])
        assert len(got) == len(want) >= 1, name
        assert sum(b.num_rows for b in got) == {"typed": 9, "bc": 3}[name.split("-")[1]]
        for g, w in zip(got, want, strict=True):
            assert g.schema.equals(w.schema, check_metadata=True), name
            # Byte for byte (Arrow's equals has NaN != NaN and -0.0 == 0.0), column by column.
            for column in g.schema.names:
                a, b = g.select([column]), w.select([column])
                assert _ipc(a) == _ipc(b), f"{name}.{column}: {a.column(0)} != {b.column(0)}"
    rows = {r["id"]: r for b in _data(direct[f"{SCHEMA}-typed"]) for r in b.to_pylist()}
    assert rows[3]["t"] == 'żółć 🚀 "q" \\ x' and rows[4]["ch"] == "abcde"
    assert rows[2]["t"] == "+" and rows[2]["by"] == b""


def test_direct_conversion_types_the_common_columns_without_the_table() -> None:
    """Which columns ``_direct`` takes: the common types yes, interval and arrays not, a
    value Arrow does not parse (a BC timestamp, a numeric NaN as a decimal) not."""
    from tap_dativo_postgres.catalog import plan_column

    def plan(typname: str, typmod: int = -1, category: str = "") -> Any:
        return plan_column(
            "c", typname, category, "b", typmod, None, None, None, typname, False, "t"
        )

    def typed(p: Any, values: list[Any]) -> pa.Array:
        array = cdc._direct(p, values)
        assert array is not None, p
        return array

    numeric = (12 << 16 | 2) + 4
    assert typed(plan("int4"), ["1", None]).to_pylist() == [1, None]
    assert typed(plan("numeric", numeric), ["1.50"]).type == pa.decimal128(12, 2)
    assert cdc._direct(plan("numeric", numeric), ["NaN"]) is None
    assert cdc._direct(plan("timestamptz"), ["0044-03-15 12:00:00+00 BC"]) is None
    assert cdc._direct(plan("interval"), ["1 day"]) is None
    assert typed(plan("bool"), ["t", "f", None]).to_pylist() == [True, False, None]
    assert cdc._direct(plan("bool"), ["true"]) is None
    assert typed(plan("bytea"), ["\\x00ff"]).to_pylist() == [b"\x00\xff"]
    assert cdc._direct(plan("bytea"), ["\\000"]) is None  # bytea_output = escape
    high = typed(plan("date"), ["infinity", "-infinity", "1970-01-02"])
    assert high.view(pa.int32()).to_pylist() == [2**31 - 1, -(2**31), 1]
