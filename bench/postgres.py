"""PostgreSQL -> Parquet benchmark: Dativo's PostgreSQL tap against ADBC, meltanolabs and psql.

Loads the `wide` reference table (/work/shared/bench/wide.sql, scaled to --rows) into a
PostgreSQL server (one started from the `pgserver` wheel, or --dsn), then runs every contender
as a separate process under `/usr/bin/time -v`, alternating them each round, and prints the
median wall time, rows/s, peak RSS and ratios. Peers run in their own virtualenvs under
bench/.venvs/ (created on first use). See bench/README.md for what each row means.

    python bench/postgres.py --rows 1000000 --repeat 3 [--dsn URI] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / "bench" / ".venvs"
DEFAULT_SQL = REPO.parent / "shared" / "bench" / "wide.sql"
DEFAULT_PGDATA = Path(tempfile.gettempdir()) / "dativo-bench-pg"
SCHEMA = "bench"
REFERENCE_ROWS = 1_000_000
SERIES = "generate_series(1,1000000)"
TIME_BIN = "/usr/bin/time"
#: PostgresReader's default pages_per_partition (parallel reads need twice as many pages).
PAGES_PER_PARTITION = 20_000
#: meltanolabs-tap-postgres is slow (5-13k rows/s): above this it reads this many rows, scaled.
MELTANO_MAX_ROWS = 100_000
#: Goals of the PostgreSQL tap issue.
GOAL_ADBC_RATIO = 2.0
GOAL_MELTANO_SPEEDUP = 5.0
GOAL_RSS_MB = 400.0
#: Each peer's virtualenv under bench/.venvs/: the pinned packages installed into it (the
#: versions of the reference run; bump them deliberately) and those whose versions we report.
PEERS: dict[str, tuple[list[str], list[str]]] = {
    "adbc": (
        ["adbc-driver-postgresql==1.13.0", "pyarrow==26.0.1"],
        ["adbc-driver-postgresql", "adbc-driver-manager", "pyarrow"],
    ),
    "meltanolabs": (
        ["meltanolabs-tap-postgres==0.10.0", "singer-sdk==0.54.9"],
        ["meltanolabs-tap-postgres", "singer-sdk", "psycopg2-binary", "SQLAlchemy"],
    ),
}

#: The ADBC peer (run in its venv): stream `fetch_record_batch()` into a zstd Parquet file.
ADBC_SCRIPT = """\
import sys
import adbc_driver_postgresql.dbapi as dbapi
import pyarrow.parquet as pq

uri, query, out = sys.argv[1:4]
rows = 0
with dbapi.connect(uri) as conn, conn.cursor() as cur:
    cur.execute(query)
    reader = cur.fetch_record_batch()
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
print(rows)
"""

#: Dativo's reader alone: every batch of the table into Arrow, nothing written.
READ_SCRIPT = """\
import json
import sys

from tap_dativo_postgres.reader import PostgresReader

with open(sys.argv[1], encoding="utf-8") as fh:
    cfg = json.load(fh)
reader = PostgresReader()
reader.open(cfg["source"])
with reader:
    info = {s.name: s for s in reader.discover()}[cfg["stream"]]
    print(sum(batch.num_rows for batch in reader.read(info, None)))
"""

#: Dativo in process: PostgresReader -> ParquetWriter through dativo_bridge.run.
OURS_SCRIPT = """\
import json
import sys

from dativo_bridge import run
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_parquet.writer import ParquetWriter

with open(sys.argv[1], encoding="utf-8") as fh:
    cfg = json.load(fh)
result = run(
    PostgresReader,
    ParquetWriter,
    source_config=cfg["source"],
    destination_config=cfg["destination"],
    select=cfg["select"],
    full_refresh=True,
)
print(result.rows)
"""

_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")
_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_METRIC = re.compile(r'"metric":\s*"record_count",\s*"value":\s*(\d+)')


@dataclass
class Contender:
    """One thing to time: a command line (or a bash pipeline) and what it reads.

    Attributes:
        key: Short id (a, b, c, ...), used in the goals.
        label: Row label in the table.
        argv: The command (without /usr/bin/time), or a bash script if ``shell``.
        rows: Rows it reads (fewer than --rows for a peer measured on a subset).
        count: How its row count is checked: ``stdout`` (last line), ``metrics`` (singer-sdk
            record_count metrics on stderr) or ``none``.
        shell: Run ``argv[0]`` with ``bash -o pipefail -c``.
        outputs: Files or folders removed after every run.
        env: Extra environment variables.
        note: Printed under the table.
    """

    key: str
    label: str
    argv: list[str]
    rows: int
    count: str = "none"
    shell: bool = False
    outputs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Run:
    """One timed process."""

    key: str
    round: int
    wall_s: float
    max_rss_kb: int
    rows_reported: int | None
    output_mb: float | None = None


def table_name(rows: int) -> str:
    """`wide` for the reference size, `wide_<rows>` otherwise."""
    return "wide" if rows == REFERENCE_ROWS else f"wide_{rows}"


@contextmanager
def server(dsn: str | None, pgdata: Path) -> Iterator[str]:
    """The DSN to use: ``dsn`` if given, else a pgserver instance on ``pgdata`` (data kept).

    A started server is stopped on exit; its data stays in ``pgdata`` for the next run.
    """
    if dsn:
        yield dsn
        return
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver  # the dev extra; only needed without --dsn

        srv = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield str(srv.get_uri())
    finally:
        srv.cleanup()


def load_table(dsn: str, sql_text: str, rows: int) -> str:
    """Create ``bench.<table_name(rows)>`` from wide.sql unless it already has ``rows`` rows.

    Returns:
        The schema-qualified table name.
    """
    name = table_name(rows)
    qualified = f"{SCHEMA}.{name}"
    if SERIES not in sql_text:
        raise SystemExit(f"wide.sql does not contain {SERIES!r}; cannot scale it")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        exists = conn.execute("SELECT to_regclass(%s)", [qualified]).fetchone()
        if exists and exists[0] is not None:
            found = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()
            if found and found[0] == rows:
                print(f"{qualified}: {rows:,} rows already loaded")
                return qualified
        print(f"loading {qualified} ({rows:,} rows) ...", flush=True)
        start = time.perf_counter()
        scaled = re.sub(r"\bwide\b", name, sql_text.replace(SERIES, f"generate_series(1,{rows})"))
        conn.execute(f"SET search_path = {SCHEMA}")
        conn.execute(scaled)  # a trusted script (wide.sql), several statements
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {qualified}")  # hint bits set before timing
        print(f"  loaded in {time.perf_counter() - start:.1f} s")
    return qualified


def table_facts(dsn: str, qualified: str) -> dict[str, Any]:
    """Server version and the table's size (used to tell whether parallel reads kick in)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), pg_relation_size(%s::regclass),"
            " pg_relation_size(%s::regclass) / current_setting('block_size')::int",
            [qualified, qualified],
        ).fetchone()
    assert row is not None
    return {"server_version": row[0], "table_bytes": int(row[1]), "table_pages": int(row[2])}


def ensure_venv(name: str, packages: Sequence[str] | None = None) -> Path:
    """The python of bench/.venvs/<name>, created (or refilled when the pins change) on use.

    ``packages`` are the pinned requirements to install; by default those of ``PEERS[name]``.
    """
    packages = list(PEERS[name][0] if packages is None else packages)
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    spec = " ".join(packages) + "\n"
    if not marker.exists() or marker.read_text(encoding="utf-8") != spec:
        print(f"installing {' '.join(packages)} into {venv} ...", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        marker.write_text(spec, encoding="utf-8")
    return python


def venv_versions(python: Path, names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` in the environment of ``python``."""
    code = "import importlib.metadata as m, sys; print(*(m.version(n) for n in sys.argv[1:]))"
    out = subprocess.run(
        [str(python), "-c", code, *names], check=True, capture_output=True, text=True
    )
    return dict(zip(names, out.stdout.split(), strict=True))


def find_executable(name: str, candidates: Sequence[Path] = ()) -> str:
    """The first existing path of ``candidates``, else ``name`` next to this Python or on PATH."""
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found")
    return found


def psql_path() -> str:
    """/usr/bin/psql, else the psql shipped in the pgserver wheel."""
    candidates = [Path("/usr/bin/psql")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql")
    except ImportError:
        pass
    return find_executable("psql", candidates)


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as JSON to ``path`` and return the path."""
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
    return path


def select_only(catalog: dict[str, Any], stream_id: str) -> dict[str, Any]:
    """A Singer catalog with only ``stream_id`` selected (all its properties too)."""
    found = False
    for entry in catalog["streams"]:
        chosen = entry["tap_stream_id"] == stream_id
        found |= chosen
        for item in entry.get("metadata", []):
            if not item.get("breadcrumb"):
                item["metadata"]["selected"] = chosen
            elif chosen:
                item["metadata"]["selected"] = True
    if not found:
        raise SystemExit(f"stream {stream_id} not in the discovered catalog")
    return catalog


def discover(
    tap: Sequence[str], config: Path, stream_id: str, out: Path, env: dict[str, str] | None = None
) -> Path:
    """Run ``tap --config config --discover`` and write a catalog selecting ``stream_id``."""
    done = subprocess.run(
        [*tap, "--config", str(config), "--discover"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode:
        raise SystemExit(f"{tap[0]} --discover failed:\n{done.stderr[-3000:]}")
    return write_json(out, select_only(json.loads(done.stdout), stream_id))


def meltano_config(dsn: str) -> tuple[dict[str, Any], dict[str, str]]:
    """meltanolabs-tap-postgres settings (host/port/user/password/database) from a DSN, and
    the environment variables to run it with.

    The tap renders ``host`` into a SQLAlchemy URL without escaping it, so a unix-socket
    directory there is lost; for a socket, ``host`` is left empty and libpq finds the
    directory in ``PGHOST``.
    """
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "localhost")
    socket = host.startswith("/")
    config = {
        "host": "" if socket else host,
        "port": int(info.get("port") or 5432),
        "user": info.get("user") or os.environ.get("USER", "postgres"),
        "password": info.get("password") or "",
        "database": info.get("dbname") or info.get("user") or "postgres",
        "filter_schemas": [SCHEMA],
    }
    return config, ({"PGHOST": host} if socket else {})


def build_contenders(
    dsn: str, table: str, meltano_table: str, rows: int, work: Path
) -> list[Contender]:
    """The contenders (a)-(f), with their configs and catalogs written into ``work``."""
    stream = table.replace(".", "-")
    query = f"select * from {table}"
    psql = psql_path()
    adbc_python = ensure_venv("adbc")
    meltano_python = ensure_venv("meltanolabs")
    tap = find_executable("tap-dativo-postgres")
    target = find_executable("target-dativo-parquet")
    meltano_tap = str(meltano_python.parent / "tap-postgres")

    adbc_script = work / "adbc_to_parquet.py"
    adbc_script.write_text(ADBC_SCRIPT, encoding="utf-8")
    ours_script = work / "dativo_to_parquet.py"
    ours_script.write_text(OURS_SCRIPT, encoding="utf-8")

    source = {"dsn": dsn, "filter_schemas": [SCHEMA], "accelerator": "python"}
    ours: list[Contender] = []
    if importlib.util.find_spec("dativo_accel") is not None:
        ours.extend(rust_contenders(dsn, stream, rows, work))
    for parallelism in (1, 2):
        key = "d" if parallelism == 1 else "d2"
        out = work / f"out-ours-p{parallelism}"
        cfg = write_json(
            work / f"ours-p{parallelism}.json",
            {
                "source": {**source, "max_parallelism": parallelism},
                "destination": {"path": str(out)},
                "select": [f"{stream}.*"],
            },
        )
        ours.append(
            Contender(
                key,
                f"({key}) Dativo in process -> Parquet, max_parallelism={parallelism}",
                [sys.executable, str(ours_script), str(cfg)],
                rows,
                count="stdout",
                outputs=[out],
            )
        )

    tap_cfg = write_json(work / "tap.json", source)
    tap_catalog = discover([tap], tap_cfg, stream, work / "tap-catalog.json")
    tap_argv = [tap, "--config", str(tap_cfg), "--catalog", str(tap_catalog)]
    pipe_out = work / "out-pipe"
    target_cfg = write_json(work / "target.json", {"path": str(pipe_out)})
    target_cmd = shlex.join([target, "--config", str(target_cfg)])
    pipeline = f"{shlex.join(tap_argv)} | {target_cmd} > /dev/null"

    melt_settings, melt_env = meltano_config(dsn)
    melt_cfg = write_json(work / "meltano.json", melt_settings)
    melt_stream = meltano_table.replace(".", "-")
    melt_catalog = discover(
        [meltano_tap], melt_cfg, melt_stream, work / "meltano-catalog.json", melt_env
    )
    melt_rows = min(rows, MELTANO_MAX_ROWS)
    scaled = melt_rows < rows
    melt_label = "(c) meltanolabs-tap-postgres -> /dev/null"
    if scaled:
        melt_label += f" (measured on {melt_rows // 1000}k, scaled)"
    adbc_out = work / "adbc.parquet"
    return [
        Contender(
            "a",
            "(a) floor: psql binary COPY -> /dev/null",
            [psql, dsn, "-c", f"copy ({query}) to stdout (format binary)"],
            rows,
        ),
        Contender(
            "b",
            "(b) ADBC -> Parquet (zstd)",
            [str(adbc_python), str(adbc_script), dsn, query, str(adbc_out)],
            rows,
            count="stdout",
            outputs=[adbc_out],
        ),
        Contender(
            "c",
            melt_label,
            [meltano_tap, "--config", str(melt_cfg), "--catalog", str(melt_catalog)],
            melt_rows,
            count="metrics",
            env=melt_env,
            note=(
                f"(c) reads {meltano_table} (the first {melt_rows:,} rows); its time is "
                f"scaled by {rows / melt_rows:g} to {rows:,} rows."
                if scaled
                else ""
            ),
        ),
        *ours,
        Contender("e", "(e) tap-dativo-postgres -> /dev/null", tap_argv, rows, count="metrics"),
        Contender(
            "f",
            "(f) tap-dativo-postgres | target-dativo-parquet (info)",
            [pipeline],
            rows,
            count="metrics",
            shell=True,
            outputs=[pipe_out],
        ),
    ]


def rust_contenders(dsn: str, stream: str, rows: int, work: Path) -> list[Contender]:
    """(r0)/(r0p2) the Rust reader into Arrow only, on 1 and 2 connections; (r1)/(r2) in
    process -> Parquet with it."""
    read_script = work / "dativo_read_only.py"
    read_script.write_text(READ_SCRIPT, encoding="utf-8")
    ours_script = work / "dativo_to_parquet.py"
    ours_script.write_text(OURS_SCRIPT, encoding="utf-8")
    source = {"dsn": dsn, "filter_schemas": [SCHEMA], "accelerator": "rust"}
    read_cfg = write_json(
        work / "rust-read.json", {"source": {**source, "max_parallelism": 1}, "stream": stream}
    )
    read2_cfg = write_json(
        work / "rust-read-p2.json", {"source": {**source, "max_parallelism": 2}, "stream": stream}
    )
    found = [
        Contender(
            "r0",
            "(r0) Dativo Rust reader -> Arrow, no write",
            [sys.executable, str(read_script), str(read_cfg)],
            rows,
            count="stdout",
        ),
        Contender(
            "r0p2",
            "(r0p2) Dativo Rust reader -> Arrow, no write, max_parallelism=2",
            [sys.executable, str(read_script), str(read2_cfg)],
            rows,
            count="stdout",
        ),
    ]
    for parallelism in (1, 2):
        key = f"r{parallelism}"
        out = work / f"out-rust-p{parallelism}"
        cfg = write_json(
            work / f"rust-p{parallelism}.json",
            {
                "source": {**source, "max_parallelism": parallelism},
                "destination": {"path": str(out)},
                "select": [f"{stream}.*"],
            },
        )
        found.append(
            Contender(
                key,
                f"({key}) Dativo in process -> Parquet, Rust reader, max_parallelism={parallelism}",
                [sys.executable, str(ours_script), str(cfg)],
                rows,
                count="stdout",
                outputs=[out],
            )
        )
    return found


def parse_wall(text: str) -> float:
    """Seconds from /usr/bin/time's ``h:mm:ss`` or ``m:ss.ss`` wall clock field."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def reported_rows(contender: Contender, stdout: str, stderr: str) -> int | None:
    """The row count the contender reports, if it reports one."""
    if contender.count == "stdout":
        lines = stdout.strip().splitlines()
        return int(lines[-1]) if lines else None
    if contender.count == "metrics":
        counts = [int(v) for v in _METRIC.findall(stderr)]
        return sum(counts) if counts else None
    return None


def remove_outputs(paths: Sequence[Path]) -> float:
    """Delete files and folders, returning their total size in MB."""
    size = 0
    for path in paths:
        if path.is_dir():
            size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.exists():
            size += path.stat().st_size
            path.unlink()
    return size / 1e6


def time_once(contender: Contender, rnd: int, work: Path) -> Run:
    """Run ``contender`` once under /usr/bin/time -v; fail loudly on errors or wrong counts."""
    timing = work / "time.txt"
    command = ["bash", "-o", "pipefail", "-c", contender.argv[0]] if contender.shell else []
    command = [TIME_BIN, "-v", "-o", str(timing), *(command or contender.argv)]
    stdout = subprocess.DEVNULL if contender.count != "stdout" else subprocess.PIPE
    env = {**os.environ, **contender.env}
    done = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
    report = timing.read_text(encoding="utf-8")
    written = remove_outputs(contender.outputs) if contender.outputs else None
    if done.returncode:
        raise SystemExit(
            f"{contender.label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    wall, rss = _WALL.search(report), _RSS.search(report)
    if wall is None or rss is None:
        raise SystemExit(f"could not parse /usr/bin/time -v output:\n{report}")
    got = reported_rows(contender, done.stdout or "", done.stderr)
    if got is not None and got != contender.rows:
        raise SystemExit(f"{contender.label}: read {got:,} rows, expected {contender.rows:,}")
    if contender.count != "none" and got is None:
        print(f"  warning: {contender.label} reported no row count", flush=True)
    wall_s = parse_wall(wall.group(1))
    return Run(contender.key, rnd, wall_s, int(rss.group(1)), got, written)


def run_rounds(contenders: Sequence[Contender], repeat: int, work: Path) -> list[Run]:
    """Every contender ``repeat`` times, the order rotated by one each round."""
    runs = []
    for rnd in range(repeat):
        shift = rnd % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            run = time_once(contender, rnd, work)
            runs.append(run)
            wrote = "" if run.output_mb is None else f", wrote {run.output_mb:.0f} MB"
            print(
                f"  round {rnd + 1}/{repeat}: {contender.label}: {run.wall_s:.2f} s, "
                f"peak RSS {run.max_rss_kb / 1024:.0f} MB{wrote}",
                flush=True,
            )
    return runs


def _ratio(
    runs: Sequence[Run], key: str, other: str, fn: Callable[[float, float], float]
) -> float | None:
    """Median over the rounds of fn(time of key, time of other) in the same round."""
    mine = {r.round: r.wall_s for r in runs if r.key == key}
    theirs = {r.round: r.wall_s for r in runs if r.key == other}
    pairs = [fn(mine[n], theirs[n]) for n in mine if n in theirs]
    return statistics.median(pairs) if pairs else None


def summarise(contenders: Sequence[Contender], runs: Sequence[Run], rows: int) -> list[dict]:
    """One row per contender: median wall (scaled to ``rows``), rows/s, peak RSS, ratios."""
    scale = {c.key: rows / c.rows for c in contenders}
    scaled = [Run(r.key, r.round, r.wall_s * scale[r.key], r.max_rss_kb, None) for r in runs]
    out = []
    for c in contenders:
        walls = [r.wall_s for r in scaled if r.key == c.key]
        median = statistics.median(walls)
        out.append(
            {
                "key": c.key,
                "contender": c.label,
                "rows_read": c.rows,
                "median_s": median,
                "rows_per_s": rows / median,
                "peak_rss_mb": max(r.max_rss_kb for r in runs if r.key == c.key) / 1024,
                "time_vs_adbc": _ratio(scaled, c.key, "b", lambda m, t: m / t),
                "speedup_vs_meltanolabs": (
                    _ratio(scaled, c.key, "c", lambda m, t: t / m)
                    if c.key in ("d", "d2", "e", "f")
                    else None
                ),
                "output_mb": next((r.output_mb for r in runs if r.key == c.key), None),
                "runs_s": [r.wall_s for r in runs if r.key == c.key],
                "runs_rss_mb": [r.max_rss_kb / 1024 for r in runs if r.key == c.key],
            }
        )
    return out


def goals(summary: Sequence[dict]) -> list[tuple[str, bool]]:
    """The issue's goals, each with whether it is met."""
    by = {s["key"]: s for s in summary}
    out = []
    for key in ("d", "d2"):
        s = by[key]
        out.append(
            (
                f"{s['contender']}: within {GOAL_ADBC_RATIO:g}x of ADBC -> Parquet "
                f"(median ratio {s['time_vs_adbc']:.2f}x)",
                s["time_vs_adbc"] <= GOAL_ADBC_RATIO,
            )
        )
    e = by["e"]
    out.append(
        (
            f"{e['contender']}: at least {GOAL_MELTANO_SPEEDUP:g}x faster than meltanolabs "
            f"(median {e['speedup_vs_meltanolabs']:.1f}x)",
            e["speedup_vs_meltanolabs"] >= GOAL_MELTANO_SPEEDUP,
        )
    )
    for key in ("d", "d2"):
        s = by[key]
        out.append(
            (
                f"{s['contender']}: peak RSS under {GOAL_RSS_MB:g} MB "
                f"(max over runs {s['peak_rss_mb']:.0f} MB)",
                s["peak_rss_mb"] < GOAL_RSS_MB,
            )
        )
    if "r1" in by:  # issue 4: the Rust reader
        for key, limit in (("r1", 1.0), ("r2", 0.8)):
            s = by[key]
            out.append(
                (
                    f"{s['contender']}: at most {limit:g}x ADBC -> Parquet "
                    f"(median ratio {s['time_vs_adbc']:.2f}x)",
                    s["time_vs_adbc"] <= limit,
                )
            )
        for key in ("r1", "r2"):
            s = by[key]
            out.append(
                (
                    f"{s['contender']}: peak RSS under 300 MB "
                    f"(max over runs {s['peak_rss_mb']:.0f} MB)",
                    s["peak_rss_mb"] < 300,
                )
            )
        floor = by["a"]
        for key in ("r0", "r0p2"):
            r0 = by[key]
            ratio = r0["median_s"] / floor["median_s"]
            out.append(
                (
                    f"{r0['contender']}: within 1.3x of the psql binary COPY floor "
                    f"({ratio:.2f}x of medians)",
                    ratio <= 1.3,
                )
            )
    return out


def markdown(summary: Sequence[dict], met: Sequence[tuple[str, bool]]) -> str:
    """The results table and the goals as markdown."""
    lines = [
        "| contender | median wall s | rows/s | peak RSS MB | time / ADBC->Parquet "
        "| speed-up vs meltanolabs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        ratio = "-" if s["time_vs_adbc"] is None else f"{s['time_vs_adbc']:.2f}x"
        speedup = s["speedup_vs_meltanolabs"]
        label = s["contender"].replace("|", r"\|")
        lines.append(
            f"| {label} | {s['median_s']:.2f} | {s['rows_per_s']:,.0f} | "
            f"{s['peak_rss_mb']:.0f} | {ratio} | {'-' if speedup is None else f'{speedup:.1f}x'} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in met]
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    """CPU, memory and software versions of this machine."""
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as fh:
        mem_kb = int(fh.readline().split()[1])
    versions = {n: metadata.version(n) for n in ("dativo", "pyarrow", "psycopg", "singer-sdk")}
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ours": versions,
    }


def main() -> None:
    """Parse arguments, load the table, time every contender and print the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of `wide` (default 100k)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("DATIVO_TEST_PG_DSN"),
        help="use this server (default: $DATIVO_TEST_PG_DSN, else start one with pgserver)",
    )
    parser.add_argument(
        "--pgdata",
        type=Path,
        default=DEFAULT_PGDATA,
        help=f"data directory of the pgserver instance, kept between runs ({DEFAULT_PGDATA})",
    )
    parser.add_argument("--sql", type=Path, default=DEFAULT_SQL, help="path of wide.sql")
    parser.add_argument("--json", metavar="PATH", help="also write every run to PATH")
    args = parser.parse_args()
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")

    started = dt.datetime.now(dt.UTC)
    sql_text = args.sql.read_text(encoding="utf-8")
    with server(args.dsn, args.pgdata) as dsn, tempfile.TemporaryDirectory() as tmp:
        table = load_table(dsn, sql_text, args.rows)
        meltano_table = (
            load_table(dsn, sql_text, MELTANO_MAX_ROWS) if args.rows > MELTANO_MAX_ROWS else table
        )
        facts = table_facts(dsn, table)
        print(
            f"{table}: {args.rows:,} rows, {facts['table_bytes'] / 1e6:,.0f} MB, "
            f"{facts['table_pages']:,} pages (PostgreSQL {facts['server_version']})",
            flush=True,
        )
        if facts["table_pages"] < 2 * PAGES_PER_PARTITION:
            print(
                f"note: PostgresReader reads in parallel only from {2 * PAGES_PER_PARTITION:,} "
                "pages on (2 x pages_per_partition): max_parallelism=2 reads serially here",
                flush=True,
            )
        contenders = build_contenders(dsn, table, meltano_table, args.rows, Path(tmp))
        runs = run_rounds(contenders, args.repeat, Path(tmp))
    summary = summarise(contenders, runs, args.rows)
    met = goals(summary)
    print(f"\n{args.rows:,} rows x 50 columns; median of {args.repeat} interleaved runs\n")
    print(markdown(summary, met))
    for c in contenders:
        if c.note:
            print(f"\nNote: {c.note}")
    if args.json:
        env = machine_facts()
        env["peers"] = {
            name: venv_versions(VENVS / name / "bin" / "python", names)
            for name, (_, names) in PEERS.items()
        }
        info = conninfo_to_dict(dsn)
        secret = str(info.pop("password", "") or "")
        result = {
            "date": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "rows": args.rows,
            "repeat": args.repeat,
            "table": table,
            "server": {**facts, "conninfo": info},
            "environment": env,
            "contenders": [
                {
                    "key": c.key,
                    "label": c.label,
                    "rows": c.rows,
                    "argv": [a.replace(secret, "********") if secret else a for a in c.argv],
                    "note": c.note,
                }
                for c in contenders
            ],
            "summary": summary,
            "goals": [{"goal": text, "met": ok} for text, ok in met],
            "runs": [asdict(r) for r in runs],
        }
        write_json(Path(args.json), result)


if __name__ == "__main__":
    main()
