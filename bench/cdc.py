"""Change data capture benchmark: catching up on committed changes from PostgreSQL's WAL.

Starts a Debian PostgreSQL server (``/usr/lib/postgresql/*/bin``) in a temporary directory
with ``wal_level = logical``, loads a table (REPLICA IDENTITY FULL), takes each contender's
starting point, then commits ``--changes`` row changes (inserts, updates and deletes, 500
per transaction) and times, as separate processes:

- ``dativo run`` (tap-dativo-postgres LOG_BASED -> target-dativo-iceberg, ``load_method:
  upsert``, ``hard_delete: true``): end to end, from the state its initial copy left;
  afterwards the Iceberg table is compared with the source (rows and a checksum);
- tap-dativo-postgres alone as a Singer tap (LOG_BASED, stdout to a file);
- meltanolabs-tap-postgres LOG_BASED (wal2json; stdout to a file), from a wal2json slot
  created just before the changes. It stops only after ``replication_idle_exit_seconds``
  without data: that wait is reported and subtracted.

Every contender has its own slot, positioned before the changes, so each reads the same
changes. Needs the ``postgresql-<major>-wal2json`` package for the peer (without it the
peer is reported as not run, and why).

    python bench/cdc.py --changes 200000 --repeat 1 [--accelerator both] [--json out.json]

``--accelerator`` runs tap-dativo-postgres with the Rust replication client
(``dativo_accel.ReplicationReader``), the Python path (``pg_logical_slot_peek_binary_changes``),
or each in the same run (``both``, the default; own slots and warehouses).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHEMA = "bench"
TABLE = "cdc"
STREAM = f"{SCHEMA}-{TABLE}"
PER_TXN = 500  # 200 inserts, 200 updates, 100 deletes
IDLE_EXIT = 2  # meltanolabs' replication_idle_exit_seconds (its minimum wait to stop)
NEW_IDS = 1_000_000_000


@dataclass
class Server:
    directory: Path
    bin: Path
    port: int
    user: str | None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "stop"],
            user=self.user,
            capture_output=True,
            check=False,
            timeout=120,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server() -> Server:
    """A fresh server with logical decoding (as root it runs as the ``pgserver`` user)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise SystemExit(
            "no Debian PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)"
        )
    bin_dir = Path(found[-1]).parent
    user = None
    if os.geteuid() == 0:
        user = "pgserver"
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-s", "/bin/bash", user], check=True, capture_output=True)
    directory = Path(tempfile.mkdtemp(prefix="dativo-bench-cdc-"))
    directory.chmod(0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = directory / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        user=user,
        check=True,
        capture_output=True,
        timeout=300,
    )
    settings = {
        "port": port,
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{directory}'",
        "wal_level": "logical",
        "max_replication_slots": 40,
        "max_wal_senders": 40,
        "fsync": "off",  # the changes are generated faster; reading is unaffected
        "synchronous_commit": "off",
        "max_wal_size": "'4GB'",
    }
    with (data / "postgresql.conf").open("a") as conf:
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-w", "start"],
        user=user,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Server(directory, bin_dir, port, user)


def wal2json_missing(server: Server) -> str | None:
    """Why the peer cannot run LOG_BASED on this server, or None."""
    lib = subprocess.run(
        [str(server.bin / "pg_config"), "--pkglibdir"], capture_output=True, text=True
    )
    pkglib = lib.stdout.strip() or str(server.bin.parent / "lib")
    if not Path(pkglib, "wal2json.so").exists():
        major = server.bin.parent.name
        return (
            f"meltanolabs-tap-postgres LOG_BASED needs the wal2json output plugin, and "
            f"{pkglib}/wal2json.so is missing (apt-get install postgresql-{major}-wal2json)"
        )
    return None


def seed(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.{TABLE} (id bigint PRIMARY KEY, name text NOT NULL, "
            "qty int, price numeric(12, 2), updated_at timestamptz)"
        )
        conn.execute(f"ALTER TABLE {SCHEMA}.{TABLE} REPLICA IDENTITY FULL")
        conn.execute(
            f"INSERT INTO {SCHEMA}.{TABLE} SELECT g, 'item ' || g, g %% 1000, g * 0.25, "
            "timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, %s) g",
            [rows],
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.{TABLE}")


def make_changes(dsn: str, changes: int, seed_rows: int) -> int:
    """Commit ``changes`` row changes, PER_TXN per transaction: 200 inserts of new ids, 200
    updates of rows of the seed, 100 deletes (of the previous transaction's inserts, or of
    the seed's last rows first). Returns the number of changes committed."""
    transactions = changes // PER_TXN
    span = seed_rows - 200 - 100
    with psycopg.connect(dsn) as conn:
        for k in range(transactions):
            base = NEW_IDS + k * 200
            conn.execute(
                f"INSERT INTO {SCHEMA}.{TABLE} SELECT g, 'new ' || g, g %% 1000, g %% 777 * 0.5, "
                "now() FROM generate_series(%s, %s) g",
                [base + 1, base + 200],
            )
            low = (k * 200) % span + 1
            conn.execute(
                f"UPDATE {SCHEMA}.{TABLE} SET qty = qty + 1, name = name || '+', "
                "updated_at = now() WHERE id BETWEEN %s AND %s",
                [low, low + 199],
            )
            if k == 0:
                first, last = seed_rows - 99, seed_rows
            else:
                first, last = NEW_IDS + (k - 1) * 200 + 1, NEW_IDS + (k - 1) * 200 + 100
            conn.execute(f"DELETE FROM {SCHEMA}.{TABLE} WHERE id BETWEEN %s AND %s", [first, last])
            conn.commit()
    return transactions * PER_TXN


def source_summary(dsn: str) -> tuple[int, int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*), sum(id + coalesce(qty, 0)), sum(price)::text FROM {SCHEMA}.{TABLE}"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def mirror_summary(warehouse: Path) -> tuple[int, int, str]:
    import decimal

    from target_dativo_iceberg.writer import open_catalog

    table = open_catalog({"warehouse": str(warehouse)}).load_table(f"singer.{SCHEMA}_{TABLE}")
    rows = table.scan(selected_fields=("id", "qty", "price")).to_arrow().to_pylist()
    total = sum(r["id"] + (r["qty"] or 0) for r in rows)
    price = sum((r["price"] or decimal.Decimal(0) for r in rows), decimal.Decimal(0))
    return len(rows), total, str(price)


def tap_config(server: Server, slot: str, accelerator: str) -> dict[str, Any]:
    return {
        "dsn": server.dsn,
        "filter_schemas": [SCHEMA],
        "replication_slot": slot,
        "accelerator": accelerator,
    }


def write_project(
    directory: Path, server: Server, slot: str, warehouse: Path, accelerator: str
) -> Path:
    data = {
        "version": 1,
        "default_environment": "bench",
        "environments": [{"name": "bench"}],
        "plugins": {
            "extractors": [
                {
                    "name": "tap-dativo-postgres",
                    "config": tap_config(server, slot, accelerator),
                    "select": [f"{STREAM}.*"],
                    "metadata": {STREAM: {"replication-method": "LOG_BASED"}},
                }
            ],
            "loaders": [
                {
                    "name": "target-dativo-iceberg",
                    "config": {
                        "warehouse": str(warehouse),
                        "load_method": "upsert",
                        "hard_delete": True,
                    },
                }
            ],
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "meltano.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dativo_run(project: Path) -> float:
    command = [
        str(BIN / "dativo"),
        "run",
        "tap-dativo-postgres",
        "target-dativo-iceberg",
        "--project",
        str(project),
        "--state-dir",
        str(project.parent / "state"),
    ]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=project.parent)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"dativo run failed:\n{done.stderr[-4000:]}")
    return took


def committed_lsn(project: Path) -> int:
    from target_dativo_iceberg.writer import IcebergWriter

    warehouse = project.parent / "warehouse"
    for state_id in _state_ids(project):
        state = IcebergWriter.recover_state({"warehouse": str(warehouse)}, state_id) or {}
        entry = (state.get("bookmarks") or {}).get(STREAM)
        if entry:
            return int(entry["replication_key_value"])
    raise SystemExit("no committed LSN after the initial copy")


def _state_ids(project: Path) -> list[str]:
    found = [p.stem for p in (project.parent / "state").rglob("*.json")]
    return [*found, "bench:tap-dativo-postgres-to-target-dativo-iceberg"]


def singer_catalog(tap: list[str], config: Path, out: Path, method_key: str) -> None:
    done = subprocess.run(
        [*tap, "--config", str(config), "--discover"], capture_output=True, text=True, check=True
    )
    catalog = json.loads(done.stdout)
    for entry in catalog["streams"]:
        wanted = entry["tap_stream_id"] == STREAM
        entry["replication_method"] = "LOG_BASED"
        for meta in entry["metadata"]:
            if not meta["breadcrumb"]:
                meta["metadata"]["selected"] = wanted
                meta["metadata"][method_key] = "LOG_BASED"
    out.write_text(json.dumps(catalog))


def run_tap(tap: list[str], config: Path, catalog: Path, state: Path | None, out: Path) -> float:
    args = [*tap, "--config", str(config), "--catalog", str(catalog)]
    if state is not None:
        args += ["--state", str(state)]
    began = time.monotonic()
    with out.open("wb") as sink:
        done = subprocess.run(args, stdout=sink, stderr=subprocess.PIPE)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{tap[0]} failed:\n{done.stderr.decode(errors='replace')[-4000:]}")
    return took


def records_in(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b'{"type":"RECORD"') or line.startswith(b'{"type": "RECORD"'):
                count += 1
    return count


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    records: int = 0
    note: str = ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--seed-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--accelerator",
        choices=["python", "rust", "both"],
        default="both",
        help="tap-dativo-postgres's slot reader: the Rust replication client, the Python "
        "peek path, or each (own slots, own warehouses)",
    )
    args = parser.parse_args()

    from tests.e2e.helpers import peer_venv  # a PyPI peer in its own venv

    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="dativo-bench-cdc-work-"))
    try:
        why_not = wal2json_missing(server)
        seed(server.dsn, args.seed_rows)
        ours_tap = [str(BIN / "tap-dativo-postgres")]
        peer_tap = [] if why_not else [str(peer_venv("meltanolabs-tap-postgres", "tap-postgres"))]
        accelerators = ["rust", "python"] if args.accelerator == "both" else [args.accelerator]
        reps = []
        for r in range(args.repeat):
            rep = work / f"rep{r}"
            ours: dict[str, tuple[Path, Path, Path]] = {}
            for acc in accelerators:
                home = rep / acc
                slot = f"dativo_bench_{r}_{acc}"
                project = write_project(home, server, slot, home / "warehouse", acc)
                dativo_run(project)  # the initial copy: creates the slot, commits its LSN
                lsn = committed_lsn(project)
                config = home / "tap.json"
                config.write_text(json.dumps(tap_config(server, slot, acc)))
                state = home / "tap-state.json"
                bookmark = {"replication_key": "_sdc_lsn", "replication_key_value": lsn}
                state.write_text(json.dumps({"bookmarks": {STREAM: bookmark}}))
                singer_catalog(ours_tap, config, home / "catalog.json", "replication-method")
                ours[acc] = (project, config, state)
            peer_config = rep / "peer.json"
            if peer_tap:
                with psycopg.connect(server.dsn, autocommit=True) as conn:
                    conn.execute(
                        "SELECT pg_create_logical_replication_slot(%s, 'wal2json')",
                        [f"peer_bench_{r}"],
                    )
                peer_config.write_text(
                    json.dumps(
                        {
                            "host": "127.0.0.1",
                            "port": server.port,
                            "user": "postgres",
                            "password": "",
                            "database": "postgres",
                            "filter_schemas": [SCHEMA],
                            "replication_slot_name": f"peer_bench_{r}",
                            "replication_idle_exit_seconds": IDLE_EXIT,
                        }
                    )
                )
                singer_catalog(
                    peer_tap, peer_config, rep / "peer-catalog.json", "replication-method"
                )
            reps.append((rep, ours, peer_config))
        began = time.monotonic()
        changes = make_changes(server.dsn, args.changes, args.seed_rows)
        print(f"{changes} changes committed in {time.monotonic() - began:.1f}s", flush=True)
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute(
                "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                "min(confirmed_flush_lsn))) FROM pg_replication_slots"
            ).fetchone()
        wal = row[0] if row else "?"
        expected = source_summary(server.dsn)
        results = {
            "peer": Result(
                "meltanolabs-tap-postgres LOG_BASED (wal2json) -> file", note=why_not or ""
            ),
        }
        for acc in accelerators:
            results[f"tap-{acc}"] = Result(f"tap-dativo-postgres LOG_BASED ({acc}) -> file")
            results[f"e2e-{acc}"] = Result(f"dativo run LOG_BASED ({acc}) -> Iceberg upsert+hd")
        for rep, ours, peer_config in reps:
            if peer_tap:
                out = rep / "peer.out"
                took = run_tap(peer_tap, peer_config, rep / "peer-catalog.json", None, out)
                results["peer"].seconds.append(took - IDLE_EXIT)
                results["peer"].records = records_in(out)
                out.unlink()
            for acc, (project, config, state) in ours.items():
                out = project.parent / "tap.out"
                tap, e2e = results[f"tap-{acc}"], results[f"e2e-{acc}"]
                tap.seconds.append(
                    run_tap(ours_tap, config, project.parent / "catalog.json", state, out)
                )
                tap.records = records_in(out)
                out.unlink()
                e2e.seconds.append(dativo_run(project))
                mirror = mirror_summary(project.parent / "warehouse")
                if mirror != expected:
                    raise SystemExit(
                        f"the Iceberg mirror ({acc}) differs from the source: "
                        f"{mirror} != {expected}"
                    )
                e2e.note = f"mirror = source ({expected[0]} rows, checksums equal)"
        load = os.getloadavg()
        print(
            f"\n{changes} committed changes ({changes // PER_TXN} transactions, WAL {wal}), "
            f"{args.seed_rows} seed rows; load {load[0]:.2f}; {platform.platform()}, "
            f"{os.cpu_count()} CPUs"
        )
        print(f"{'contender':58} {'median s':>9} {'changes/s':>10} {'records':>8}")
        table: dict[str, Any] = {}
        for key, result in results.items():
            if not result.seconds:
                print(f"{result.name:58} {'not run':>9}  {result.note}")
                table[key] = {"name": result.name, "note": result.note}
                continue
            median = statistics.median(result.seconds)
            rate = changes / median
            records = str(result.records) if result.records else "-"
            print(f"{result.name:58} {median:9.2f} {rate:10.0f} {records:>8}  {result.note}")
            table[key] = {
                "name": result.name,
                "seconds": result.seconds,
                "changes_per_second": rate,
                "records": result.records,
                "note": result.note,
            }
        if results["peer"].seconds:
            peer = statistics.median(results["peer"].seconds)
            for key, result in results.items():
                if key != "peer" and result.seconds:
                    ratio = peer / statistics.median(result.seconds)
                    print(f"{key}: {ratio:.2f}x the peer")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"changes": changes, "seed_rows": args.seed_rows, "wal": wal, "results": table},
                    indent=2,
                )
            )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
