"""Start-up benchmark: `--about`, `--discover` and a 1-row shell pipe against singer-sdk peers.

Every Dativo tap and target's `--about` against meltanolabs-target-csv's (the lightest
singer-sdk plugin at hand: a target with no dependency beyond singer-sdk), `--discover` of
tap-dativo-csv and tap-dativo-postgres against meltanolabs-tap-postgres's, and a shell pipe
of a 1-row table (`tap-dativo-postgres | target-dativo-parquet`, `tap-dativo-csv |
target-dativo-parquet`) against `meltanolabs-tap-postgres | meltanolabs-target-csv`. The
table is the `wide` reference table at 1 row (/work/shared/bench/wide.sql), copied into its
own schema `startup` so that both taps discover the same single table.

Each command runs as a separate process, timed from spawn to exit (time.perf_counter),
every contender once per round, the order rotated each round; Dativo's plugins run from
this virtualenv (an editable install, for development) and, unless --no-wheel, from
bench/.venvs/dativo-wheel, where the working tree is built as a wheel and installed as a
user's `pip install` would (no editable import finder); one untimed run of each fills a
bytecode cache (bench/.venvs/pycache) that every timed run uses; reported: the median wall
time and, for a row with a peer, the median over the rounds of (ours / peer) in the same
round (below 1x ours is faster). The peers run from their own virtualenvs under
bench/.venvs/ (bench/postgres.py's, pinned to the singer-sdk version Dativo uses).

    python bench/startup.py --repeat 7 [--dsn URI] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import postgres as pgbench  # bench/postgres.py: server, table loading, venvs

#: meltanolabs-target-csv's virtualenv under bench/.venvs/, with the singer-sdk Dativo uses.
TARGET_CSV_VENV = "target-csv"
TARGET_CSV_PINS = ["meltanolabs-target-csv==0.5.0", "singer-sdk==0.54.9"]
SCHEMA = "startup"
TABLE = f"{SCHEMA}.wide_1"
STREAM = f"{SCHEMA}-wide_1"
PLUGINS = (
    "tap-dativo-csv",
    "tap-dativo-postgres",
    "tap-dativo-rest",
    "target-dativo-parquet",
    "target-dativo-iceberg",
    "target-dativo-s3",
)
#: The checkout built as a wheel and installed with its dependencies, as a user's
#: `pip install dativo` gives (the dev venv's editable install adds an import finder that
#: every interpreter start pays for, and packages such as psutil that singer-sdk's joblib
#: then imports).
WHEEL_VENV = "dativo-wheel"
#: Every command's compiled bytecode, written here (PYTHONPYCACHEPREFIX) and kept across runs
#: whatever PYTHONDONTWRITEBYTECODE says: a user's interpreter reuses its .pyc files, and a
#: checkout whose modules are compiled again at every start would measure the compiler.
PYCACHE = pgbench.VENVS / "pycache"
#: Goals of issue 22: --about at most this many times the peer's; the 1-row pipe under this.
GOAL_ABOUT_RATIO = 1.0
GOAL_PIPE_SECONDS = 1.0


@dataclass
class Contender:
    """One command to time (a bash pipeline when ``shell``), and what it is compared with."""

    key: str
    group: str
    label: str
    argv: list[str]
    peer: str | None = None
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: A folder whose Parquet files must hold exactly one row after each run (then removed).
    parquet_out: Path | None = None
    #: A folder whose CSV files must hold a header and one row after each run (then removed).
    csv_out: Path | None = None


def copy_table(dsn: str) -> None:
    """``startup.wide_1``: a copy of ``bench.wide_1`` (with its key) in a schema of its own."""
    sql_text = pgbench.DEFAULT_SQL.read_text(encoding="utf-8")
    source = pgbench.load_table(dsn, sql_text, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (LIKE {source} INCLUDING ALL)")
        conn.execute(f"INSERT INTO {TABLE} SELECT * FROM {source}")
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")


def wheel_bin(work: Path) -> Path:
    """The bin folder of bench/.venvs/dativo-wheel, with the checkout's working tree built
    as a wheel and (re)installed there (its dependencies installed once, then kept)."""
    venv = pgbench.VENVS / WHEEL_VENV
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    out = work / "wheel"
    quiet = ["-q", "--disable-pip-version-check"]
    print("building the checkout's wheel ...", flush=True)
    # From a copy: setuptools would leave build/ in the checkout, which others' builds share.
    source = work / "source"
    skip = (".git", ".venv", ".venvs", ".dativo", "build", "target", "__pycache__", "*.egg-info")
    shutil.copytree(pgbench.REPO, source, ignore=shutil.ignore_patterns(*skip))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "-w", str(out), str(source)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    wheel = str(next(out.glob("dativo-*.whl")))
    subprocess.run([str(python), "-m", "pip", "install", *quiet, wheel], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", *quiet, "--no-deps", "--force-reinstall", wheel],
        check=True,
    )
    return python.parent


def build(dsn: str, work: Path, wheel: bool) -> list[Contender]:
    """The contenders, with their configs, catalogs and the 1-row CSV file written to ``work``."""
    csv_python = pgbench.ensure_venv(TARGET_CSV_VENV, TARGET_CSV_PINS)
    melt_python = pgbench.ensure_venv("meltanolabs")
    target_csv = str(csv_python.parent / "target-csv")
    melt_tap = str(melt_python.parent / "tap-postgres")
    ours = {name: pgbench.find_executable(name) for name in PLUGINS}

    data = work / "one.csv"
    data.write_text("id,name\n1,a\n", encoding="utf-8")
    csv_cfg = pgbench.write_json(
        work / "csv.json",
        {"files": [{"stream": "one", "path": str(data), "key_properties": ["id"]}]},
    )
    pg_cfg = pgbench.write_json(work / "pg.json", {"dsn": dsn, "filter_schemas": [SCHEMA]})
    melt_settings, melt_env = pgbench.meltano_config(dsn)
    melt_cfg = pgbench.write_json(
        work / "meltano.json", {**melt_settings, "filter_schemas": [SCHEMA]}
    )
    pg_catalog = pgbench.discover(
        [ours["tap-dativo-postgres"]], pg_cfg, STREAM, work / "pg-catalog.json"
    )
    melt_catalog = pgbench.discover(
        [melt_tap], melt_cfg, STREAM, work / "meltano-catalog.json", melt_env
    )
    out_pg, out_csv, out_peer = work / "out-pg", work / "out-csv", work / "out-peer"
    parquet_pg = pgbench.write_json(work / "parquet-pg.json", {"path": str(out_pg)})
    parquet_csv = pgbench.write_json(work / "parquet-csv.json", {"path": str(out_csv)})
    peer_out_cfg = pgbench.write_json(work / "target-csv.json", {"output_path": str(out_peer)})

    def pipe(tap: list[str], target: list[str]) -> list[str]:
        return [f"{shlex.join(tap)} | {shlex.join(target)} > /dev/null"]

    found: list[Contender] = [
        Contender("about-peer", "about", "meltanolabs-target-csv --about", [target_csv, "--about"]),
    ]
    for name in PLUGINS:
        found.append(
            Contender(
                f"about-{name}", "about", f"{name} --about", [ours[name], "--about"], "about-peer"
            )
        )
    installed = wheel_bin(work) if wheel else None
    if installed is not None:
        for name in PLUGINS:
            found.append(
                Contender(
                    f"about-wheel-{name}",
                    "about",
                    f"{name} --about (wheel)",
                    [str(installed / name), "--about"],
                    "about-peer",
                )
            )
    found += [
        Contender(
            "about-melt",
            "about",
            "meltanolabs-tap-postgres --about",
            [melt_tap, "--about"],
            "about-peer",
        ),
        Contender(
            "discover-melt",
            "discover",
            "meltanolabs-tap-postgres --discover",
            [melt_tap, "--config", str(melt_cfg), "--discover"],
            env=melt_env,
        ),
        Contender(
            "discover-pg",
            "discover",
            "tap-dativo-postgres --discover",
            [ours["tap-dativo-postgres"], "--config", str(pg_cfg), "--discover"],
            "discover-melt",
        ),
        Contender(
            "discover-csv",
            "discover",
            "tap-dativo-csv --discover (1-row file)",
            [ours["tap-dativo-csv"], "--config", str(csv_cfg), "--discover"],
            "discover-melt",
        ),
        Contender(
            "pipe-peer",
            "pipe",
            "meltanolabs-tap-postgres | meltanolabs-target-csv",
            pipe(
                [melt_tap, "--config", str(melt_cfg), "--catalog", str(melt_catalog)],
                [target_csv, "--config", str(peer_out_cfg)],
            ),
            shell=True,
            env=melt_env,
            csv_out=out_peer,
        ),
        Contender(
            "pipe-pg",
            "pipe",
            "tap-dativo-postgres | target-dativo-parquet",
            pipe(
                [
                    ours["tap-dativo-postgres"],
                    "--config",
                    str(pg_cfg),
                    "--catalog",
                    str(pg_catalog),
                ],
                [ours["target-dativo-parquet"], "--config", str(parquet_pg)],
            ),
            "pipe-peer",
            shell=True,
            parquet_out=out_pg,
        ),
        Contender(
            "pipe-csv",
            "pipe",
            "tap-dativo-csv | target-dativo-parquet",
            pipe(
                [ours["tap-dativo-csv"], "--config", str(csv_cfg)],
                [ours["target-dativo-parquet"], "--config", str(parquet_csv)],
            ),
            "pipe-peer",
            shell=True,
            parquet_out=out_csv,
        ),
    ]
    if installed is not None:
        found.append(
            Contender(
                "pipe-pg-wheel",
                "pipe",
                "tap-dativo-postgres | target-dativo-parquet (wheel)",
                pipe(
                    [
                        str(installed / "tap-dativo-postgres"),
                        *("--config", str(pg_cfg), "--catalog", str(pg_catalog)),
                    ],
                    [str(installed / "target-dativo-parquet"), "--config", str(parquet_pg)],
                ),
                "pipe-peer",
                shell=True,
                parquet_out=out_pg,
            )
        )
    return found


def check_output(contender: Contender) -> None:
    """The pipe wrote exactly the table's one row; the output is removed for the next run."""
    if contender.parquet_out is not None:
        files = sorted(contender.parquet_out.rglob("*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        shutil.rmtree(contender.parquet_out)
        if rows != 1:
            raise SystemExit(f"{contender.label}: wrote {rows} rows in {len(files)} files, not 1")
    if contender.csv_out is not None:
        files = sorted(contender.csv_out.rglob("*.csv"))
        lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
        shutil.rmtree(contender.csv_out)
        if lines != 2:
            raise SystemExit(f"{contender.label}: wrote {lines} lines, not a header and 1 row")


def time_once(contender: Contender) -> float:
    """Seconds from spawning ``contender`` to its exit; fails loudly on a non-zero exit."""
    command = (
        ["bash", "-o", "pipefail", "-c", contender.argv[0]] if contender.shell else contender.argv
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(contender.env, PYTHONPYCACHEPREFIX=str(PYCACHE))
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(
            f"{contender.label} failed (exit {done.returncode}):\n{done.stderr[-3000:].decode()}"
        )
    check_output(contender)
    return seconds


def run_rounds(contenders: list[Contender], repeat: int) -> dict[str, list[float]]:
    """Seconds of every contender in every round (index = round), the order rotated."""
    times: dict[str, list[float]] = {c.key: [0.0] * repeat for c in contenders}
    for contender in contenders:  # untimed: fills the bytecode cache
        time_once(contender)
    for rnd in range(repeat):
        shift = rnd % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            times[contender.key][rnd] = time_once(contender)
        print(f"  round {rnd + 1}/{repeat} done", flush=True)
    return times


def summarise(contenders: list[Contender], times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per contender: median seconds, and the median same-round ratio to its peer."""
    rows = []
    for c in contenders:
        ratio = None
        if c.peer is not None:
            ratio = statistics.median(
                a / b for a, b in zip(times[c.key], times[c.peer], strict=True)
            )
        rows.append(
            {
                "key": c.key,
                "group": c.group,
                "label": c.label,
                "median_s": statistics.median(times[c.key]),
                "min_s": min(times[c.key]),
                "peer": c.peer,
                "ratio_to_peer": ratio,
                "seconds": times[c.key],
            }
        )
    return rows


def goals(summary: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Issue 22's start-up goals, each with whether this run met it."""
    met = []
    for row in summary:
        if row["group"] == "about" and row["label"].startswith(("tap-dativo", "target-dativo")):
            met.append(
                (
                    f"{row['label']}: {row['ratio_to_peer']:.2f}x meltanolabs-target-csv --about "
                    f"(goal <= {GOAL_ABOUT_RATIO:.1f}x)",
                    row["ratio_to_peer"] <= GOAL_ABOUT_RATIO,
                )
            )
        if row["key"] in ("pipe-pg", "pipe-csv", "pipe-pg-wheel"):
            met.append(
                (
                    f"{row['label']}, 1 row: {row['median_s']:.2f} s "
                    f"(goal < {GOAL_PIPE_SECONDS:.0f} s)",
                    row["median_s"] < GOAL_PIPE_SECONDS,
                )
            )
    return met


def markdown(summary: list[dict[str, Any]], met: list[tuple[str, bool]]) -> str:
    """The results as a markdown table and the goals."""
    # A pipe's "|" would end the table cell.
    names = {row["key"]: row["label"].replace("|", "\\|") for row in summary}
    lines = ["| command | median | min | ours / peer (same round, median) |", "|---|---|---|---|"]
    for row in summary:
        ratio = (
            "-"
            if row["ratio_to_peer"] is None
            else f"{row['ratio_to_peer']:.2f}x {names[row['peer']]}"
        )
        lines.append(
            f"| `{names[row['key']]}` | {row['median_s']:.3f} s | {row['min_s']:.3f} s | {ratio} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in met]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, set up the peers and the table, time every command, print results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--dsn", help="PostgreSQL URI (default: a pgserver instance)")
    parser.add_argument("--pgdata", type=Path, default=pgbench.DEFAULT_PGDATA)
    parser.add_argument("--json", type=Path, help="also write every run's time to this file")
    parser.add_argument(
        "--no-wheel",
        action="store_true",
        help=f"skip the plugins installed from a wheel (bench/.venvs/{WHEEL_VENV})",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    with pgbench.server(args.dsn, args.pgdata) as dsn, tempfile.TemporaryDirectory() as tmp:
        copy_table(dsn)
        contenders = build(dsn, Path(tmp), wheel=not args.no_wheel)
        print(f"timing {len(contenders)} commands, {args.repeat} rounds ...", flush=True)
        times = run_rounds(contenders, args.repeat)
    summary = summarise(contenders, times)
    met = goals(summary)
    print(markdown(summary, met))
    if args.json:
        env = pgbench.machine_facts()
        env["peers"] = {
            TARGET_CSV_VENV: pgbench.venv_versions(
                pgbench.VENVS / TARGET_CSV_VENV / "bin" / "python",
                ["meltanolabs-target-csv", "singer-sdk"],
            ),
            "meltanolabs": pgbench.venv_versions(
                pgbench.VENVS / "meltanolabs" / "bin" / "python",
                ["meltanolabs-tap-postgres", "singer-sdk"],
            ),
        }
        result = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]),
            "repeat": args.repeat,
            "environment": env,
            "contenders": [asdict(c) for c in contenders],
            "summary": summary,
            "goals": [{"goal": text, "met": ok} for text, ok in met],
        }
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
