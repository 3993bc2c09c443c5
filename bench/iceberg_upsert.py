"""Applying a batch of changes to an Iceberg table: target-dativo-iceberg's copy-on-write
upsert vs pyiceberg's ``Table.upsert`` (+ ``delete`` for the deletes), same table, same
changes, alternating, each on a freshly built table.

The table has ``--rows`` rows (id bigint key, 5 payload columns) in ``--files`` data files
of consecutive keys, as a mirror built by a snapshot copy. The changes are ``--changes``
rows: 70% updates, 20% inserts of new keys, 10% deletes; ``--pattern random`` spreads the
updated/deleted keys over the whole table, ``recent`` over its newest 10% (hot rows).

    python bench/iceberg_upsert.py --rows 1000000 --changes 10000 --files 10 \
        --pattern recent --repeat 2 [--skip-pyiceberg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import In

from dativo_bridge.interfaces import StreamInfo
from target_dativo_iceberg.writer import IcebergWriter, open_catalog

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("name", pa.string()),
        ("score", pa.int64()),
        ("ratio", pa.float64()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("_sdc_lsn", pa.int64()),
        ("_sdc_deleted_at", pa.timestamp("us", tz="UTC")),
    ]
)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _rows(ids: list[int], lsn: int, version: str) -> pa.RecordBatch:
    n = len(ids)
    return pa.record_batch(
        [
            pa.array(ids, pa.int64()),
            pa.array([f"{version}-{i}" for i in ids]),
            pa.array([i * 7 for i in ids], pa.int64()),
            pa.array([i / 3 for i in ids], pa.float64()),
            pa.array([T0 + dt.timedelta(seconds=i) for i in ids], SCHEMA.field(4).type),
            pa.array([lsn] * n, pa.int64()),
            pa.nulls(n, SCHEMA.field(6).type),
        ],
        schema=SCHEMA,
    )


def _changes(rows: int, count: int, pattern: str, seed: int) -> pa.Table:
    rng = random.Random(seed)
    low = 1 if pattern == "random" else max(1, rows - rows // 10)
    touched = rng.sample(range(low, rows + 1), int(count * 0.8))
    updates, deletes = touched[: int(count * 0.7)], touched[int(count * 0.7) :]
    inserts = list(range(rows + 1, rows + 1 + count - len(touched)))
    parts = [_rows(updates, 1, "new"), _rows(inserts, 2, "ins")]
    gone = _rows(deletes, 3, "del")
    nulls = [pa.nulls(len(deletes), f.type) for f in SCHEMA][1:5]
    deleted_at = pa.array([T0] * len(deletes), SCHEMA.field(6).type)
    parts.append(
        pa.record_batch(
            [gone.column(0), *nulls, gone.column(5), deleted_at],
            schema=SCHEMA,
        )
    )
    return pa.Table.from_batches(parts, schema=SCHEMA)


def _build(warehouse: Path, rows: int, files: int) -> dict[str, Any]:
    config = {"warehouse": str(warehouse), "load_method": "append-only"}
    stream = StreamInfo("bench", SCHEMA, ("id",))
    per_file = -(-rows // files)
    for start in range(1, rows + 1, per_file):
        writer = IcebergWriter()
        writer.open(config, stream)
        ids = list(range(start, min(start + per_file, rows + 1)))
        writer.write(_rows(ids, 0, "old"))
        writer.commit()
        writer.close()
    return config


def _ours(config: dict[str, Any], changes: pa.Table) -> None:
    writer = IcebergWriter()
    writer.open({**config, "load_method": "upsert", "hard_delete": True}, _stream())
    for batch in changes.to_batches(max_chunksize=100_000):
        writer.write(batch)
    writer.commit()
    writer.close()


def _stream() -> StreamInfo:
    return StreamInfo("bench", SCHEMA, ("id",))


def _pyiceberg(config: dict[str, Any], changes: pa.Table) -> None:
    table = open_catalog(config).load_table("singer.bench")
    deleted = changes.filter(changes["_sdc_deleted_at"].is_valid())
    kept = changes.filter(changes["_sdc_deleted_at"].is_null())
    with table.transaction() as tx:
        tx.upsert(kept, join_cols=["id"])
        tx.delete(In("id", deleted["id"].to_pylist()))


def _check(config: dict[str, Any], rows: int, changes: pa.Table) -> int:
    """The table holds every key but the deleted ones, with the changes' values."""
    table = open_catalog(config).load_table("singer.bench").scan().to_arrow()
    deleted = set(changes.filter(changes["_sdc_deleted_at"].is_valid())["id"].to_pylist())
    kept = changes.filter(changes["_sdc_deleted_at"].is_null())
    expected = (set(range(1, rows + 1)) | set(kept["id"].to_pylist())) - deleted
    ids = table["id"].to_pylist()
    assert len(ids) == len(expected) and set(ids) == expected, "wrong keys"
    names = dict(zip(ids, table["name"].to_pylist(), strict=True))
    for key, name in zip(kept["id"].to_pylist(), kept["name"].to_pylist(), strict=True):
        assert names[key] == name, (key, names[key], name)
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--pattern", choices=["random", "recent"], default="recent")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-pyiceberg", action="store_true")
    args = parser.parse_args()
    changes = _changes(args.rows, args.changes, args.pattern, seed=18)
    contenders = {"dativo copy-on-write": _ours}
    if not args.skip_pyiceberg:
        contenders["pyiceberg upsert+delete"] = _pyiceberg
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, apply in contenders.items():
            home = Path(tempfile.mkdtemp(prefix="dativo-bench-ice-"))
            try:
                config = _build(home / "warehouse", args.rows, args.files)
                start = time.perf_counter()
                apply(config, changes)
                times[name].append(time.perf_counter() - start)
                left = _check(config, args.rows, changes)
            finally:
                shutil.rmtree(home, ignore_errors=True)
            print(f"{name}: {times[name][-1]:.2f} s ({left} rows after)", flush=True)
    print(f"\n{args.rows:,} rows in {args.files} files, {args.changes:,} changes ({args.pattern})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:26s} median {median:8.2f} s  {args.changes / median:10,.0f} changes/s")
    if len(times) == 2:
        ours, theirs = times.values()
        ratios = [b / a for a, b in zip(ours, theirs, strict=True)]
        print(f"  pyiceberg takes {statistics.median(ratios):.1f}x as long (median of the pairs)")


if __name__ == "__main__":
    main()
