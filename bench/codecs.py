"""Singer codec benchmark: Dativo's Arrow-native encoder/decoder vs singer-sdk and pyarrow.

Generates the `wide` reference table (see /work/shared/bench/wide.sql) in memory, then times
ENCODE (Arrow -> RECORD lines) and DECODE (RECORD lines -> Arrow or dicts) for each
contender, alternating contenders and repeating. See bench/README.md for what each row means.

    python bench/codecs.py --rows 1000000 --repeat 3 [--batch-rows 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from itertools import accumulate, pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from singer_sdk.contrib.msgspec import MsgSpecReader, MsgSpecWriter
from singer_sdk.singerlib.encoding.simple import (
    RecordMessage,
    SimpleSingerReader,
    SimpleSingerWriter,
)

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import _rust_encode_records, encode_records, encode_records_python
from dativo_bridge.schema import arrow_to_jsonschema, jsonschema_to_arrow

STREAM = "wide"
OURS = "dativo"
#: Informational rows when dativo_accel is installed: the same codec without the Rust parts.
OURS_PY = "dativo, Python only (no dativo_accel)"
#: Informational row: the peers' untimed setup (one run), which a real tap also pays.
PREP = "(untimed for peers) Arrow -> record dicts -> RecordMessage"
INT_MULTIPLIERS = (7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
#: float8 formulas as exact rationals g * num / den (PostgreSQL computes them exactly in numeric
#: and rounds once to float8; one correctly rounded division does the same). None: sqrt(g).
FLOATS = ((1, 2), (5, 4), (1, 1000), (1, 3), None, (5, 2), (3, 4), (33, 10), (1, 10), (99, 10))
#: Fixed stand-in for now() in t3, so runs are reproducible.
NOW_US = 1_735_689_600_123_456  # 2025-01-01T00:00:00.123456Z
HEX = pa.array(list("0123456789abcdef"))
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DECIMAL = pa.decimal128(12, 2)
CENT = pa.scalar(Decimal("0.01"), pa.decimal128(2, 2))

Timer = Callable[[], object]


def _us(iso: str) -> int:
    """Microseconds since the epoch of a UTC ISO date-time."""
    return (dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC) - EPOCH) // dt.timedelta(
        microseconds=1
    )


def _days(iso: str) -> int:
    """Days since the epoch of an ISO date."""
    return (dt.date.fromisoformat(iso) - EPOCH.date()).days


def _hex_strings(g: pa.Array, width: int) -> pa.Array:
    """Vectorised md5 look-alike: `width` lowercase hex chars of splitmix64 hashes of g."""
    u64 = pa.uint64()
    nibbles = []
    for seed in (0x9E3779B97F4A7C15, 0x632BE59BD9B4E019):
        z = pc.add(pc.cast(g, u64), pa.scalar(seed, u64))  # unchecked kernels wrap around
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
            z = pc.bit_wise_xor(z, pc.shift_right(z, pa.scalar(shift, u64)))
            z = z if mult is None else pc.multiply(z, pa.scalar(mult, u64))
        nibbles += [
            pc.bit_wise_and(pc.shift_right(z, pa.scalar(s, u64)), pa.scalar(15, u64))
            for s in range(60, -4, -4)
        ]
    return pc.binary_join_element_wise(*(pc.take(HEX, n) for n in nibbles[:width]), "")


def _mod(g: pa.Array, m: int, times: int = 1) -> pa.Array:
    """(g * times) % m."""
    return pc.modulo(pc.multiply(g, times), m)


def _text(prefix: str, values: pa.Array, suffix: str = "") -> pa.Array:
    """prefix || values || suffix with Arrow string kernels."""
    return pc.binary_join_element_wise(prefix, pc.cast(values, pa.string()), suffix, "")


def make_wide(rows: int) -> pa.Table:
    """The `wide` table of wide.sql, generated with pyarrow compute kernels (no per-row loop).

    Differences from PostgreSQL: s2 and s10 are hex hashes of the same length but not md5;
    t3 uses a fixed timestamp instead of now().
    """
    g = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), rows))  # 1..rows
    cols: dict[str, pa.Array] = {"id": g}
    for k, m in enumerate(INT_MULTIPLIERS, 1):
        cols[f"i{k}"] = pc.cast(_mod(g, 100_000, m), pa.int32())
    gf = pc.cast(g, pa.float64())
    for k, ratio in enumerate(FLOATS, 1):
        cols[f"f{k}"] = (
            pc.sqrt(gf)
            if ratio is None
            else pc.divide(pc.cast(pc.multiply(g, ratio[0]), pa.float64()), float(ratio[1]))
        )
    cols.update(
        {
            "s1": _text("customer_", g),
            "s2": _hex_strings(g, 32),
            "s3": _text("city_", _mod(g, 1000)),
            "s4": _text("sku-", _mod(g, 50_000)),
            "s5": _text("status_", _mod(g, 5)),
            "s6": _text("x", g),
            "s7": _text("note ", _mod(g, 777)),
            "s8": _text("email", g, "@example.com"),
            "s9": _text("region_", _mod(g, 12)),
            "s10": _hex_strings(pc.multiply(g, 3), 12),
        }
    )
    for k, m in enumerate((2, 3, 5, 7, 11), 1):
        cols[f"b{k}"] = pc.equal(_mod(g, m), 0)
    sec, minute = pc.multiply(g, 1_000_000), pc.multiply(g, 60_000_000)
    micros = [
        pc.add(sec, _us("2020-01-01")),
        pc.add(minute, _us("2021-01-01")),
        pc.subtract(NOW_US, sec),
        pc.add(pc.multiply(_mod(g, 86_400), 1_000_000), _us("2019-06-01")),
        pa.repeat(pa.scalar(_us("2022-01-01"), pa.int64()), rows),
    ]
    for k, us in enumerate(micros, 1):
        cols[f"t{k}"] = pc.cast(us, pa.timestamp("us", tz="UTC"))
    days = [
        pc.add(_mod(g, 3000), _days("2020-01-01")),
        pc.add(_mod(g, 5000), _days("2010-01-01")),
        pc.subtract(_days("2024-01-01"), _mod(g, 365)),
        pa.repeat(pa.scalar(_days("2000-01-01"), pa.int64()), rows),
        pc.add(_mod(g, 10), _days("2023-03-03")),
    ]
    for k, d in enumerate(days, 1):
        cols[f"d{k}"] = pc.cast(pc.cast(d, pa.int32()), pa.date32())
    cents = [
        _mod(g, 100_000),
        _mod(g, 100_000, 3),
        _mod(g, 100_000, 7),
        pa.repeat(pa.scalar(1_234_567, pa.int64()), rows),
    ]
    for k, c in enumerate(cents, 1):  # numeric(12,2) = cents / 100, exactly
        cols[f"n{k}"] = pc.multiply(pc.cast(c, pa.decimal128(19, 0)), CENT).cast(DECIMAL)
    schema = pa.schema([pa.field(n, a.type, nullable=(n != "id")) for n, a in cols.items()])
    return pa.Table.from_arrays(list(cols.values()), schema=schema)


def sdk_records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Record dicts as a singer-sdk tap emits them after conforming values to JSON.

    Datetimes become ``isoformat("T", timespec="microseconds")`` strings and dates
    ``isoformat()`` strings (done with Arrow kernels; same text); Decimals stay Decimal.
    """
    arrays = []
    for col in batch.columns:
        if pa.types.is_timestamp(col.type):
            col = pc.binary_join_element_wise(
                pc.strftime(col, format="%Y-%m-%dT%H:%M:%S"), "+00:00", ""
            )
        elif pa.types.is_date(col.type):
            col = pc.cast(col, pa.string())
        arrays.append(col)
    records = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pylist()
    first = batch.slice(0, 1).to_pylist()[0]
    assert records[0]["t1"] == first["t1"].isoformat("T", timespec="microseconds")
    assert records[0]["d1"] == first["d1"].isoformat()
    return records


def _timed(fn: Timer) -> float:
    """Wall-clock seconds of one call of fn."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_rounds(timers: dict[str, Timer], times: dict[str, list[float]], rnd: int) -> None:
    """Run each timer once, in an order rotated by `rnd`, adding its time to times[name][rnd]."""
    names = list(timers)
    shift = rnd % len(names)
    for name in names[shift:] + names[:shift]:
        times[name][rnd] += _timed(timers[name])


def write_simple(writer: SimpleSingerWriter, messages: Sequence[RecordMessage]) -> None:
    """singer-sdk's default writer: one JSON str per message, kept in a list."""
    lines = [writer.serialize_message(m) for m in messages]
    assert len(lines) == len(messages)


def write_msgspec(writer: MsgSpecWriter, messages: Sequence[RecordMessage]) -> None:
    """singer-sdk's msgspec writer; it reuses one buffer, so each line is copied out."""
    out = io.BytesIO()
    for m in messages:
        out.write(writer.serialize_message(m))


def read_all(reader: SimpleSingerReader | MsgSpecReader, lines: Sequence[str]) -> None:
    """A singer-sdk reader's per-line parse (deserialize_json) over all lines."""
    for line in lines:
        reader.deserialize_json(line)


def bench_encode(table: pa.Table, batch_rows: int, repeat: int) -> dict[str, list[float]]:
    """Per-repeat total seconds of each encoder over all batches."""
    simple, fast = SimpleSingerWriter(), MsgSpecWriter()
    names = [OURS, "singer-sdk SimpleSingerWriter", "singer-sdk MsgSpecWriter"]
    times = {n: [0.0] * repeat for n in names}
    prep = 0.0
    for batch in table.to_batches(max_chunksize=batch_rows):
        start = time.perf_counter()
        messages = [RecordMessage(stream=STREAM, record=r) for r in sdk_records(batch)]
        prep += time.perf_counter() - start

        timers: dict[str, Timer] = {
            OURS: partial(encode_records, batch, STREAM),
            names[1]: partial(write_simple, simple, messages),
            names[2]: partial(write_msgspec, fast, messages),
        }
        if _rust_encode_records is not None:
            times.setdefault(OURS_PY, [0.0] * repeat)
            timers[OURS_PY] = partial(encode_records_python, batch, STREAM)
        for rnd in range(repeat):
            run_rounds(timers, times, rnd)
    times[PREP] = [prep]
    return times


def bench_decode(
    table: pa.Table, batch_rows: int, repeat: int
) -> tuple[dict[str, list[float]], int]:
    """Per-repeat total seconds of each decoder, and the size of the RECORD lines in bytes."""
    schema = jsonschema_to_arrow(arrow_to_jsonschema(table.schema))  # as a target receives it
    chunks = [encode_records(b, STREAM) for b in table.to_batches(max_chunksize=batch_rows)]
    bounds = [0, *accumulate(len(c) for c in chunks)]
    whole = b"".join(chunks)
    del chunks  # keep one copy of the lines; batches are sliced out of `whole` when needed
    decoder = RecordDecoder(STREAM, schema, ["id"])  # one per stream, as in a target
    python = RecordDecoder(STREAM, schema, ["id"], accelerate=False)
    sample = whole[: bounds[1]].splitlines(keepends=True)[:1000]
    assert python.uses_fast_path
    expected = table.slice(0, len(sample)).cast(schema).to_batches()[0]
    for each in (decoder, python):
        assert each.decode(sample, range(1, len(sample) + 1)).equals(expected)
    simple, fast = SimpleSingerReader(), MsgSpecReader()
    names = [
        OURS,
        "pyarrow.json.read_json (whole input)",
        "singer-sdk SimpleSingerReader",
        "singer-sdk MsgSpecReader",
    ]
    times = {n: [0.0] * repeat for n in names}
    for rnd in range(repeat):
        times[names[1]][rnd] += _timed(lambda: pj.read_json(io.BytesIO(whole)))
        first_line = 1
        for lo, hi in pairwise(bounds):
            chunk = whole[lo:hi]
            lines = chunk.splitlines(keepends=True)
            text = chunk.decode().splitlines(keepends=True)  # the readers take str lines
            numbers = range(first_line, first_line + len(lines))
            first_line += len(lines)

            timers: dict[str, Timer] = {
                OURS: partial(decoder.decode, lines, numbers),
                names[2]: partial(read_all, simple, text),
                names[3]: partial(read_all, fast, text),
            }
            if decoder.uses_rust:
                times.setdefault(OURS_PY, [0.0] * repeat)
                timers[OURS_PY] = partial(python.decode, lines, numbers)
            run_rounds(timers, times, rnd)
    return times, len(whole)


def summarise(phase: str, times: dict[str, list[float]], rows: int) -> list[dict[str, Any]]:
    """One result row per contender: median seconds, rows/s, median per-repeat ratio."""
    ours = times[OURS]
    out = []
    for name, secs in times.items():
        peer = name not in (OURS, PREP, OURS_PY)
        ratio = statistics.median(p / o for p, o in zip(secs, ours, strict=True)) if peer else None
        out.append(
            {
                "phase": phase,
                "contender": name,
                "median_s": statistics.median(secs),
                "rows_per_s": rows / statistics.median(secs),
                "ours_over_peer": ratio,
                "runs_s": secs,
            }
        )
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| phase | contender | median s | rows/s | ours / peer (speed) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        ratio = "-" if r["ours_over_peer"] is None else f"{r['ours_over_peer']:.2f}x"
        lines.append(
            f"| {r['phase']} | {r['contender']} | {r['median_s']:.2f} | "
            f"{r['rows_per_s']:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run both phases, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of `wide` (default 20k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows per batch")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args()

    start = time.perf_counter()
    table = make_wide(args.rows)
    print(f"generated {args.rows:,} x {table.num_columns} in {time.perf_counter() - start:.1f} s")
    results = summarise("encode", bench_encode(table, args.batch_rows, args.repeat), args.rows)
    decode_times, size = bench_decode(table, args.batch_rows, args.repeat)
    results += summarise("decode", decode_times, args.rows)
    print(
        f"RECORD lines: {size / 1e6:,.0f} MB; median of {args.repeat} runs; "
        f"batches of {args.batch_rows:,} rows\n"
    )
    print(markdown(results))
    if args.json:
        meta = {**vars(args), "record_bytes": size, "date": dt.datetime.now(dt.UTC).isoformat()}
        meta |= {"python": platform.python_version(), "pyarrow": pa.__version__}
        meta |= {"machine": platform.machine(), "results": results}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)


if __name__ == "__main__":
    main()
