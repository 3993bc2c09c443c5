"""target-dativo-iceberg: singer-sdk's target suite, upserts, checkpoints as snapshots with
the STATE they make durable, concurrent commits, and exactly-once resumption from
PostgreSQL under repeated SIGKILLs."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from singer_sdk.testing import get_target_test_class

from dativo_bridge.errors import WriteError
from dativo_bridge.interfaces import StreamInfo
from target_dativo_iceberg.target import TargetDativoIceberg
from target_dativo_iceberg.writer import STATE_PROPERTY, IcebergWriter, open_catalog
from tests.e2e.helpers import env, script, write_project

from .postgres.server import fresh_schema, pg_dsn

TestTargetDativoIceberg = get_target_test_class(
    TargetDativoIceberg, config={"warehouse": tempfile.mkdtemp(prefix="dativo-ice-suite-")}
)


def _lines(*messages: dict[str, Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


SCHEMA = {
    "type": "SCHEMA",
    "stream": "users",
    "key_properties": ["id"],
    "schema": {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}},
}


def _record(i: int, name: str) -> dict[str, Any]:
    return {"type": "RECORD", "stream": "users", "record": {"id": i, "name": name}}


def test_upsert_replaces_rows_by_key(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "upsert"}
    TargetDativoIceberg(config=config).listen(
        _lines(SCHEMA, _record(1, "ada"), _record(2, "grace"), _record(3, "edsger"))
    )
    TargetDativoIceberg(config=config).listen(
        _lines(
            SCHEMA, _record(2, "grace hopper"), _record(4, "barbara"), _record(2, "rear admiral")
        )
    )
    table = open_catalog(config).load_table("singer.users").scan().to_arrow().sort_by("id")
    assert table.to_pylist() == [
        {"id": 1, "name": "ada"},
        {"id": 2, "name": "rear admiral"},
        {"id": 3, "name": "edsger"},
        {"id": 4, "name": "barbara"},
    ]


def test_overwrite_replaces_the_table(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _record(1, "a"), _record(2, "b")))
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _record(3, "c")))
    table = open_catalog(config).load_table("singer.users").scan().to_arrow()
    assert table.to_pylist() == [{"id": 3, "name": "c"}]


def test_one_snapshot_per_checkpoint_carrying_its_state(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "checkpoint_rows": 3}
    messages: list[dict[str, Any]] = [SCHEMA]
    for i in range(1, 11):
        messages.append(_record(i, f"u{i}"))
        messages.append(
            {
                "type": "STATE",
                "value": {
                    "bookmarks": {"users": {"replication_key": "id", "replication_key_value": i}}
                },
            }
        )
    TargetDativoIceberg(config=config).listen(_lines(*messages))
    table = open_catalog(config).load_table("singer.users")
    snapshots = table.snapshots()
    # Commits after rows 3, 6, 9 (checkpoint) and at the end of input (10).
    assert len(snapshots) == 4
    states = [json.loads(s.summary.additional_properties[STATE_PROPERTY]) for s in snapshots]
    assert [s["bookmarks"]["users"]["replication_key_value"] for s in states] == [3, 6, 9, 10]
    assert table.scan().to_arrow().num_rows == 10
    assert IcebergWriter.recover_state(config) == {
        "bookmarks": {"users": {"replication_key": "id", "replication_key_value": 10}}
    }


def test_concurrent_commits_to_one_table_both_land(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])
    stream = StreamInfo("users", schema, ("id",))
    first, second = IcebergWriter(), IcebergWriter()
    first.open(config, stream)
    second.open(config, stream)  # both hold the same table metadata
    first.write(pa.record_batch([pa.array([1, 2]), pa.array(["a", "b"])], schema=schema))
    second.write(pa.record_batch([pa.array([3]), pa.array(["c"])], schema=schema))
    first.commit()
    second.commit()  # stale metadata: the catalog refuses, the writer refreshes and retries
    rows = open_catalog(config).load_table("singer.users").scan().to_arrow()
    assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]


def test_incompatible_schema_change_names_the_column(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _record(1, "a")))
    changed = {
        **SCHEMA,
        "schema": {"properties": {"id": {"type": "integer"}, "name": {"type": "boolean"}}},
    }
    flag = {"type": "RECORD", "stream": "users", "record": {"id": 2, "name": True}}
    with pytest.raises(WriteError, match=r"users.*name"):
        TargetDativoIceberg(config=config).listen(_lines(changed, flag))


def test_postgres_to_iceberg_exactly_once_under_repeated_kills(tmp_path: Path) -> None:
    """SIGKILL a `dativo run` at random moments 20 times, resuming each time: every source
    row ends up in the table exactly once, with its values."""
    fresh_schema("dativo_once")
    rows = 60_000
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE dativo_once.orders (id bigint PRIMARY KEY, "
            "updated_at timestamptz NOT NULL, amount numeric(12,2), note text)"
        )
        conn.execute(f"""INSERT INTO dativo_once.orders
            SELECT g, timestamptz '2026-01-01' + (g / 3) * interval '1 second',
                   (g % 1000) / 100.0, repeat('n', g % 50)
            FROM generate_series(1, {rows}) g""")
    warehouse = tmp_path / "warehouse"
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-dativo-postgres",
                "config": {
                    "dsn": pg_dsn(),
                    "filter_schemas": ["dativo_once"],
                    "batch_size_bytes": 64 * 1024,
                },
                "metadata": {
                    "dativo_once-orders": {
                        "replication-method": "INCREMENTAL",
                        "replication-key": "updated_at",
                    }
                },
            }
        ],
        [{"name": "target-dativo-iceberg", "config": {"warehouse": str(warehouse)}}],
    )
    command = [
        script("dativo"),
        "run",
        "tap-dativo-postgres",
        "target-dativo-iceberg",
        "--project",
        str(project),
        "--checkpoint-rows",
        "3000",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    rng = random.Random(42)
    kills = 0
    finished = False
    while not finished:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if kills < 20:
            time.sleep(rng.uniform(0.3, 2.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, stderr = proc.communicate(timeout=300)
        if proc.returncode == 0:
            finished = kills >= 20
        elif proc.returncode != -signal.SIGKILL:
            raise AssertionError(f"run failed: {stderr.decode()[-3000:]}")
    assert kills == 20
    table = (
        open_catalog({"warehouse": str(warehouse)})
        .load_table("singer.dativo_once_orders")
        .scan()
        .to_arrow()
    )
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == rows, "rows lost or duplicated"
    with psycopg.connect(pg_dsn()) as conn:
        source = conn.execute(
            "SELECT id, amount, note FROM dativo_once.orders ORDER BY id"
        ).fetchall()
    landed = table.sort_by("id").select(["id", "amount", "note"]).to_pylist()
    assert [(r["id"], r["amount"], r["note"]) for r in landed] == source
