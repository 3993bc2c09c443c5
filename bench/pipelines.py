"""Pipelines benchmark: `dativo run` to Parquet and Iceberg, and `meltano run` (BATCH, RECORD).

Times four whole pipelines on the `wide` reference table (loaded into PostgreSQL by
bench/postgres.py's functions, which this script imports), each as a separate process under
`/usr/bin/time -v`, alternating them each round, and prints the median wall time, rows/s,
peak RSS and the ratio to the baseline (1):

1. `dativo run tap-dativo-postgres target-dativo-parquet` (in process, the baseline);
2. `dativo run tap-dativo-postgres target-dativo-iceberg` (in process, embedded SQLite
   catalog in a fresh warehouse per run; the table's snapshots are counted after each run);
3. `meltano run tap-dativo-postgres--arrow target-dativo-parquet` (Arrow IPC BATCH files);
4. `meltano run tap-dativo-postgres target-dativo-parquet` (RECORD lines, for information).

Meltano runs a copy of this project (installed once per harness run with `meltano install`)
from the Meltano virtualenv of the end-to-end tests (.dativo/test-venvs/meltano), or one
created under bench/.venvs/meltano. See bench/README.md for what each row means.

    python bench/pipelines.py --rows 1000000 --repeat 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import venv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import postgres as pgbench  # bench/postgres.py: server, table loading, timing helpers

REPO = pgbench.REPO
#: The e2e tests' Meltano venv, reused when present; else one is created under bench/.venvs.
MELTANO_VENVS = (REPO / ".dativo" / "test-venvs" / "meltano", pgbench.VENVS / "meltano")
MELTANO_PACKAGES = ["meltano>=4,<5", "uv"]
#: What a copy of the project needs for `meltano install` (as in tests/e2e/test_meltano.py).
PROJECT_FILES = [
    "pyproject.toml",
    "README.md",
    "meltano.yml",
    "dativo_bridge",
    "taps",
    "targets",
    "demo",
    "catalogs",
]
MELTANO_PLUGINS = ["tap-dativo-postgres", "tap-dativo-postgres--arrow", "target-dativo-parquet"]
#: Default checkpoint of `dativo run` and the targets: the goal is one snapshot per checkpoint.
CHECKPOINT_ROWS = 1_000_000
ICEBERG_NAMESPACE = "singer"
#: Goals: (2) / (1) and (3) / (1), median over rounds of the per-round ratio.
GOAL_ICEBERG_RATIO = 1.2
GOAL_MELTANO_BATCH_RATIO = 1.5
#: Interval of the process-tree RSS sampler, seconds.
SAMPLE_S = 0.2
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Pipeline:
    """One pipeline to time.

    Attributes:
        key: "1" to "4".
        label: Row label in the table.
        argv: The command (without /usr/bin/time); ``{out}`` and ``{state}`` are replaced
            by the run's fresh output and state directories.
        cwd: Working directory of the command.
        output: ``parquet`` (a directory of Parquet files) or ``iceberg`` (a warehouse).
        env: Extra environment variables; values are formatted like ``argv``.
        replace_env: Start from this environment instead of ``os.environ``.
        rss_note: What /usr/bin/time's peak RSS covers for this command.
        json_rows: The command prints `dativo run --json`'s summary (its row count is checked).
    """

    key: str
    label: str
    argv: list[str]
    cwd: Path
    output: str
    env: dict[str, str] = field(default_factory=dict)
    replace_env: dict[str, str] | None = None
    rss_note: str = ""
    json_rows: bool = False


@dataclass
class PipelineRun(pgbench.Run):
    """One timed run, with what it wrote."""

    tree_rss_kb: int = 0
    rows_written: int = 0
    files: int = 0
    snapshots: int | None = None
    snapshot_records: list[int] = field(default_factory=list)


# --- set-up ------------------------------------------------------------------------------


def write_dativo_project(directory: Path, stream: str) -> Path:
    """A meltano.yml for `dativo run`: the PostgreSQL tap selecting only ``stream``, and
    both targets writing to ``$BENCH_OUT`` (set per run).

    The DSN is read from ``$DATIVO_PG_DSN`` (as in the repository's meltano.yml), so it is
    not written to disk.
    """
    data = {
        "version": 1,
        "default_environment": "bench",
        "environments": [{"name": "bench"}],
        "plugins": {
            "extractors": [
                {
                    "name": "tap-dativo-postgres",
                    "namespace": "tap_dativo_postgres",
                    "executable": "tap-dativo-postgres",
                    "config": {"dsn": "$DATIVO_PG_DSN", "filter_schemas": [pgbench.SCHEMA]},
                    "select": [f"{stream}.*"],
                }
            ],
            "loaders": [
                {
                    "name": "target-dativo-parquet",
                    "namespace": "target_dativo_parquet",
                    "executable": "target-dativo-parquet",
                    "config": {"path": "$BENCH_OUT"},
                },
                {
                    "name": "target-dativo-iceberg",
                    "namespace": "target_dativo_iceberg",
                    "executable": "target-dativo-iceberg",
                    "config": {"warehouse": "$BENCH_OUT"},
                },
            ],
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "meltano.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ensure_meltano() -> Path:
    """The meltano executable: the e2e tests' venv if present, else bench/.venvs/meltano.

    A venv is created the way tests/e2e/test_meltano.py does it (meltano 4 and uv, with
    pip). Its modules are byte-compiled once (marker file ``.bench-compiled``): the sandbox
    sets PYTHONDONTWRITEBYTECODE, so without this every `meltano` start would compile
    Meltano from source, a cost no installed Meltano has.
    """
    home = next((h for h in MELTANO_VENVS if (h / "bin" / "meltano").exists()), None)
    if home is None:
        home = MELTANO_VENVS[-1]
        print(f"creating {home} with {' '.join(MELTANO_PACKAGES)} ...", flush=True)
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(
            [
                str(home / "bin" / "python"),
                *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *MELTANO_PACKAGES,
            ],
            check=True,
            timeout=900,
        )
    compile_venv(home)
    return home / "bin" / "meltano"


def compile_venv(home: Path) -> None:
    """Byte-compile a venv's lib directory once (see ensure_meltano)."""
    marker = home / ".bench-compiled"
    if marker.exists():
        return
    print(f"byte-compiling {home} ...", flush=True)
    python = home / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", str(home / "lib")],
        check=False,  # a few test/template files in packages do not compile; that is fine
        stdout=subprocess.DEVNULL,
    )
    marker.write_text("compileall\n", encoding="utf-8")


def meltano_env(dsn: str) -> dict[str, str]:
    """The environment for `meltano`: this one without MELTANO_* and VIRTUAL_ENV (as in
    the e2e tests), with the DSN and schema filter, and anonymous usage stats off (so no
    run waits on the network)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "VIRTUAL_ENV"))}
    env["DATIVO_PG_DSN"] = dsn
    env["TAP_DATIVO_POSTGRES_FILTER_SCHEMAS"] = json.dumps([pgbench.SCHEMA])
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


def meltano_project(meltano: Path, root: Path, stream: str, env: dict[str, str]) -> Path:
    """A copy of this project under ``root`` selecting only ``stream``, with the plugins
    the benchmark needs installed by `meltano install` (uv; byte-compiled)."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, root / name)
    data = yaml.safe_load((root / "meltano.yml").read_text(encoding="utf-8"))
    for plugin in data["plugins"]["extractors"]:
        if plugin["name"] in MELTANO_PLUGINS:
            plugin["select"] = [f"{stream}.*"]
    (root / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    print(f"meltano install {' '.join(MELTANO_PLUGINS)} in {root} ...", flush=True)
    start = time.perf_counter()
    done = subprocess.run(
        [str(meltano), "install", *MELTANO_PLUGINS],
        cwd=root,
        env={**env, "UV_COMPILE_BYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"meltano install failed:\n{done.stderr[-4000:]}")
    print(f"  installed in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def build_pipelines(
    dsn: str, stream: str, work: Path, keys: Sequence[str]
) -> tuple[list[Pipeline], dict[str, Any]]:
    """The pipelines in ``keys`` (with projects written or installed under ``work``), and
    the versions of Meltano and of the packages in its plugin venv when it is used."""
    dativo = pgbench.find_executable("dativo")
    project = write_dativo_project(work / "dativo-project", stream)
    dativo_env = {"DATIVO_PG_DSN": dsn, "BENCH_OUT": "{out}"}
    common = ["--project", str(project), "--state-dir", "{state}", "--full-refresh", "--json"]
    pipelines: list[Pipeline] = []
    for key, target, output in (
        ("1", "target-dativo-parquet", "parquet"),
        ("2", "target-dativo-iceberg", "iceberg"),
    ):
        if key in keys:
            pipelines.append(
                Pipeline(
                    key,
                    f"({key}) dativo run tap-dativo-postgres {target}",
                    [dativo, "run", "tap-dativo-postgres", target, *common],
                    project.parent,
                    output,
                    env=dativo_env,
                    rss_note="the one process",
                    json_rows=True,
                )
            )
    versions: dict[str, Any] = {}
    if "3" in keys or "4" in keys:
        meltano = ensure_meltano()
        env = meltano_env(dsn)
        root = meltano_project(meltano, work / "meltano-project", stream, env)
        versions["meltano"] = subprocess.run(
            [str(meltano), "--version"], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        plugin_python = root / ".meltano" / "extractors" / "tap-dativo-postgres" / "venv"
        versions["plugin_venv"] = pgbench.venv_versions(
            plugin_python / "bin" / "python", ["pyarrow", "singer-sdk", "psycopg"]
        )
        rss_note = (
            "largest single process of meltano, discovery, tap and target (wait4's "
            "ru_maxrss), not their sum"
        )
        for key, tap, mode in (
            ("3", "tap-dativo-postgres--arrow", "Arrow BATCH"),
            ("4", "tap-dativo-postgres", "RECORD lines, info"),
        ):
            if key in keys:
                pipelines.append(
                    Pipeline(
                        key,
                        f"({key}) meltano run {tap} target-dativo-parquet ({mode})",
                        [
                            str(meltano),
                            *("--environment", "dev", "run", "--full-refresh"),
                            *(tap, "target-dativo-parquet"),
                        ],
                        root,
                        "parquet",
                        env={"TARGET_DATIVO_PARQUET_PATH": "{out}"},
                        replace_env=env,
                        rss_note=rss_note,
                    )
                )
    return pipelines, versions


# --- measuring ---------------------------------------------------------------------------


def tree_rss_kb(root: int) -> int:
    """Sum of the RSS of every descendant of ``root`` (not ``root`` itself), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * PAGE_KB
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def sample_tree(proc: subprocess.Popen[bytes], peak: list[int]) -> None:
    """Keep ``peak[0]`` at the largest process-tree RSS under ``proc`` until it exits."""
    while proc.poll() is None:
        peak[0] = max(peak[0], tree_rss_kb(proc.pid))
        time.sleep(SAMPLE_S)


def parquet_rows(folder: Path) -> tuple[int, int]:
    """(rows, files) of the visible Parquet files under ``folder``, from their footers."""
    rows = files = 0
    for path in folder.rglob("*.parquet"):
        if any(part.startswith((".", "_")) for part in path.relative_to(folder).parts):
            continue
        rows += pq.ParquetFile(path).metadata.num_rows
        files += 1
    return rows, files


def iceberg_facts(warehouse: Path) -> tuple[int, int, int, list[int]]:
    """(rows, data files, snapshots, records added per snapshot) over the tables of the
    embedded catalog in ``warehouse`` (opened as the target opens it)."""
    from target_dativo_iceberg.writer import open_catalog

    catalog = open_catalog({"warehouse": str(warehouse)})
    rows = files = snapshots = 0
    added: list[int] = []
    for identifier in catalog.list_tables(ICEBERG_NAMESPACE):
        table = catalog.load_table(identifier)
        for snapshot in table.snapshots():
            snapshots += 1
            props = snapshot.summary.additional_properties if snapshot.summary else {}
            added.append(int(props.get("added-records", 0)))
        current = table.current_snapshot()
        if current is not None and current.summary is not None:
            props = current.summary.additional_properties
            rows += int(props.get("total-records", 0))
            files += int(props.get("total-data-files", 0))
    return rows, files, snapshots, added


def fill_in(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``{name}`` of ``values`` replaced (other braces left alone)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def time_once(
    p: Pipeline, rnd: int, rows: int, work: Path, keep_logs: Path | None = None
) -> PipelineRun:
    """Run ``p`` once under /usr/bin/time -v with fresh output and state directories,
    sampling its process tree's RSS; check the rows it wrote, then delete its output.
    With ``keep_logs``, the run's stdout, stderr and /usr/bin/time report are copied there."""
    out, state = work / f"out-{p.key}-{rnd}", work / f"state-{p.key}-{rnd}"
    fill = {"out": str(out), "state": str(state)}
    timing, log = work / "time.txt", work / f"log-{p.key}.txt"
    argv = [fill_in(arg, fill) for arg in p.argv]
    env = {**(p.replace_env or os.environ), **{k: fill_in(v, fill) for k, v in p.env.items()}}
    peak = [0]
    with open(log, "wb") as stderr, open(work / "stdout.txt", "wb") as stdout:
        proc = subprocess.Popen(
            [pgbench.TIME_BIN, "-v", "-o", str(timing), *argv],
            cwd=p.cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        sampler = threading.Thread(target=sample_tree, args=(proc, peak), daemon=True)
        sampler.start()
        code = proc.wait()
        sampler.join()
    if keep_logs is not None:
        keep_logs.mkdir(parents=True, exist_ok=True)
        for name, source in (("stderr", log), ("stdout", work / "stdout.txt"), ("time", timing)):
            shutil.copy2(source, keep_logs / f"{p.key}-round{rnd + 1}.{name}.txt")
    if code:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"{p.label} failed (exit {code}); log {log}:\n{tail}")
    report = timing.read_text(encoding="utf-8")
    wall, rss = pgbench._WALL.search(report), pgbench._RSS.search(report)
    if wall is None or rss is None:
        raise SystemExit(f"could not parse /usr/bin/time -v output:\n{report}")
    reported: int | None = None
    if p.json_rows:
        reported = int(json.loads((work / "stdout.txt").read_text(encoding="utf-8"))["rows"])
    snapshots: int | None = None
    added: list[int] = []
    if p.output == "iceberg":
        written, files, snapshots, added = iceberg_facts(out)
    else:
        written, files = parquet_rows(out)
    for got, what in ((written, "wrote"), (reported, "reported")):
        if got is not None and got != rows:
            raise SystemExit(f"{p.label} {what} {got:,} rows, expected {rows:,}; log {log}")
    batches = p.cwd / "output" / "batches"
    if batches.exists() and any(batches.iterdir()):
        print(f"  warning: {p.label} left batch files in {batches}", flush=True)
    output_mb = pgbench.remove_outputs([out, state])
    return PipelineRun(
        p.key,
        rnd,
        pgbench.parse_wall(wall.group(1)),
        int(rss.group(1)),
        reported,
        output_mb,
        tree_rss_kb=peak[0],
        rows_written=written,
        files=files,
        snapshots=snapshots,
        snapshot_records=added,
    )


def run_rounds(
    pipelines: Sequence[Pipeline],
    repeat: int,
    rows: int,
    work: Path,
    keep_logs: Path | None = None,
) -> list[PipelineRun]:
    """Every pipeline ``repeat`` times, the order rotated by one each round."""
    runs = []
    for rnd in range(repeat):
        shift = rnd % len(pipelines)
        for p in [*pipelines[shift:], *pipelines[:shift]]:
            run = time_once(p, rnd, rows, work, keep_logs)
            runs.append(run)
            snaps = "" if run.snapshots is None else f", {run.snapshots} snapshot(s)"
            print(
                f"  round {rnd + 1}/{repeat}: {p.label}: {run.wall_s:.2f} s, peak RSS "
                f"{run.max_rss_kb / 1024:.0f} MB (tree {run.tree_rss_kb / 1024:.0f} MB), "
                f"{run.files} file(s), {run.output_mb:.0f} MB{snaps}",
                flush=True,
            )
    return runs


# --- reporting ---------------------------------------------------------------------------


def summarise(pipelines: Sequence[Pipeline], runs: Sequence[PipelineRun], rows: int) -> list[dict]:
    """One row per pipeline: median wall, rows/s, peak RSS, ratio to (1), outputs."""
    out = []
    for p in pipelines:
        mine = [r for r in runs if r.key == p.key]
        median = statistics.median(r.wall_s for r in mine)
        out.append(
            {
                "key": p.key,
                "pipeline": p.label,
                "median_s": median,
                "rows_per_s": rows / median,
                "peak_rss_mb": max(r.max_rss_kb for r in mine) / 1024,
                "rss_covers": p.rss_note,
                "tree_rss_mb": max(r.tree_rss_kb for r in mine) / 1024,
                "time_vs_1": pgbench._ratio(runs, p.key, "1", lambda m, t: m / t),
                "output_mb": statistics.median(r.output_mb or 0.0 for r in mine),
                "files": [r.files for r in mine],
                "snapshots": [r.snapshots for r in mine] if p.output == "iceberg" else None,
                "runs_s": [r.wall_s for r in mine],
                "runs_rss_mb": [r.max_rss_kb / 1024 for r in mine],
            }
        )
    return out


def goals(summary: Sequence[dict], rows: int) -> list[tuple[str, bool]]:
    """The goals whose pipelines ran, each with whether it is met."""
    by = {s["key"]: s for s in summary}
    out = []
    if "1" in by and "2" in by:
        ratio = by["2"]["time_vs_1"]
        out.append(
            (
                f"(2) Iceberg within {GOAL_ICEBERG_RATIO:g}x of (1) Parquet "
                f"(median ratio {ratio:.2f}x)",
                ratio <= GOAL_ICEBERG_RATIO,
            )
        )
    if "2" in by:
        checkpoints = math.ceil(rows / CHECKPOINT_ROWS)
        snaps = by["2"]["snapshots"]
        out.append(
            (
                f"(2) at most one snapshot per checkpoint ({checkpoints} checkpoint(s) of "
                f"{CHECKPOINT_ROWS:,} rows for {rows:,} rows; snapshots per run: "
                f"{', '.join(map(str, snaps))})",
                all(s is not None and s <= checkpoints for s in snaps),
            )
        )
    if "1" in by and "3" in by:
        ratio = by["3"]["time_vs_1"]
        out.append(
            (
                f"(3) meltano run, Arrow BATCH, within {GOAL_MELTANO_BATCH_RATIO:g}x of (1) "
                f"(median ratio {ratio:.2f}x)",
                ratio <= GOAL_MELTANO_BATCH_RATIO,
            )
        )
    return out


def markdown(summary: Sequence[dict], met: Sequence[tuple[str, bool]]) -> str:
    """The results table and the goals as markdown."""
    lines = [
        "| pipeline | median wall s | rows/s | peak RSS MB (/usr/bin/time) "
        "| tree RSS MB (sampled sum) | time / (1) | output |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        ratio = "-" if s["time_vs_1"] is None else f"{s['time_vs_1']:.2f}x"
        files = "/".join(str(f) for f in sorted(set(s["files"])))
        output = f"{s['output_mb']:.0f} MB, {files} file(s)"
        if s["snapshots"] is not None:
            output += f", {'/'.join(str(n) for n in s['snapshots'])} snapshot(s)"
        label = s["pipeline"].replace("|", r"\|")
        lines.append(
            f"| {label} | {s['median_s']:.2f} | {s['rows_per_s']:,.0f} | "
            f"{s['peak_rss_mb']:.0f} | {s['tree_rss_mb']:.0f} | {ratio} | {output} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- {'PASS' if ok else '**FAIL**'}: {text}" for text, ok in met]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, load the table, time every pipeline and print the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of `wide` (default 100k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline (default 3)")
    parser.add_argument(
        "--only",
        default="1,2,3,4",
        help="comma-separated pipelines to run (default 1,2,3,4; ratios need 1)",
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
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy every run's output and logs to DIR"
    )
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    if not keys or any(k not in "1234" or len(k) != 1 for k in keys):
        parser.error("--only takes pipeline numbers 1 to 4")

    started = dt.datetime.now(dt.UTC)
    sql_text = args.sql.read_text(encoding="utf-8")
    with pgbench.server(args.dsn, args.pgdata) as dsn, tempfile.TemporaryDirectory() as tmp:
        table = pgbench.load_table(dsn, sql_text, args.rows)
        stream = table.replace(".", "-")
        facts = pgbench.table_facts(dsn, table)
        print(
            f"{table}: {args.rows:,} rows, {facts['table_bytes'] / 1e6:,.0f} MB "
            f"(PostgreSQL {facts['server_version']}); every pipeline selects only {stream}",
            flush=True,
        )
        pipelines, versions = build_pipelines(dsn, stream, Path(tmp), keys)
        runs = run_rounds(pipelines, args.repeat, args.rows, Path(tmp), args.keep_logs)
    summary = summarise(pipelines, runs, args.rows)
    met = goals(summary, args.rows)
    print(f"\n{args.rows:,} rows x 50 columns; median of {args.repeat} interleaved runs\n")
    print(markdown(summary, met))
    print("\nPeak RSS (/usr/bin/time) covers:")
    for p in pipelines:
        print(f"- ({p.key}) {p.rss_note}")
    if args.json:
        env = pgbench.machine_facts()
        env["ours"]["pyiceberg"] = metadata.version("pyiceberg")
        env.update(versions)
        result = {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "rows": args.rows,
            "repeat": args.repeat,
            "table": table,
            "server": facts,
            "environment": env,
            "pipelines": [
                {"key": p.key, "label": p.label, "argv": p.argv, "rss_covers": p.rss_note}
                for p in pipelines
            ],
            "summary": summary,
            "goals": [{"goal": text, "met": ok} for text, ok in met],
            "runs": [asdict(r) for r in runs],
        }
        pgbench.write_json(Path(args.json), result)


if __name__ == "__main__":
    main()
