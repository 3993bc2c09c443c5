"""The ray engine against the local engine on one machine: the cost of scheduling, not a
speed-up (both use the same 2 cores), and the per-partition rates docs/scale-out.md's model
is built from.

Loads the `wide` reference table (bench/postgres.py's loader, --rows) and, in one process,
for each target of --targets (target-dativo-iceberg, target-dativo-parquet; both by default):
1. the local engine: ``dativo_bridge.run`` PostgreSQL -> the target (parallel ctid reads);
2. the ray engine: ``run_with_ray`` on a local Ray instance started here (--num-cpus);
3. one partition measured alone: the server's binary COPY drained on one connection
   (scan rate), COPY decoded to Arrow (decode rate), Arrow encoded to Parquet (encode rate).
Runs alternate local/ray (each target in turn) --repeat times; medians are printed (and
written with --json).

    python bench/ray_overhead.py --rows 1000000 --repeat 3 [--targets iceberg,parquet]
        [--dsn URI] [--json out.json]
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
from target_dativo_parquet.writer import ParquetWriter

#: target name: (writer, its destination config for an empty directory)
TARGETS: dict[str, tuple[Any, Any]] = {
    "iceberg": (IcebergWriter, lambda directory: {"warehouse": directory}),
    "parquet": (ParquetWriter, lambda directory: {"path": directory}),
}


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
    parser.add_argument(
        "--targets",
        default="iceberg,parquet",
        help="comma-separated: iceberg, parquet (default: both)",
    )
    parser.add_argument("--dsn")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"--targets: unknown {unknown}; choose from {', '.join(TARGETS)}")
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
        times: dict[str, dict[str, list[float]]] = {t: {"local": [], "ray": []} for t in targets}
        ray_runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        try:
            for _ in range(args.repeat):
                for target in targets:
                    writer, config = TARGETS[target]
                    for engine in ("local", "ray"):
                        with tempfile.TemporaryDirectory(prefix=f"dativo-bench-{target}-") as d:
                            start = time.perf_counter()
                            if engine == "local":
                                result: Any = run(
                                    PostgresReader,
                                    writer,
                                    source_config=source,
                                    destination_config=config(d),
                                    select=select,
                                )
                            else:
                                result = run_with_ray(
                                    PostgresReader,
                                    writer,
                                    source_config=source,
                                    destination_config=config(d),
                                    select=select,
                                )
                                ray_runs[target].append(result.to_dict())
                            times[target][engine].append(time.perf_counter() - start)
                            assert result.rows == args.rows, (target, engine, result.rows)
                    print(
                        f"{target}: local {times[target]['local'][-1]:.2f} s, "
                        f"ray {times[target]['ray'][-1]:.2f} s",
                        flush=True,
                    )
            rates = one_partition_rates(source, select)
        finally:
            ray.shutdown()
    report: dict[str, Any] = {
        "rows": args.rows,
        "num_cpus": args.num_cpus,
        "ray_init_seconds": round(ray_start, 2),
        "targets": {t: target_report(times[t], ray_runs[t]) for t in targets},
        **{k: round(v) if k.endswith("_per_s") else v for k, v in rates.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def target_report(times: dict[str, list[float]], ray_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and runs of one target, with the last ray run's tasks."""
    last = ray_runs[-1]
    task_rates = [t["rows"] / t["seconds"] for t in last["tasks"] if t["seconds"] > 0]
    local, ray_ = statistics.median(times["local"]), statistics.median(times["ray"])
    return {
        "local_seconds_median": round(local, 2),
        "ray_seconds_median": round(ray_, 2),
        "local_seconds": [round(t, 2) for t in times["local"]],
        "ray_seconds": [round(t, 2) for t in times["ray"]],
        "overhead_ratio": round(ray_ / local, 2),
        "ray_tasks": len(last["tasks"]),
        "ray_plan_seconds": last["plan_seconds"],
        "ray_commit_seconds": last["commit_seconds"],
        "task_rows_per_s_median": round(statistics.median(task_rates)),
        "nodes": sorted({t["node_id"][:8] for t in last["tasks"]}),
    }


if __name__ == "__main__":
    main()
