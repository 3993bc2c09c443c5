"""Shell pipe benchmark: Dativo's tap | target against meltanolabs-tap-postgres | target-jsonl.

`tap-dativo-postgres | target-dativo-parquet` against `meltanolabs-tap-postgres |
target-jsonl`, on the `wide` reference table.

Loads the table with bench/postgres.py's functions (which this script imports), runs each
pipeline as `bash -o pipefail -c "tap ... | target ..."` under `/usr/bin/time -v`,
alternating them each round, checks what each target wrote (the Parquet files' rows and ids,
the JSONL file's lines and ids), and prints the median wall time, rows/s, peak RSS and the
speed-up of Dativo's pipeline over the peer's, with the goal (at least 15x) as PASS/FAIL.

The peer is slow (about 8k rows/s end to end here), so above 100,000 rows it reads
`bench.wide_100000` and its times are scaled to --rows, as bench/postgres.py does for
meltanolabs-tap-postgres alone. target-jsonl runs from its own virtualenv
(bench/.venvs/target-jsonl, pinned). See bench/README.md for what each row means.

    python bench/shell.py --rows 1000000 --repeat 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipelines  # bench/pipelines.py: the process-tree RSS sampler
import postgres as pgbench  # bench/postgres.py: server, table loading, venvs, timing helpers

REPO = pgbench.REPO
#: target-jsonl's virtualenv under bench/.venvs/: the pinned requirement (the version the
#: end-to-end tests use) and the packages whose versions are reported.
TARGET_JSONL_VENV = "target-jsonl"
TARGET_JSONL_PINS = ["target-jsonl==0.1.4"]
TARGET_JSONL_REPORT = ["target-jsonl", "singer-python", "jsonschema", "simplejson"]
#: Goal: Dativo's shell pipeline at least this many times faster than the peer's.
GOAL_SPEEDUP = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
_USER = re.compile(r"User time \(seconds\): (\S+)")
_SYSTEM = re.compile(r"System time \(seconds\): (\S+)")


@dataclass
class Pipe(pgbench.Contender):
    """A shell pipeline (``argv[0]``, run with ``bash -o pipefail -c``); ``outputs[0]`` is
    the folder its target writes, checked after each run as ``output`` (parquet or jsonl)."""

    output: str = "parquet"


@dataclass
class PipeRun(pgbench.Run):
    """One timed pipeline run, with what its target wrote, where the machine's CPU time
    went meanwhile, and the code it ran."""

    tree_rss_kb: int = 0
    rows_written: int = 0
    files: int = 0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    code: str = ""


# --- set-up ------------------------------------------------------------------------------


def table_columns(dsn: str, qualified: str) -> list[str]:
    """The column names of ``qualified`` (schema.table), in order."""
    schema, name = qualified.split(".")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    return [str(r[0]) for r in rows]


def accel_facts() -> dict[str, str] | None:
    """Version and sha256 (first 12 hex digits) of the optional Rust extension's library, as
    a new process would load it, or None when it is not installed."""
    spec = importlib.util.find_spec("dativo_accel")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("_core*.so")):
        digest.update(path.read_bytes())
    try:
        version = metadata.version("dativo-accel")
    except metadata.PackageNotFoundError:
        version = "?"
    return {"version": version, "core_sha256": digest.hexdigest()[:12]}


def code_facts() -> dict[str, Any]:
    """The checkout whose code (s1) runs: commit, files of dativo_bridge/, taps/ and
    targets/ that differ from it, and a digest of that difference (to tell whether the code
    changed between runs, e.g. while someone edits the same working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return done.stdout if done.returncode == 0 else ""

    paths = ["dativo_bridge", "taps", "targets"]
    diff = git("diff", "HEAD", "--", *paths)
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "changed": [line[3:] for line in git("status", "--porcelain", "--", *paths).splitlines()],
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
    }


def fingerprint() -> str:
    """One short id for the code (s1) runs: the working tree's diff and the extension."""
    code, accel = code_facts(), accel_facts()
    return (
        f"{(code['commit'] or '?')[:10]}"
        f"{'+diff:' + code['diff_sha256'] if code['diff_sha256'] else ''}"
        f" accel:{accel['core_sha256'] if accel else 'none'}"
    )


def ours_env() -> dict[str, str]:
    """Environment for Dativo's console scripts: this checkout first on PYTHONPATH, so they
    run its code even if the installed `dativo` distribution points at another copy."""
    extra = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(REPO), *([extra] if extra else [])])}


def peer_versions() -> dict[str, dict[str, str]]:
    """Installed versions in the peers' virtualenvs (meltanolabs-tap-postgres, target-jsonl)."""
    return {
        "meltanolabs": pgbench.venv_versions(
            pgbench.VENVS / "meltanolabs" / "bin" / "python", pgbench.PEERS["meltanolabs"][1]
        ),
        TARGET_JSONL_VENV: pgbench.venv_versions(
            pgbench.VENVS / TARGET_JSONL_VENV / "bin" / "python", TARGET_JSONL_REPORT
        ),
    }


def build_pipes(
    dsn: str, table: str, peer_table: str, rows: int, peer_rows: int, work: Path
) -> list[Pipe]:
    """(s1) Dativo's pipeline and (s2) the peer's, configs and catalogs written to ``work``."""
    stream = table.replace(".", "-")
    env = ours_env()
    tap = pgbench.find_executable("tap-dativo-postgres")
    target = pgbench.find_executable("target-dativo-parquet")
    tap_cfg = pgbench.write_json(
        work / "tap.json", {"dsn": dsn, "filter_schemas": [pgbench.SCHEMA], "accelerator": "auto"}
    )
    tap_catalog = pgbench.discover([tap], tap_cfg, stream, work / "tap-catalog.json", env)
    ours_out = work / "out-parquet"
    target_cfg = pgbench.write_json(work / "target.json", {"path": str(ours_out)})
    ours_script = (
        f"{shlex.join([tap, '--config', str(tap_cfg), '--catalog', str(tap_catalog)])} | "
        f"{shlex.join([target, '--config', str(target_cfg)])}"
    )

    melt_python = pgbench.ensure_venv("meltanolabs")
    jsonl_python = pgbench.ensure_venv(TARGET_JSONL_VENV, TARGET_JSONL_PINS)
    melt_tap = str(melt_python.parent / "tap-postgres")
    jsonl_target = str(jsonl_python.parent / "target-jsonl")
    melt_settings, melt_env = pgbench.meltano_config(dsn)
    melt_cfg = pgbench.write_json(work / "meltano.json", melt_settings)
    peer_stream = peer_table.replace(".", "-")
    melt_catalog = pgbench.discover(
        [melt_tap], melt_cfg, peer_stream, work / "meltano-catalog.json", melt_env
    )
    peer_out = work / "out-jsonl"
    jsonl_cfg = pgbench.write_json(
        work / "target-jsonl.json", {"destination_path": str(peer_out), "do_timestamp_file": False}
    )
    peer_script = (
        f"{shlex.join([melt_tap, '--config', str(melt_cfg), '--catalog', str(melt_catalog)])} | "
        f"{shlex.join([jsonl_target, '--config', str(jsonl_cfg)])}"
    )
    scaled = peer_rows < rows
    peer_label = "(s2) meltanolabs-tap-postgres | target-jsonl"
    if scaled:
        peer_label += f" (measured on {peer_rows:,} rows, scaled)"
    return [
        Pipe(
            "s1",
            "(s1) tap-dativo-postgres | target-dativo-parquet",
            [ours_script],
            rows,
            count="metrics",
            shell=True,
            outputs=[ours_out],
            env=env,
            output="parquet",
        ),
        Pipe(
            "s2",
            peer_label,
            [peer_script],
            peer_rows,
            count="metrics",
            shell=True,
            outputs=[peer_out],
            env=melt_env,
            note=(
                f"(s2) reads {peer_table} (the first {peer_rows:,} rows of the same table); "
                f"its times are multiplied by {rows / peer_rows:g} to {rows:,} rows, which "
                "also multiplies both processes' start-up."
                if scaled
                else ""
            ),
            output="jsonl",
        ),
    ]


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="utf-8") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def _proc_stat(pid: str) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/<pid>/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.find("(") + 1 : text.rfind(")")], text.rsplit(")", 1)[1].split()


def find_postmaster(dsn: str) -> int | None:
    """The PID of the server's postmaster, if the server runs on this machine (the parent
    of a backend we connect to); None otherwise."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        stat = _proc_stat(str(row[0])) if row else None
    if stat is None or stat[0] != "postgres":
        return None
    return int(stat[1][1])


def server_cpu_s(postmaster: int | None) -> float:
    """CPU seconds of the server: its postmaster and the postmaster's children, with those of
    exited backends (in the postmaster's cutime and cstime once it reaped them); 0 when
    the server is not on this machine."""
    if postmaster is None:
        return 0.0
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(entry.name)
        if stat is None:
            continue  # the process ended meanwhile
        fields = stat[1]
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLK_TCK


# --- checking the outputs ----------------------------------------------------------------


def check_ids(ids: pa.ChunkedArray | pa.Array, rows: int, what: str) -> None:
    """Fail unless ``ids`` are exactly 1..rows, each once."""
    count, distinct = len(ids), pc.count_distinct(ids).as_py()
    low, high = pc.min(ids).as_py(), pc.max(ids).as_py()
    if (count, distinct, low, high) != (rows, rows, 1, rows):
        raise SystemExit(
            f"{what}: {count:,} ids, {distinct:,} distinct, from {low} to {high}; "
            f"expected 1..{rows:,} once each"
        )


def check_parquet(folder: Path, rows: int, columns: Sequence[str]) -> tuple[int, int]:
    """(rows, files) of the visible Parquet files under ``folder``; fails unless every file
    has the table's columns and the ids are 1..rows, each once."""
    files = [
        path
        for path in sorted(folder.rglob("*.parquet"))
        if not any(p.startswith((".", "_")) for p in path.relative_to(folder).parts)
    ]
    if not files:
        raise SystemExit(f"no Parquet file under {folder}")
    total, ids = 0, []
    for path in files:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if sorted(names) != sorted(columns):
            raise SystemExit(f"{path}: columns {names}, expected {list(columns)}")
        total += parquet.metadata.num_rows
        ids.extend(parquet.read(columns=["id"]).column("id").chunks)
    if total != rows:
        raise SystemExit(f"{folder}: {total:,} rows in the Parquet footers, expected {rows:,}")
    check_ids(pa.chunked_array(ids, pa.int64()), rows, str(folder))
    return total, len(files)


def check_jsonl(folder: Path, rows: int, columns: Sequence[str]) -> tuple[int, int]:
    """(lines, files) of the one JSONL file in ``folder``; fails unless it has ``rows``
    lines, each a JSON object with exactly the table's columns, and the ids are 1..rows."""
    files = sorted(folder.glob("*.jsonl"))
    if len(files) != 1:
        raise SystemExit(f"{folder}: expected one .jsonl file, found {[f.name for f in files]}")
    expected, ids = sorted(columns), []
    with open(files[0], encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            record = json.loads(line)
            if sorted(record) != expected:
                raise SystemExit(f"{files[0]} line {number}: keys {sorted(record)}")
            ids.append(record["id"])
    if len(ids) != rows:
        raise SystemExit(f"{files[0]}: {len(ids):,} lines, expected {rows:,}")
    check_ids(pa.array(ids, pa.int64()), rows, str(files[0]))
    return len(ids), 1


# --- measuring ---------------------------------------------------------------------------


def time_once(
    p: Pipe, rnd: int, work: Path, columns: Sequence[str], postmaster: int | None
) -> PipeRun:
    """Run ``p`` once under /usr/bin/time -v, sampling its process tree's RSS; check what
    its target wrote and the rows its tap reported, then delete the output."""
    timing, log = work / "time.txt", work / f"stderr-{p.key}.txt"
    code_before = fingerprint()
    busy, server = machine_busy_s(), server_cpu_s(postmaster)
    command = [pgbench.TIME_BIN, "-v", "-o", str(timing), "bash", "-o", "pipefail", "-c"]
    peak = [0]
    try:
        with open(log, "wb") as stderr:
            proc = subprocess.Popen(
                [*command, p.argv[0]],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **p.env},
            )
            sampler = threading.Thread(target=pipelines.sample_tree, args=(proc, peak), daemon=True)
            sampler.start()
            code = proc.wait()
            busy, server = machine_busy_s() - busy, server_cpu_s(postmaster) - server
            sampler.join()
        errors = log.read_text(encoding="utf-8", errors="replace")
        if code:
            raise SystemExit(f"{p.label} failed (exit {code}):\n{errors[-3000:]}")
        report = timing.read_text(encoding="utf-8")
        wall, rss = pgbench._WALL.search(report), pgbench._RSS.search(report)
        user, system = _USER.search(report), _SYSTEM.search(report)
        if wall is None or rss is None or user is None or system is None:
            raise SystemExit(f"could not parse /usr/bin/time -v output:\n{report}")
        cpu = float(user.group(1)) + float(system.group(1))
        reported = pgbench.reported_rows(p, "", errors)
        if reported != p.rows:
            raise SystemExit(f"{p.label}: the tap reported {reported} rows, expected {p.rows:,}")
        check = check_parquet if p.output == "parquet" else check_jsonl
        written, files = check(p.outputs[0], p.rows, columns)
    finally:
        output_mb = pgbench.remove_outputs(p.outputs)
    code_after = fingerprint()
    return PipeRun(
        p.key,
        rnd,
        pgbench.parse_wall(wall.group(1)),
        int(rss.group(1)),
        reported,
        output_mb,
        tree_rss_kb=peak[0],
        rows_written=written,
        files=files,
        cpu_s=cpu,
        server_cpu_s=server,
        other_cpu_s=busy - cpu - server,
        code=code_before if code_after == code_before else f"{code_before} -> {code_after}",
    )


def run_rounds(
    pipes: Sequence[Pipe],
    repeat: int,
    work: Path,
    columns: Sequence[str],
    postmaster: int | None,
) -> list[PipeRun]:
    """Every pipeline ``repeat`` times, the order rotated by one each round."""
    runs = []
    for rnd in range(repeat):
        shift = rnd % len(pipes)
        for p in [*pipes[shift:], *pipes[:shift]]:
            run = time_once(p, rnd, work, columns, postmaster)
            runs.append(run)
            print(
                f"  round {rnd + 1}/{repeat}: {p.label}: {run.wall_s:.2f} s, peak RSS "
                f"{run.max_rss_kb / 1024:.0f} MB (tree {run.tree_rss_kb / 1024:.0f} MB), "
                f"checked {run.rows_written:,} rows in {run.files} file(s), "
                f"{run.output_mb:.0f} MB; CPU s: pipeline {run.cpu_s:.1f}, server "
                f"{run.server_cpu_s:.1f}, other {run.other_cpu_s:.1f}; code {run.code}",
                flush=True,
            )
    return runs


# --- reporting ---------------------------------------------------------------------------


def summarise(pipes: Sequence[Pipe], runs: Sequence[PipeRun], rows: int) -> list[dict]:
    """One row per pipeline: median wall (scaled to ``rows``), rows/s, RSS, speed-up."""
    scale = {p.key: rows / p.rows for p in pipes}
    scaled = [pgbench.Run(r.key, r.round, r.wall_s * scale[r.key], 0, None) for r in runs]
    out = []
    for p in pipes:
        mine = [r for r in runs if r.key == p.key]
        median = statistics.median(r.wall_s * scale[p.key] for r in mine)
        out.append(
            {
                "key": p.key,
                "pipeline": p.label,
                "rows_read": p.rows,
                "scale": scale[p.key],
                "median_s": median,
                "rows_per_s": rows / median,
                "peak_rss_mb": max(r.max_rss_kb for r in mine) / 1024,
                "tree_rss_mb": max(r.tree_rss_kb for r in mine) / 1024,
                "speedup_vs_peer": (
                    pgbench._ratio(scaled, p.key, "s2", lambda m, t: t / m)
                    if p.key == "s1"
                    else None
                ),
                "per_round_speedup": (
                    [
                        t.wall_s / m.wall_s
                        for m in scaled
                        if m.key == "s1"
                        for t in scaled
                        if t.key == "s2" and t.round == m.round
                    ]
                    if p.key == "s1"
                    else None
                ),
                "output_mb": statistics.median(r.output_mb or 0.0 for r in mine),
                "output": p.output,
                "files": [r.files for r in mine],
                "runs_s": [r.wall_s for r in mine],
                "runs_rss_mb": [r.max_rss_kb / 1024 for r in mine],
            }
        )
    return out


def goals(summary: Sequence[dict]) -> list[tuple[str, bool]]:
    """The shell pipeline goal, with whether it is met."""
    ours = next(s for s in summary if s["key"] == "s1")
    speedup = ours["speedup_vs_peer"]
    return [
        (
            f"(s1) tap-dativo-postgres | target-dativo-parquet at least {GOAL_SPEEDUP:g}x faster "
            f"than (s2) meltanolabs-tap-postgres | target-jsonl (median over rounds of "
            f"(s2) / (s1): {speedup:.2f}x)",
            speedup >= GOAL_SPEEDUP,
        )
    ]


def markdown(summary: Sequence[dict], met: Sequence[tuple[str, bool]]) -> str:
    """The results table and the goal as markdown."""
    lines = [
        "| pipeline | median wall s | rows/s | peak RSS MB (largest process) "
        "| tree RSS MB (sampled sum) | speed-up vs (s2) | output |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        speedup = "-" if s["speedup_vs_peer"] is None else f"{s['speedup_vs_peer']:.2f}x"
        files = "/".join(str(f) for f in sorted(set(s["files"])))
        kind = "Parquet" if s["output"] == "parquet" else "JSONL"
        output = f"{s['output_mb']:.0f} MB {kind}, {files} file(s), {s['rows_read']:,} rows"
        label = s["pipeline"].replace("|", r"\|")
        lines.append(
            f"| {label} | {s['median_s']:.2f} | {s['rows_per_s']:,.0f} | "
            f"{s['peak_rss_mb']:.0f} | {s['tree_rss_mb']:.0f} | {speedup} | {output} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- {'PASS' if ok else '**FAIL**'}: {text}" for text, ok in met]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, load the tables, time both pipelines and print the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of `wide` (default 100k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline (default 3)")
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=pgbench.MELTANO_MAX_ROWS,
        help=f"rows the peer reads at most, then scaled (default {pgbench.MELTANO_MAX_ROWS:,})",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("DATIVO_TEST_PG_DSN"),
        help="use this server (default: $DATIVO_TEST_PG_DSN, else start one with pgserver)",
    )
    parser.add_argument(
        "--pgdata",
        type=Path,
        default=pgbench.DEFAULT_PGDATA,
        help=f"pgserver data directory, kept between runs ({pgbench.DEFAULT_PGDATA})",
    )
    parser.add_argument("--sql", type=Path, default=pgbench.DEFAULT_SQL, help="path of wide.sql")
    parser.add_argument("--json", metavar="PATH", help="also write every run to PATH")
    args = parser.parse_args()
    if args.rows < 1 or args.repeat < 1 or args.peer_rows < 1:
        parser.error("--rows, --repeat and --peer-rows must be positive")

    started = dt.datetime.now(dt.UTC)
    sql_text = args.sql.read_text(encoding="utf-8")
    peer_rows = min(args.rows, args.peer_rows)
    code_before, accel_before = code_facts(), accel_facts()
    print(
        f"code under test: {REPO} at {code_before['commit']}, changed in the working tree: "
        f"{', '.join(code_before['changed']) or 'nothing'}",
        flush=True,
    )
    print(
        f"dativo_accel: {accel_before or 'not installed'}: tap-dativo-postgres (accelerator: "
        f"auto) reads with the {'Rust' if accel_before else 'Python'} COPY path",
        flush=True,
    )
    with pgbench.server(args.dsn, args.pgdata) as dsn, tempfile.TemporaryDirectory() as tmp:
        table = pgbench.load_table(dsn, sql_text, args.rows)
        peer_table = (
            pgbench.load_table(dsn, sql_text, peer_rows) if peer_rows < args.rows else table
        )
        facts = pgbench.table_facts(dsn, table)
        columns = table_columns(dsn, table)
        print(
            f"{table}: {args.rows:,} rows x {len(columns)} columns, "
            f"{facts['table_bytes'] / 1e6:,.0f} MB (PostgreSQL {facts['server_version']}); "
            f"the peer reads {peer_table}",
            flush=True,
        )
        pipes = build_pipes(dsn, table, peer_table, args.rows, peer_rows, Path(tmp))
        peers = peer_versions()
        print(
            "peers: "
            + "; ".join(
                ", ".join(f"{name} {version}" for name, version in found.items())
                for found in peers.values()
            ),
            flush=True,
        )
        postmaster = find_postmaster(dsn)
        if postmaster is None:
            print("note: the server is not on this machine; its CPU is not measured", flush=True)
        runs = run_rounds(pipes, args.repeat, Path(tmp), columns, postmaster)
        info = conninfo_to_dict(dsn)
    code_after, accel_after = code_facts(), accel_facts()
    codes = sorted({r.code for r in runs if r.key == "s1"})
    if len(codes) > 1 or "->" in codes[0]:
        print(
            "\nwarning: the code (s1) ran changed during the benchmark (someone edited the "
            "working tree or reinstalled dativo_accel); per round: "
            + "; ".join(f"round {r.round + 1}: {r.code}" for r in runs if r.key == "s1"),
            flush=True,
        )
    summary = summarise(pipes, runs, args.rows)
    met = goals(summary)
    print(
        f"\n{args.rows:,} rows x {len(columns)} columns; median of {args.repeat} interleaved runs\n"
    )
    print(markdown(summary, met))
    ours = summary[0]
    print(
        "\nPer-round speed-up (s2)/(s1): "
        + ", ".join(f"{x:.2f}x" for x in ours["per_round_speedup"])
    )
    for p in pipes:
        if p.note:
            print(f"\nNote: {p.note}")
    print(
        "\nPeak RSS (largest process) is /usr/bin/time's maximum resident set size of the "
        "shell, i.e. the largest single process of the pipeline (wait4), not the sum; the "
        "sampled sum adds up every process every 0.2 s."
    )
    if args.json:
        env = pgbench.machine_facts()
        env["dativo_accel"] = {"before": accel_before, "after": accel_after}
        env["code"] = {"before": code_before, "after": code_after}
        env["peers"] = peers
        info.pop("password", None)
        result: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "rows": args.rows,
            "peer_rows": peer_rows,
            "repeat": args.repeat,
            "table": table,
            "peer_table": peer_table,
            "server": {**facts, "conninfo": info},
            "environment": env,
            "pipelines": [
                {
                    "key": p.key,
                    "label": p.label,
                    "script": p.argv[0],
                    "env": p.env,
                    "rows": p.rows,
                    "note": p.note,
                }
                for p in pipes
            ],
            "summary": summary,
            "goals": [{"goal": text, "met": ok} for text, ok in met],
            "runs": [asdict(r) for r in runs],
        }
        pgbench.write_json(Path(args.json), result)


if __name__ == "__main__":
    main()
