"""dativo run --engine ray into target-dativo-parquet (dativo_bridge.engines.ray_parquet)
on a real two-node Ray cluster: tasks write hidden in-progress files, the driver publishes
them with the local engine's rule."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip(
    "ray", reason='the ray extra is not installed (pip install "dativo[ray]")'
)

from ray import cloudpickle  # noqa: E402 - after the importorskip gate
from ray.cluster_utils import Cluster  # noqa: E402

from dativo_bridge.engines.partitions import Partition  # noqa: E402
from dativo_bridge.engines.ray_engine import run_with_ray  # noqa: E402
from dativo_bridge.errors import ConfigError  # noqa: E402
from dativo_bridge.runner import run  # noqa: E402
from dativo_bridge.state import LocalStateStore  # noqa: E402
from tap_dativo_postgres.partitions import PartitionedPostgresReader  # noqa: E402
from tap_dativo_postgres.reader import PostgresReader  # noqa: E402
from target_dativo_parquet.writer import ParquetWriter  # noqa: E402

from .postgres.server import fresh_schema, pg_dsn  # noqa: E402

SCHEMA = "dativo_ray_pq"
STREAM = f"{SCHEMA}-events"
ROWS = 12_000
NODE = {"num_cpus": 1, "object_store_memory": 100_000_000}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and a worker node (one CPU each), the test process its driver."""
    nodes = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    nodes.add_node(**NODE)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def events() -> str:
    """A table of several column types, NULLs among them."""
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.events (id bigint PRIMARY KEY, payload text, "
            "amount numeric(12,2), seen timestamptz, flag boolean, day date)"
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.events SELECT g, "
            "CASE WHEN g % 7 = 0 THEN NULL ELSE repeat(md5(g::text), 4) END, "
            "g * 1.25, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', "
            "CASE WHEN g % 5 = 0 THEN NULL ELSE g % 2 = 0 END, "
            f"date '2024-01-01' + (g % 30) FROM generate_series(1, {ROWS}) g"
        )
    return pg_dsn()


def _source(dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "dsn": dsn,
        "filter_schemas": [SCHEMA],
        "pages_per_partition": 40,
        "batch_size_bytes": 256 * 1024,
        **extra,
    }


def _visible(folder: Path) -> list[Path]:
    """The files a reader of the folder lists (pyarrow skips hidden names too)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _hidden(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*"))


def _rows(folder: Path) -> pa.Table:
    files = _visible(folder)
    assert files and all(f.suffix == ".parquet" for f in files), files
    return pa.concat_tables(pq.read_table(f) for f in files).sort_by("id")


def test_the_rows_are_exactly_those_the_local_engine_writes(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    local = run(
        PostgresReader,
        ParquetWriter,
        source_config=_source(events),
        destination_config={"path": str(tmp_path / "local")},
    )
    result = run_with_ray(
        PostgresReader,
        ParquetWriter,
        source_config=_source(events),
        destination_config={"path": str(tmp_path / "ray")},
    )
    assert local.rows == result.rows == ROWS
    expected = _rows(tmp_path / "local" / STREAM)
    got = _rows(tmp_path / "ray" / STREAM)
    assert got.schema.equals(expected.schema, check_metadata=True), (got.schema, expected.schema)
    assert got.equals(expected)
    assert len(result.tasks) >= 4
    assert len({t.node_id for t in result.tasks}) == 2, [t.node_id for t in result.tasks]
    published = {str(p) for p in _visible(tmp_path / "ray" / STREAM)}
    assert {f for t in result.tasks for f in t.files} == published == set(result.files)
    assert _hidden(tmp_path / "ray") == []  # no in-progress file is left


_DRIVER = """
import os, time
from pathlib import Path
from tap_dativo_postgres.partitions import PartitionedPostgresReader
from target_dativo_parquet.writer import ParquetWriter
from dativo_bridge.engines.ray_engine import run_with_ray
from dativo_bridge.state import LocalStateStore

class Slow(PartitionedPostgresReader):
    def read_partition(self, partition):
        Path({pids!r}, str(os.getpid())).touch()
        for batch in super().read_partition(partition):
            yield batch
            time.sleep(0.5)

run_with_ray(Slow, ParquetWriter, source_config={source!r}, destination_config={target!r},
             ray_address={address!r}{extra})
print("finished")
"""


def test_a_killed_run_leaves_no_visible_file_and_the_next_run_cleans_up(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    target = {"path": str(tmp_path / "out"), "target_file_size_mb": 0.05}
    source = _source(events, batch_size_bytes=32 * 1024)
    script = textwrap.dedent(_DRIVER).format(
        source=source, target=target, address=cluster.address, pids=str(pids), extra=""
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_hidden(tmp_path / "out")) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before writing any file"
        time.sleep(0.1)
    assert _hidden(tmp_path / "out"), "no task wrote a file in time"
    for pid in [driver.pid, *(int(p.name) for p in pids.iterdir())]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    driver.wait(timeout=30)
    left = _hidden(tmp_path / "out")
    assert any(p.name.endswith(".parquet.inprogress") for p in left), left
    assert _visible(tmp_path / "out") == []  # nothing of the killed run is visible

    result = run_with_ray(
        PostgresReader, ParquetWriter, source_config=_source(events), destination_config=target
    )
    assert result.rows == ROWS
    assert _rows(tmp_path / "out" / STREAM).column("id").to_pylist() == list(range(1, ROWS + 1))
    assert _hidden(tmp_path / "out") == []  # the killed run's files were removed


def test_a_task_that_fails_for_good_publishes_nothing_and_leaves_nothing(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    class Broken(PartitionedPostgresReader):
        def read_partition(self, partition: Partition) -> Iterator[Any]:
            yield from super().read_partition(partition)
            if partition.index == 2:
                raise RuntimeError("partition 2 always fails")

    store = LocalStateStore(tmp_path / "state")
    with pytest.raises(Exception, match="partition 2 always fails"):
        run_with_ray(
            Broken,
            ParquetWriter,
            source_config=_source(events),
            destination_config={"path": str(tmp_path / "out")},
            max_retries=1,
            state_id="dev:pq",
            state_store=store,
        )
    assert _visible(tmp_path / "out") == []
    assert _hidden(tmp_path / "out") == []  # the other tasks' files were deleted too
    assert store.get("dev:pq") is None


def test_overwrite_replaces_the_folder_once_with_the_runs_files(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    folder = tmp_path / "out" / STREAM
    folder.mkdir(parents=True)
    old = pa.table({"id": [-1, -2]})
    pq.write_table(old, folder / "part-old.parquet")
    store = LocalStateStore(tmp_path / "state")
    store.put("dev:pq", {"bookmarks": {"ignored": {"replication_key_value": 1}}})
    result = run_with_ray(
        PostgresReader,
        ParquetWriter,
        source_config=_source(events),
        destination_config={"path": str(tmp_path / "out"), "load_method": "overwrite"},
        state_id="dev:pq",
        state_store=store,
    )
    assert result.rows == ROWS
    assert not (folder / "part-old.parquet").exists()
    assert _rows(folder).column("id").to_pylist() == list(range(1, ROWS + 1))
    assert {str(p) for p in _visible(folder)} == {f for t in result.tasks for f in t.files}
    assert _hidden(tmp_path / "out") == []  # no staged or replaced folder is left


def test_incremental_append_publishes_then_records_state_and_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    fresh_schema(SCHEMA + "_inc")
    table = f"{SCHEMA}_inc.items"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, updated bigint)")
        conn.execute(f"INSERT INTO {table} SELECT g, g FROM generate_series(1, 3000) g")
        conn.execute(f"ANALYZE {table}")
    source = {
        "dsn": pg_dsn(),
        "filter_schemas": [SCHEMA + "_inc"],
        "pages_per_partition": 4,
    }
    incremental = {"*": {"replication-method": "INCREMENTAL", "replication-key": "updated"}}
    target = {"path": str(tmp_path / "out")}
    store = LocalStateStore(tmp_path / "state")
    first = run_with_ray(
        PostgresReader,
        ParquetWriter,
        source_config=source,
        destination_config=target,
        metadata=incremental,
        state_id="dev:inc",
        state_store=store,
    )
    assert len(first.tasks) >= 3
    saved = store.get("dev:inc")
    assert saved == first.state
    stream = next(iter(saved["bookmarks"]))
    assert saved["bookmarks"][stream]["replication_key_value"] == 3000
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} SELECT g, g FROM generate_series(3001, 3500) g")
    second = run_with_ray(
        PostgresReader,
        ParquetWriter,
        source_config=source,
        destination_config=target,
        metadata=incremental,
        state_id="dev:inc",
        state_store=store,
    )
    # the bookmark's own row comes again (>=), as with the local engine's Parquet target
    assert second.rows == 501
    ids = _rows(tmp_path / "out" / stream).column("id").to_pylist()
    assert sorted(set(ids)) == list(range(1, 3501))
    assert store.get("dev:inc")["bookmarks"][stream]["replication_key_value"] == 3500


def test_upsert_into_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="load_method 'upsert' is not supported"):
        run_with_ray(
            PostgresReader,
            ParquetWriter,
            destination_config={"path": str(tmp_path), "load_method": "upsert"},
        )
    assert list(tmp_path.iterdir()) == []


BY_ID = {STREAM: {"replication-method": "INCREMENTAL", "replication-key": "id"}}


def test_a_full_refresh_replaces_the_folder_with_the_local_engines_state(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    store = LocalStateStore(tmp_path / "state")
    common: dict[str, Any] = {
        "source_config": _source(events),
        "metadata": BY_ID,
        "state_id": "dev:fr",
        "state_store": store,
    }
    run_with_ray(PostgresReader, ParquetWriter, destination_config={"path": str(out)}, **common)
    first = {p.name for p in _visible(out / STREAM)}
    refreshed = run_with_ray(
        PostgresReader,
        ParquetWriter,
        destination_config={"path": str(out)},
        full_refresh=True,
        **common,
    )
    assert refreshed.rows == ROWS  # read from the start, whatever the bookmark
    assert _rows(out / STREAM).column("id").to_pylist() == list(range(1, ROWS + 1))  # once
    assert not first & {p.name for p in _visible(out / STREAM)}  # the folder was replaced
    assert _hidden(out) == []

    local_store = LocalStateStore(tmp_path / "local-state")
    local = run(
        PostgresReader,
        ParquetWriter,
        source_config=_source(events),
        destination_config={"path": str(tmp_path / "local")},
        metadata=BY_ID,
        state_id="dev:fr",
        state_store=local_store,
        full_refresh=True,
    )
    assert refreshed.state == local.state == store.get("dev:fr") == local_store.get("dev:fr")
    assert local.state["bookmarks"][STREAM]["replication_key_value"] == ROWS


def test_a_killed_full_refresh_leaves_the_old_files_and_the_state_as_they_were(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    store = LocalStateStore(tmp_path / "state")
    run_with_ray(
        PostgresReader,
        ParquetWriter,
        source_config=_source(events),
        destination_config={"path": str(out)},
        metadata=BY_ID,
        state_id="dev:fr",
        state_store=store,
    )
    before = _visible(out / STREAM)
    stored = store.get("dev:fr")
    pids = tmp_path / "pids"
    pids.mkdir()
    script = textwrap.dedent(_DRIVER).format(
        source=_source(events, batch_size_bytes=32 * 1024),
        target={"path": str(out), "target_file_size_mb": 0.05},
        address=cluster.address,
        pids=str(pids),
        extra=f", metadata={BY_ID!r}, state_id='dev:fr', full_refresh=True, "
        f"state_store=LocalStateStore({str(tmp_path / 'state')!r})",
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(p.is_file() for p in _hidden(out)) and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before writing any file"
        time.sleep(0.1)
    assert any(p.is_file() for p in _hidden(out)), "no task wrote a file in time"
    for pid in [driver.pid, *(int(p.name) for p in pids.iterdir())]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    driver.wait(timeout=30)
    assert _visible(out / STREAM) == before  # the old files, still what a reader lists
    assert _rows(out / STREAM).column("id").to_pylist() == list(range(1, ROWS + 1))
    assert store.get("dev:fr") == stored


def test_postgres_partitions_are_sized_for_the_target_file_size(
    cluster: Cluster, tmp_path: Path
) -> None:
    fresh_schema(SCHEMA + "_size")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}_size.rows (id bigint, payload text)")
        conn.execute(
            f"INSERT INTO {SCHEMA}_size.rows SELECT g, repeat(md5(g::text), 4) "
            "FROM generate_series(1, 20000) g"
        )
        conn.execute(f"VACUUM ANALYZE {SCHEMA}_size.rows")
        found = conn.execute(
            f"SELECT pg_relation_size('{SCHEMA}_size.rows'), current_setting('block_size')::int"
        ).fetchone()
    assert found is not None
    size, block = int(found[0]), int(found[1])
    target_mb = 0.5
    pages = -(-int(target_mb * 2**20) // block)  # a partition holds the target's bytes
    expected = -(-(size // block) // pages)
    assert expected >= 4, size  # the table spans several target files
    source = {"dsn": pg_dsn(), "filter_schemas": [SCHEMA + "_size"]}
    reader = PartitionedPostgresReader()
    reader.open(source)
    try:
        stream = next(s for s in reader.discover() if s.name.endswith("-rows"))
        assert len(reader.partitions(stream, None, target_bytes=int(target_mb * 2**20))) == (
            expected
        )
        assert len(reader.partitions(stream, None)) == 1  # no target: pages_per_partition
    finally:
        reader.close()
    given = PartitionedPostgresReader()
    given.open({**source, "pages_per_partition": 10})  # a setting given wins
    try:
        stream = next(s for s in given.discover() if s.name.endswith("-rows"))
        assert len(given.partitions(stream, None, target_bytes=2**20)) == -(-(size // block) // 10)
    finally:
        given.close()

    target = {"path": str(tmp_path), "target_file_size_mb": target_mb, "compression": "none"}
    result = run_with_ray(
        PostgresReader, ParquetWriter, source_config=source, destination_config=target
    )
    assert len(result.tasks) == expected
    assert result.rows == 20000
    sizes = [os.path.getsize(t.files[0]) for t in result.tasks]
    assert all(len(t.files) == 1 for t in result.tasks), [t.files for t in result.tasks]
    low, high = 0.6 * target_mb * 2**20, 1.05 * target_mb * 2**20
    assert all(low <= s <= high for s in sizes[:-1]), (sizes, low, high)


def _fixed_csv(directory: Path, count: int, size: int) -> None:
    """``count`` CSV files of exactly ``size`` bytes, modified a second apart."""
    directory.mkdir()
    for n in range(count):
        lines = ["id,name"]
        body = len(lines[0]) + 1
        row = 0
        while body + 24 <= size:
            start = n * 10_000 + row
            line = f"{start},{'x' * (22 - len(str(start)))}"
            lines.append(line)
            body += len(line) + 1
            row += 1
        lines[-1] += "y" * (size - body)
        path = directory / f"f{n}.csv"
        path.write_text("\n".join(lines) + "\n")
        assert path.stat().st_size == size
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))


def test_csv_files_are_grouped_up_to_the_target_file_size(cluster: Cluster, tmp_path: Path) -> None:
    from tap_dativo_csv.reader import CsvReader

    _fixed_csv(tmp_path / "in", 6, 8000)
    source = {"files": [{"stream": "items", "path": str(tmp_path / "in" / "*.csv")}]}
    # 20,971 bytes: two 8,000-byte files fit, a third does not.
    target = {"path": str(tmp_path / "out"), "target_file_size_mb": 0.02}
    result = run_with_ray(CsvReader, ParquetWriter, source_config=source, destination_config=target)
    assert [t.partition for t in result.tasks] == [
        "f0.csv .. f1.csv (2 files)",
        "f2.csv .. f3.csv (2 files)",
        "f4.csv .. f5.csv (2 files)",
    ]
    ids = _rows(tmp_path / "out" / "items").column("id").to_pylist()
    per_file = len(ids) // 6
    assert ids == sorted(n * 10_000 + r for n in range(6) for r in range(per_file))
    assert result.state["bookmarks"]["items"]["replication_key_value"].startswith(
        "2023-11-14T22:13:25"
    )  # the newest file's


def _csv_project(tmp_path: Path, files: int) -> Path:
    from tests.e2e.helpers import write_project

    tmp_path.mkdir(exist_ok=True)
    _fixed_csv(tmp_path / "in", files, 8000)
    return write_project(
        tmp_path,
        [
            {
                "name": "tap-dativo-csv",
                "config": {"files": [{"stream": "items", "path": str(tmp_path / "in" / "*.csv")}]},
            }
        ],
        # below one file's size: a partition (task) per file
        [
            {
                "name": "target-dativo-parquet",
                "config": {"path": str(tmp_path / "out"), "target_file_size_mb": 0.005},
            }
        ],
    )


def test_the_progress_lines_carry_tasks_done_and_total(cluster: Cluster, tmp_path: Path) -> None:
    import json

    from tests.e2e.helpers import dativo_run

    args = ["--engine", "ray", "--ray-address", cluster.address, "--progress-interval", "0.1"]
    project = _csv_project(tmp_path / "json", 4)
    done = dativo_run(
        project, "tap-dativo-csv", "target-dativo-parquet", *args, "--log-format", "json"
    )
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    progress = [r for r in records if r["message"].startswith("progress: ray tasks")]
    assert progress, done.stderr[-3000:]
    assert all(0 <= r["tasks_done"] <= r["tasks_total"] for r in progress)
    assert (progress[-1]["tasks_done"], progress[-1]["tasks_total"]) == (4, 4)
    assert progress[-1]["message"].startswith("progress: ray tasks 4/4 done")

    project = _csv_project(tmp_path / "text", 4)
    text = dativo_run(project, "tap-dativo-csv", "target-dativo-parquet", *args)
    assert "progress: ray tasks 4/4 done" in text.stderr, text.stderr[-3000:]


def test_on_a_terminal_the_live_display_shows_tasks_done_and_total(
    cluster: Cluster, tmp_path: Path
) -> None:
    import pty

    from tests.e2e.helpers import env, script

    project = _csv_project(tmp_path, 3)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            script("dativo"),
            "run",
            "tap-dativo-csv",
            "target-dativo-parquet",
            "--project",
            str(project),
            "--engine",
            "ray",
            "--ray-address",
            cluster.address,
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=project.parent,
        env={**env(), "COLUMNS": "200", "TERM": "xterm"},
    )
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while chunk := os.read(leader, 65536):
            seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")[-3000:]
    assert b"progress: ray tasks 3/3 done" in seen, seen.decode(errors="replace")[-3000:]


def test_log_based_streams_and_views_are_refused_with_the_local_engine_named(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.recent AS SELECT id FROM {SCHEMA}.events")
    try:
        log_based = {STREAM: {"replication-method": "LOG_BASED"}}
        with pytest.raises(ConfigError, match="not LOG_BASED; use the local engine"):
            run_with_ray(
                PostgresReader,
                ParquetWriter,
                source_config=_source(events),
                destination_config={"path": str(tmp_path / "out")},
                select=[f"{STREAM}.*"],
                metadata=log_based,
            )
        with pytest.raises(ConfigError, match="is a view: partitions need a table"):
            run_with_ray(
                PostgresReader,
                ParquetWriter,
                source_config=_source(events),
                destination_config={"path": str(tmp_path / "out")},
                select=[f"{SCHEMA}-recent.*"],
            )
    finally:  # the module's other tests read every table of the schema
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP VIEW {SCHEMA}.recent")
    assert _visible(tmp_path / "out") == [] and _hidden(tmp_path / "out") == []


def test_on_s3_the_tasks_files_are_published_and_no_in_progress_object_is_left(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    import boto3

    from .s3server import CREDENTIALS, new_bucket, s3_endpoint

    bucket = new_bucket("dativo-ray-pq")
    target = {"path": f"s3://{bucket}/lake", "endpoint_url": s3_endpoint(), **CREDENTIALS}
    marker = tmp_path / "failed-once"

    class Flaky(PartitionedPostgresReader):
        """Partition 1 fails once after its first batch (a file is being written)."""

        def read_partition(self, partition: Partition) -> Iterator[Any]:
            batches = iter(super().read_partition(partition))
            if partition.index != 1 or marker.exists():
                yield from batches
                return
            yield next(batches)
            marker.write_text("failed once")
            raise RuntimeError("partition 1 fails on its first attempt")

    result = run_with_ray(
        Flaky, ParquetWriter, source_config=_source(events), destination_config=target
    )
    assert marker.exists()
    assert result.rows == ROWS
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if k.endswith(".inprogress")], keys
    published = {f"s3://{bucket}/{k}" for k in keys}
    assert published == {f for t in result.tasks for f in t.files}, (published, result.tasks)
    ids: list[int] = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        ids += pq.read_table(pa.BufferReader(body)).column("id").to_pylist()
    assert sorted(ids) == list(range(1, ROWS + 1))


def test_on_s3_a_killed_tasks_upload_is_aborted_and_a_live_runs_upload_stays(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    import uuid

    import boto3

    from dativo_bridge.ownership import HOST_TAG

    from .s3server import CREDENTIALS, new_bucket, s3_endpoint

    bucket = new_bucket("dativo-ray-pq-mpu")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )

    def uploads() -> set[str]:
        listed = client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []
        return {str(u["Key"]) for u in listed}

    marker = tmp_path / "killed"

    class Dying(PartitionedPostgresReader):
        """Partition 1 kills its own worker (SIGKILL) on its first attempt, mid-upload."""

        def read_partition(self, partition: Partition) -> Iterator[Any]:
            batches = iter(super().read_partition(partition))
            if partition.index != 1 or marker.exists():
                yield from batches
                return
            yield next(batches)
            yield next(batches)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    live_writer = subprocess.Popen(["sleep", "120"])  # another run, still writing
    try:
        run = f"{uuid.uuid4().hex[:8]}-{live_writer.pid}-{HOST_TAG}"
        live = f"lake/{STREAM}/.part-{run}-00001.parquet.inprogress"
        client.create_multipart_upload(Bucket=bucket, Key=live)
        target = {"path": f"s3://{bucket}/lake", "endpoint_url": s3_endpoint(), **CREDENTIALS}
        result = run_with_ray(
            Dying,
            ParquetWriter,
            source_config=_source(events, batch_size_bytes=32 * 1024),
            destination_config=target,
        )
        assert marker.exists()  # a worker died in the middle of its file's upload
        assert result.rows == ROWS
        assert uploads() == {live}  # the killed attempt's upload is aborted, not the other
    finally:
        live_writer.kill()
        live_writer.wait()


def test_a_worker_killed_mid_task_is_retried_and_leaves_no_hidden_file(
    cluster: Cluster, events: str, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"

    class Dying(PartitionedPostgresReader):
        """Partition 1 kills its own worker (SIGKILL) on its first attempt, mid-file."""

        def read_partition(self, partition: Partition) -> Iterator[Any]:
            batches = iter(super().read_partition(partition))
            if partition.index != 1 or marker.exists():
                yield from batches
                return
            yield next(batches)
            yield next(batches)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    target = {"path": str(tmp_path / "out"), "target_file_size_mb": 0.05}
    result = run_with_ray(
        Dying,
        ParquetWriter,
        source_config=_source(events, batch_size_bytes=32 * 1024),
        destination_config=target,
    )
    assert marker.exists()  # a worker did die in the middle of partition 1
    assert result.rows == ROWS
    ids = _rows(tmp_path / "out" / STREAM).column("id").to_pylist()
    assert ids == list(range(1, ROWS + 1))
    assert _hidden(tmp_path / "out") == []


def test_overwrite_replaces_no_folder_when_a_later_stream_fails(
    cluster: Cluster, tmp_path: Path
) -> None:
    schema = SCHEMA + "_two"
    fresh_schema(schema)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        for name in ("a_first", "b_second"):
            conn.execute(f"CREATE TABLE {schema}.{name} (id bigint PRIMARY KEY)")
            conn.execute(f"INSERT INTO {schema}.{name} SELECT generate_series(1, 500)")
    out = tmp_path / "out"
    for name in ("a_first", "b_second"):
        (out / f"{schema}-{name}").mkdir(parents=True)
        pq.write_table(pa.table({"id": [-1]}), out / f"{schema}-{name}" / "part-old.parquet")

    class SecondFails(PartitionedPostgresReader):
        def read_partition(self, partition: Partition) -> Iterator[Any]:
            if partition.stream.name.endswith("b_second"):
                raise RuntimeError("the second stream fails")
            yield from super().read_partition(partition)

    source = {"dsn": pg_dsn(), "filter_schemas": [schema]}
    target = {"path": str(out), "load_method": "overwrite"}
    with pytest.raises(Exception, match="the second stream fails"):
        run_with_ray(
            SecondFails,
            ParquetWriter,
            source_config=source,
            destination_config=target,
            max_retries=0,
        )
    for name in ("a_first", "b_second"):  # both folders as they were: the old file only
        assert _visible(out / f"{schema}-{name}") == [out / f"{schema}-{name}" / "part-old.parquet"]
    assert _hidden(out) == []  # the first stream's staged folder is gone
