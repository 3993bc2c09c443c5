"""The ray engine on a cluster of separate processes: ``ray start --head`` and ``ray start
--address`` (two nodes on 127.0.0.1), as a user would start one, joined with ``ray_address``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ray = pytest.importorskip(
    "ray", reason='the ray extra is not installed (pip install "dativo[ray]")'
)

from dativo_bridge.engines.ray_engine import run_with_ray  # noqa: E402
from tap_dativo_postgres.reader import PostgresReader  # noqa: E402
from target_dativo_iceberg.writer import IcebergWriter, open_catalog  # noqa: E402

from .postgres.server import fresh_schema, pg_dsn  # noqa: E402

SCHEMA = "dativo_ray_procs"
NODE = ["--num-cpus=1", "--object-store-memory=100000000", "--block", "--disable-usage-stats"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray(*args: str) -> subprocess.Popen[bytes]:
    ray_cli = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray_cli), "start", *args, *NODE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Token authentication off, as for the driver (this test's process).
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        start_new_session=True,  # its own process group: stopped as one below
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # `ray start --block` takes SIGTERM as a cue to stop its node, which here takes longer
    # than the test itself (30 s were seen); the group's SIGKILL ends every process of it.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    port = _free_port()
    where = f"127.0.0.1:{port}"
    head = _ray(
        "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"
    )
    nodes = [head]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.init(address=where, log_to_driver=False)
                break
            except Exception:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise
                time.sleep(0.5)
        nodes.append(_ray(f"--address={where}", "--node-ip-address=127.0.0.1"))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline + 60, "the second node did not join"
            time.sleep(0.5)
        ray.shutdown()
        yield where
    finally:
        ray.shutdown()
        for process in reversed(nodes):
            _stop(process)


def test_a_cluster_of_ray_start_processes_runs_the_partitions_on_both_nodes(
    address: str, tmp_path: Path
) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.events (id bigint PRIMARY KEY, payload text)")
        conn.execute(
            f"INSERT INTO {SCHEMA}.events SELECT g, repeat('x', 200) "
            "FROM generate_series(1, 20000) g"
        )
    target = {"warehouse": str(tmp_path / "warehouse"), "namespace": "ray"}
    result = run_with_ray(
        PostgresReader,
        IcebergWriter,
        source_config={"dsn": pg_dsn(), "filter_schemas": [SCHEMA], "pages_per_partition": 100},
        destination_config=target,
        ray_address=address,
    )
    assert not ray.is_initialized()  # run_with_ray joined and left the cluster
    assert len({t.node_id for t in result.tasks}) == 2
    table = open_catalog(target).load_table("ray.dativo_ray_procs_events")
    ids = sorted(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())
    assert ids == list(range(1, 20001))
    assert len(table.snapshots()) == 1
