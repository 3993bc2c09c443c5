"""The ray engine against the local engine on one machine: the cost of scheduling, not a
speed-up (both use the same 2 cores), and the per-partition rates docs/scale-out.md's model
is built from.

Loads the `wide` reference table (bench/postgres.py's loader, --rows) and, in one process:
1. the local engine: ``dativo_bridge.run`` PostgreSQL -> Iceberg (parallel ctid reads);
2. the ray engine: ``run_with_ray`` on a local Ray instance started here (--num-cpus);
3. one partition measured alone: the server's binary COPY drained on one connection
   (scan rate), COPY decoded to Arrow (decode rate), Arrow encoded to Parquet (encode rate).
Runs alternate local/ray --repeat times; medians are printed (and written with --json).

    python bench/ray_overhead.py --rows 1000000 --repeat 3 [--dsn URI] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgres import DEFAULT_PGDATA, DEFAULT_SQL, load_table, server

from dativo_bridge import run
from dativo_bridge.engines.ray_engine import require_ray, run_with_ray
from tap_dativo_postgres.partitions import PartitionedPostgresReader
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_iceberg.writer import IcebergWriter


def one_partition_rates(source: dict[str, Any], select: list[str]) -> dict[str, float]:
    """rows/s of one partition alone: server scan (binary COPY drained), decode, encode."""
    from dativo_bridge.sources import selected_streams

    reader = PartitionedPostgresReader()
    reader.open(source)
    try:
        stream = selected_streams(reader, select, None)[0]
        part = reader.partitions(stream, None)[0]
        start = time.perf_counter()
        batches = list(reader.read_partition(part))
        decode = time.perf_counter() - start
        rows = sum(b.num_rows for b in batches)
        start = time.perf_counter()
        with pq.ParquetWriter(io.BytesIO(), batches[0].schema, compression="zstd") as out:
            for batch in batches:
                out.write_batch(batch)
        encode = time.perf_counter() - start
        table = reader._table(stream)
        lo, hi = part.spec["lo"], part.spec["hi"]
        query = (
            f'COPY (SELECT * FROM "{table.schema}"."{table.table}" WHERE ctid >= \'({lo},0)\''
            + (f" AND ctid < '({hi},0)'" if hi is not None else "")
            + ") TO STDOUT (FORMAT binary)"
        )
        start = time.perf_counter()
        with (
            psycopg.connect(source["dsn"]) as conn,
            conn.cursor() as cur,
            cur.copy(query) as copy,
        ):
            while copy.read():
                pass
        scan = time.perf_counter() - start
    finally:
        reader.close()
    return {
        "partition_rows": rows,
        "scan_rows_per_s": rows / scan,
        "decode_rows_per_s": rows / decode,
        "encode_rows_per_s": rows / encode,
        "accelerator": 1.0 if reader.accelerator == "rust" else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--pages-per-partition", type=int, default=10_000)
    parser.add_argument("--dsn")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ray = require_ray()
    with server(args.dsn, DEFAULT_PGDATA) as dsn:
        qualified = load_table(dsn, DEFAULT_SQL.read_text(), args.rows)
        schema, name = qualified.split(".")
        select = [f"{schema}-{name}.*"]
        source = {
            "dsn": dsn,
            "filter_schemas": [schema],
            "pages_per_partition": args.pages_per_partition,
        }
        start = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, object_store_memory=10**8)
        ray_start = time.perf_counter() - start
        local_times: list[float] = []
        ray_times: list[float] = []
        ray_runs: list[dict[str, Any]] = []
        try:
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="dativo-bench-ice-") as wh:
                    start = time.perf_counter()
                    local = run(
                        PostgresReader,
                        IcebergWriter,
                        source_config=source,
                        destination_config={"warehouse": wh},
                        select=select,
                    )
                    local_times.append(time.perf_counter() - start)
                    assert local.rows == args.rows, local.rows
                with tempfile.TemporaryDirectory(prefix="dativo-bench-ice-") as wh:
                    start = time.perf_counter()
                    result = run_with_ray(
                        PostgresReader,
                        IcebergWriter,
                        source_config=source,
                        destination_config={"warehouse": wh},
                        select=select,
                    )
                    ray_times.append(time.perf_counter() - start)
                    assert result.rows == args.rows, result.rows
                    ray_runs.append(result.to_dict())
                print(f"local {local_times[-1]:.2f} s, ray {ray_times[-1]:.2f} s", flush=True)
            rates = one_partition_rates(source, select)
        finally:
            ray.shutdown()
    last = ray_runs[-1]
    task_rates = [t["rows"] / t["seconds"] for t in last["tasks"] if t["seconds"] > 0]
    report = {
        "rows": args.rows,
        "num_cpus": args.num_cpus,
        "ray_init_seconds": round(ray_start, 2),
        "local_seconds_median": round(statistics.median(local_times), 2),
        "ray_seconds_median": round(statistics.median(ray_times), 2),
        "overhead_ratio": round(statistics.median(ray_times) / statistics.median(local_times), 2),
        "ray_tasks": len(last["tasks"]),
        "ray_plan_seconds": last["plan_seconds"],
        "ray_commit_seconds": last["commit_seconds"],
        "task_rows_per_s_median": round(statistics.median(task_rates)),
        "nodes": sorted({t["node_id"][:8] for t in last["tasks"]}),
        **{k: round(v) if k.endswith("_per_s") else v for k, v in rates.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
