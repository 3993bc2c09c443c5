"""What `dativo sandbox` costs on a shell pipe.

`tap-dativo-csv | target-dativo-parquet` on a generated CSV (default 1,000,000 rows of an
int id, two floats, two strings, a bool and a timestamp), run plainly and with both sides
under the sandbox (default policy plus memory, CPU, wall, process and file-size limits, so
the watchdog polls the whole time), alternating the two each round. Prints the median wall
time of each, the overhead in percent against the goal (within 5%), and checks that both
wrote every row.

    python bench/sandbox_overhead.py --rows 1000000 --repeat 3 [--json out.json]

``--mode run`` measures ``dativo run tap-dativo-csv target-dativo-parquet`` instead: in
process, against both plugins with a ``sandbox:`` mapping (the same limits), which runs
each in a worker under the sandbox with the batches crossing as Arrow IPC
(dativo_bridge/ipc.py). The load average is printed before and after: on a shared machine
the wall figures mean little when it is high.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

GOAL_PERCENT = 5.0
BIN = Path(sys.executable).parent
SANDBOX = [sys.executable, "-m", "dativo_bridge.sandbox_cli"]
POLICY = [
    "--memory-mb",
    "4096",
    "--cpu-seconds",
    "3600",
    "--wall-seconds",
    "3600",
    "--max-processes",
    "256",
    "--max-file-mb",
    "10240",
]


def make_csv(path: Path, rows: int) -> None:
    ids = pa.array(range(1, rows + 1), pa.int64())
    table = pa.table(
        {
            "id": ids,
            "amount": pc.divide(pc.cast(ids, pa.float64()), 7.0),
            "ratio": pc.divide(pc.cast(pc.multiply(ids, 3), pa.float64()), 11.0),
            "customer": pc.binary_join_element_wise("customer-", pc.cast(ids, pa.string()), ""),
            "city": pc.binary_join_element_wise(
                "city ", pc.cast(pc.bit_wise_and(ids, 255), pa.string()), ""
            ),
            "paid": pc.equal(pc.bit_wise_and(ids, 1), 0),
            "ordered_at": pc.cast(
                pc.add(pc.multiply(ids, 1_000_000), 1_700_000_000_000_000),
                pa.timestamp("us", "UTC"),
            ),
        }
    )
    pacsv.write_csv(table, path)


def pipeline(work: Path, sandboxed: bool) -> str:
    out = work / ("out-sandboxed" if sandboxed else "out-plain")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (work / "target.json").write_text(json.dumps({"path": str(out)}))
    tap = [str(BIN / "tap-dativo-csv"), "--config", str(work / "tap.json")]
    target = [str(BIN / "target-dativo-parquet"), "--config", str(work / "target.json")]
    if sandboxed:
        tap = [*SANDBOX, *POLICY, "--readable", str(work / "data.csv"), "--", *tap]
        target = [*SANDBOX, *POLICY, "--writable", str(out), "--", *target]
    return f"{shlex.join(tap)} | {shlex.join(target)} > /dev/null"


SANDBOX_MAPPING = {
    "memory_mb": 4096,
    "cpu_seconds": 3600,
    "wall_seconds": 3600,
    "max_processes": 256,
    "max_file_mb": 10240,
}


def dativo_run(work: Path, sandboxed: bool) -> str:
    """``dativo run`` of the same data; the plugins run out of process when sandboxed."""
    name = "sandboxed" if sandboxed else "plain"
    out, state = work / f"out-{name}", work / f"state-{name}"
    for folder in (out, state):
        shutil.rmtree(folder, ignore_errors=True)
    out.mkdir()
    tap: dict = {
        "name": "tap-dativo-csv",
        "config": {"files": [{"stream": "orders", "path": str(work / "data.csv")}]},
    }
    target: dict = {"name": "target-dativo-parquet", "config": {"path": str(out)}}
    if sandboxed:
        tap["sandbox"] = {**SANDBOX_MAPPING, "readable": [str(work / "data.csv")]}
        target["sandbox"] = {**SANDBOX_MAPPING, "writable": [str(out)]}
    project = work / f"meltano-{name}.yml"
    project.write_text(
        json.dumps({"version": 1, "plugins": {"extractors": [tap], "loaders": [target]}})
    )
    command = [
        str(BIN / "dativo"),
        "run",
        "tap-dativo-csv",
        "target-dativo-parquet",
        "--project",
        str(project),
        "--state-dir",
        str(state),
    ]
    return f"{shlex.join(command)} > /dev/null"


def run_once(work: Path, sandboxed: bool, rows: int, mode: str = "pipe") -> tuple[float, float]:
    """(wall seconds, CPU seconds of every process of the pipeline)."""
    command = pipeline(work, sandboxed) if mode == "pipe" else dativo_run(work, sandboxed)
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", command], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed ({'sandboxed' if sandboxed else 'plain'}):\n{stderr}")
    out = work / ("out-sandboxed" if sandboxed else "out-plain")
    files = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    written = ds.dataset(files, format="parquet").count_rows()
    if written != rows:
        raise SystemExit(
            f"{'sandboxed' if sandboxed else 'plain'} wrote {written} rows, not {rows}"
        )
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--mode", choices=("pipe", "run"), default="pipe")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    try:
        make_csv(work / "data.csv", args.rows)
        (work / "tap.json").write_text(
            json.dumps({"files": [{"stream": "orders", "path": str(work / "data.csv")}]})
        )
        times: dict[str, list[float]] = {"plain": [], "sandboxed": []}
        cpu: dict[str, list[float]] = {"plain": [], "sandboxed": []}
        for _ in range(args.repeat):
            for name in ("plain", "sandboxed"):
                wall, used = run_once(work, name == "sandboxed", args.rows, args.mode)
                times[name].append(wall)
                cpu[name].append(used)
        plain, boxed = (statistics.median(times[k]) for k in ("plain", "sandboxed"))
        overhead = (boxed - plain) / plain * 100
        best = (min(times["sandboxed"]) - min(times["plain"])) / min(times["plain"]) * 100
        cpu_plain, cpu_boxed = (statistics.median(cpu[k]) for k in ("plain", "sandboxed"))
        cpu_overhead = (cpu_boxed - cpu_plain) / cpu_plain * 100
        verdict = "PASS" if overhead <= GOAL_PERCENT else "FAIL"
        load_after = os.getloadavg()
        print(f"mode: {args.mode}, rows: {args.rows:,}, rounds: {args.repeat}")
        print(
            "  load average (1, 5, 15 min): before "
            + ", ".join(f"{x:.2f}" for x in load_before)
            + "; after "
            + ", ".join(f"{x:.2f}" for x in load_after)
            + f" ({os.cpu_count()} CPUs)"
        )
        for name, values in times.items():
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(
                f"  {name:<10} median {statistics.median(values):6.2f} s wall, "
                f"{statistics.median(cpu[name]):6.2f} s CPU  ({runs})"
            )
        print(f"  overhead   {overhead:+.1f}% wall (median), {best:+.1f}% (best run), ", end="")
        print(f"{cpu_overhead:+.1f}% CPU  (goal: within {GOAL_PERCENT:g}% wall: {verdict})")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "mode": args.mode,
                        "rows": args.rows,
                        "times": times,
                        "cpu": cpu,
                        "overhead_percent": overhead,
                        "load_before": load_before,
                        "load_after": load_after,
                    },
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
