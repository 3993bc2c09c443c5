"""target-dativo-iceberg applies change streams (issue 18): ``load_method: upsert`` with
``hard_delete`` true removes deleted keys, false keeps them soft-deleted with their last
known values; the last change per key wins (by ``_sdc_lsn``); only the data files holding
changed keys are rewritten, in one snapshot carrying the state; a kill -9 in the middle
of a commit leaves the previous snapshot and a rerun converges; a column added mid-stream
evolves the table. target-dativo-parquet appends the change log as rows."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.interfaces import StreamInfo
from target_dativo_iceberg.target import TargetDativoIceberg
from target_dativo_iceberg.writer import STATE_PROPERTY, IcebergWriter, open_catalog
from target_dativo_parquet.target import TargetDativoParquet
from target_dativo_s3.target import TargetDativoS3

DELETED = "2026-12-01T10:00:00+00:00"

SCHEMA: dict[str, Any] = {
    "type": "SCHEMA",
    "stream": "users",
    "key_properties": ["id"],
    "schema": {
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": ["string", "null"]},
            "score": {"type": ["integer", "null"]},
            "_sdc_lsn": {"type": ["integer", "null"]},
            "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
        }
    },
}


def _lines(*messages: dict[str, Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def _row(key: int, name: str | None, score: int | None, lsn: int) -> dict[str, Any]:
    record = {"id": key, "name": name, "score": score, "_sdc_lsn": lsn, "_sdc_deleted_at": None}
    return {"type": "RECORD", "stream": "users", "record": record}


def _delete(key: int, lsn: int, at: str = DELETED) -> dict[str, Any]:
    record = {"id": key, "name": None, "score": None, "_sdc_lsn": lsn, "_sdc_deleted_at": at}
    return {"type": "RECORD", "stream": "users", "record": record}


def _state(lsn: int) -> dict[str, Any]:
    bookmark = {"replication_key": "_sdc_lsn", "replication_key_value": lsn}
    return {"type": "STATE", "value": {"bookmarks": {"users": bookmark}}}


def _config(tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"warehouse": str(tmp_path / "warehouse"), "load_method": "upsert", **more}


def _table(config: dict[str, Any]) -> Any:
    return open_catalog(config).load_table("singer.users")


def _rows(config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The table as (id, name, score, lsn, deleted_at as ISO text or None), by id."""
    rows = _table(config).scan().to_arrow().sort_by("id").to_pylist()
    return [
        (
            r["id"],
            r["name"],
            r["score"],
            r["_sdc_lsn"],
            r["_sdc_deleted_at"].isoformat() if r["_sdc_deleted_at"] else None,
        )
        for r in rows
    ]


def _seed(config: dict[str, Any], count: int = 5) -> None:
    rows = [_row(i, f"n{i}", i * 10, i) for i in range(1, count + 1)]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *rows, _state(count)))


def test_hard_delete_applies_inserts_updates_and_deletes(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    _seed(config)
    changes = [
        _row(2, "two", 21, 10),  # update
        _delete(3, 11),  # delete of a row the table holds
        _row(6, "six", 60, 12),  # insert
        _delete(99, 13),  # delete of a key never seen
        _row(7, "seven", 70, 14),
        _delete(7, 15),  # inserted and deleted in one commit
    ]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes, _state(15)))
    assert _rows(config) == [
        (1, "n1", 10, 1, None),
        (2, "two", 21, 10, None),
        (4, "n4", 40, 4, None),
        (5, "n5", 50, 5, None),
        (6, "six", 60, 12, None),
    ]


def test_soft_delete_keeps_the_last_known_values(tmp_path: Path) -> None:
    config = _config(tmp_path)  # hard_delete false: singer-sdk's default
    _seed(config)
    changes = [
        _delete(3, 11),  # values from the table
        _row(7, "seven", 70, 14),
        _delete(7, 15),  # values from the earlier change of this commit
        _delete(99, 16),  # nothing known: the key and the delete only
        _row(2, "two", 21, 17),
    ]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes, _state(17)))
    assert _rows(config) == [
        (1, "n1", 10, 1, None),
        (2, "two", 21, 17, None),
        (3, "n3", 30, 11, DELETED),
        (4, "n4", 40, 4, None),
        (5, "n5", 50, 5, None),
        (7, "seven", 70, 15, DELETED),
        (99, None, None, 16, DELETED),
    ]
    # A later delete of a soft-deleted row keeps its values, with the new delete time.
    later = "2026-12-01T11:00:00+00:00"
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _delete(3, 20, later)))
    assert _rows(config)[2] == (3, "n3", 30, 20, later)
    # Updated to a null name, then deleted, in one commit: the null is the last known name.
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _row(4, None, 44, 30), _delete(4, 31)))
    assert _rows(config)[3] == (4, None, 44, 31, DELETED)


@pytest.mark.parametrize("hard", [True, False])
def test_delete_then_reinsert_in_one_commit_ends_present(tmp_path: Path, hard: bool) -> None:
    config = _config(tmp_path, hard_delete=hard)
    _seed(config)
    changes = [_delete(2, 10), _row(2, "again", 22, 11), _delete(4, 12), _row(4, "back", 44, 13)]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes))
    rows = _rows(config)
    assert rows[1] == (2, "again", 22, 11, None)
    assert rows[3] == (4, "back", 44, 13, None)
    assert len(rows) == 5


def test_last_change_per_key_wins_by_lsn_then_arrival(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    _seed(config)
    changes = [
        _row(1, "newest", 1, 30),  # arrives first, highest LSN: wins
        _row(1, "older", 2, 20),
        _delete(2, 25),
        _row(2, "before the delete", 3, 24),  # lower LSN than the delete: deleted
        _row(3, "first", 4, 40),
        _row(3, "second", 5, 40),  # same LSN (one transaction): arrival order
        _row(5, "a", 6, 50),
        _delete(5, 40),  # an older delete: the update at 50 wins
    ]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes))
    assert _rows(config) == [
        (1, "newest", 1, 30, None),
        (3, "second", 5, 40, None),
        (4, "n4", 40, 4, None),
        (5, "a", 6, 50, None),
    ]


def test_without_lsn_arrival_order_wins(tmp_path: Path) -> None:
    schema = {**SCHEMA, "schema": {"properties": {"id": {"type": "integer"}, "v": {}}}}
    schema["schema"]["properties"]["v"] = {"type": ["string", "null"]}
    config = _config(tmp_path)
    records = [
        {"type": "RECORD", "stream": "users", "record": {"id": i % 3, "v": f"v{i}"}}
        for i in range(9)
    ]
    TargetDativoIceberg(config=config).listen(_lines(schema, *records))
    rows = _table(config).scan().to_arrow().sort_by("id").to_pylist()
    assert rows == [{"id": 0, "v": "v6"}, {"id": 1, "v": "v7"}, {"id": 2, "v": "v8"}]


def test_only_files_holding_changed_keys_are_rewritten(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    # Four commits, four files with disjoint key ranges: 1-100, 101-200, ...
    for part in range(4):
        rows = [_row(i, f"n{i}", i, i) for i in range(part * 100 + 1, part * 100 + 101)]
        TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *rows, _state(part * 100 + 100)))
    table = _table(config)
    before = set(table.inspect.files().column("file_path").to_pylist())
    assert len(before) == 4
    changes = [_row(150, "changed", -1, 1000), _delete(160, 1001), _row(500, "new", 5, 1002)]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes, _state(1002)))
    table = _table(config)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    summary = snapshot.summary.additional_properties
    assert snapshot.summary.operation.value == "overwrite"
    assert summary["deleted-data-files"] == "1", "only the file of keys 101-200 is rewritten"
    assert summary["deleted-records"] == "100"
    assert summary["added-records"] == "100"  # 99 kept + 1 updated (- 1 deleted) + 1 new
    after = set(table.inspect.files().column("file_path").to_pylist())
    assert len(before & after) == 3, "the three untouched files are still the table's"
    state = json.loads(summary[STATE_PROPERTY])
    assert state["bookmarks"]["users"]["replication_key_value"] == 1002
    rows = {r[0]: r for r in _rows(config)}
    assert len(rows) == 400
    assert rows[150] == (150, "changed", -1, 1000, None)
    assert 160 not in rows and rows[500] == (500, "new", 5, 1002, None)
    assert IcebergWriter.recover_state(config) == {
        "bookmarks": {"users": {"replication_key": "_sdc_lsn", "replication_key_value": 1002}}
    }


def test_composite_keys_and_a_partitioned_table(tmp_path: Path) -> None:
    schema = {
        "type": "SCHEMA",
        "stream": "users",
        "key_properties": ["tenant", "id"],
        "schema": {
            "properties": {
                "tenant": {"type": "string"},
                "id": {"type": "integer"},
                "v": {"type": ["integer", "null"]},
                "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
            }
        },
    }
    config = _config(
        tmp_path, hard_delete=True, partition_by=[{"column": "tenant", "transform": "identity"}]
    )

    def rec(tenant: str, key: int, v: int | None, deleted: str | None = None) -> dict[str, Any]:
        record = {"tenant": tenant, "id": key, "v": v, "_sdc_deleted_at": deleted}
        return {"type": "RECORD", "stream": "users", "record": record}

    seed = [rec(t, i, i) for t in ("a", "b", "c") for i in range(1, 4)]
    TargetDativoIceberg(config=config).listen(_lines(schema, *seed))
    changes = [rec("b", 2, 200), rec("b", 3, None, DELETED), rec("a", 9, 9), rec("c", 3, None)]
    TargetDativoIceberg(config=config).listen(_lines(schema, *changes))
    table = _table(config)
    rows = table.scan().to_arrow().sort_by([("tenant", "ascending"), ("id", "ascending")])
    got = [(r["tenant"], r["id"], r["v"]) for r in rows.to_pylist()]
    assert got == [
        ("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 9, 9),
        ("b", 1, 1), ("b", 2, 200),
        ("c", 1, 1), ("c", 2, 2), ("c", 3, None),
    ]  # fmt: skip
    snapshot = table.current_snapshot()
    assert snapshot is not None
    # a (new key only) is appended; b and c each rewrite their one file.
    assert snapshot.summary.additional_properties["deleted-data-files"] == "2"
    paths = table.inspect.files().column("partition").to_pylist()
    assert sorted(p["tenant_identity"] for p in paths) == ["a", "a", "b", "c"]


def test_a_column_added_mid_stream_evolves_the_table(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    _seed(config)
    wider = json.loads(json.dumps(SCHEMA))
    wider["schema"]["properties"]["email"] = {"type": ["string", "null"]}
    record = _row(6, "six", 60, 20)
    record["record"]["email"] = "six@example.com"
    update = _row(2, "two", 21, 21)
    update["record"]["email"] = "two@example.com"
    messages = [_row(1, "one", 11, 10), wider, record, update, _delete(4, 22)]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *messages))
    table = _table(config)
    assert "email" in table.schema().column_names
    rows = table.scan().to_arrow().sort_by("id").to_pylist()
    assert [(r["id"], r["name"], r["email"]) for r in rows] == [
        (1, "one", None),
        (2, "two", "two@example.com"),
        (3, "n3", None),
        (5, "n5", None),
        (6, "six", "six@example.com"),
    ]


def test_append_takes_a_column_added_mid_stream(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path / "warehouse")}
    wider = json.loads(json.dumps(SCHEMA))
    wider["schema"]["properties"]["email"] = {"type": ["string", "null"]}
    record = _row(2, "b", 2, 2)
    record["record"]["email"] = "b@example.com"
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _row(1, "a", 1, 1), wider, record))
    rows = _table(config).scan().to_arrow().sort_by("id").to_pylist()
    assert [(r["id"], r["email"]) for r in rows] == [(1, None), (2, "b@example.com")]


_KILL_IN_COMMIT = textwrap.dedent(
    """
    import io, json, os, signal, sys
    from pyiceberg.table import Transaction
    from pyiceberg.table.update import AddSnapshotUpdate
    from target_dativo_iceberg.target import TargetDativoIceberg

    commit = Transaction.commit_transaction

    def die(self):  # SIGKILL at the commit of a snapshot: its files are written
        if any(isinstance(update, AddSnapshotUpdate) for update in self._updates):
            os.kill(os.getpid(), signal.SIGKILL)
        return commit(self)

    if sys.argv[2] == "kill":
        Transaction.commit_transaction = die
    config = json.loads(sys.argv[1])
    TargetDativoIceberg(config=config).listen(io.StringIO(sys.stdin.read()))
    """
)


def test_kill_9_in_the_middle_of_a_commit_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    for part in range(3):
        rows = [_row(i, f"n{i}", i, i) for i in range(part * 50 + 1, part * 50 + 51)]
        TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *rows, _state(part * 50 + 50)))
    table = _table(config)
    before_snapshot = table.current_snapshot()
    assert before_snapshot is not None
    before_rows = _rows(config)
    data = Path(config["warehouse"]) / "singer" / "users" / "data"
    before_files = set(data.glob("*.parquet"))
    changes = [_row(10, "ten", -10, 500), _delete(60, 501), _row(200, "new", 2, 502)]
    text = _lines(SCHEMA, *changes, _state(502)).getvalue()

    def target(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _KILL_IN_COMMIT, json.dumps(config), mode],
            input=text,
            capture_output=True,
            text=True,
            timeout=120,
        )

    killed = target("kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = set(data.glob("*.parquet")) - before_files
    assert left, "the killed commit had written its rewritten files"
    table = _table(config)
    current = table.current_snapshot()
    assert current is not None and current.snapshot_id == before_snapshot.snapshot_id
    assert _rows(config) == before_rows
    assert IcebergWriter.recover_state(config) == {
        "bookmarks": {"users": {"replication_key": "_sdc_lsn", "replication_key_value": 150}}
    }

    again = target("run")
    assert again.returncode == 0, again.stderr
    expected = [r for r in before_rows if r[0] != 60]
    expected[9] = (10, "ten", -10, 500, None)
    expected.append((200, "new", 2, 502, None))
    assert _rows(config) == expected
    assert not any(p.exists() for p in left), "the killed commit's files are removed"
    live = {Path(p).name for p in _table(config).inspect.files().column("file_path").to_pylist()}
    assert {p.name for p in data.glob("*.parquet")} >= live
    assert IcebergWriter.recover_state(config) == {
        "bookmarks": {"users": {"replication_key": "_sdc_lsn", "replication_key_value": 502}}
    }


def test_hard_delete_is_accepted_by_iceberg_upsert_only(tmp_path: Path) -> None:
    TargetDativoIceberg(config=_config(tmp_path, hard_delete=True))
    for method in ("append-only", "overwrite"):
        with pytest.raises(ConfigError, match="'hard_delete' is not supported with load_method"):
            TargetDativoIceberg(config=_config(tmp_path, hard_delete=True, load_method=method))
    with pytest.raises(ConfigError, match="needs load_method upsert"):
        TargetDativoIceberg(config={"warehouse": str(tmp_path), "hard_delete": True})


@pytest.mark.parametrize(
    ("target", "config"),
    [
        (TargetDativoParquet, {"path": "/nonexistent"}),
        (TargetDativoS3, {"bucket": "b", "key_env": "X"}),
    ],
)
def test_hard_delete_is_refused_by_targets_that_cannot_delete(
    target: type[Any], config: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match="setting 'hard_delete' is not supported"):
        target(config={**config, "hard_delete": True})


def test_parquet_appends_the_change_log_as_rows(tmp_path: Path) -> None:
    config = {"path": str(tmp_path)}
    changes = [_row(1, "a", 1, 1), _row(1, "b", 2, 2), _delete(1, 3), _row(2, "c", 3, 4)]
    TargetDativoParquet(config=config).listen(_lines(SCHEMA, *changes, _state(4)))
    rows = pq.read_table(tmp_path / "users").sort_by("_sdc_lsn").to_pylist()
    assert [(r["id"], r["name"], r["_sdc_lsn"]) for r in rows] == [
        (1, "a", 1),
        (1, "b", 2),
        (1, None, 3),
        (2, "c", 4),
    ]
    assert [r["_sdc_deleted_at"].isoformat() if r["_sdc_deleted_at"] else None for r in rows] == [
        None,
        None,
        DELETED,
        None,
    ]


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ({"type": "string"}, [f"a-{i:04d}" for i in range(40)]),
        (
            {"type": "string", "format": "date-time"},
            [f"2026-01-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00" for i in range(40)],
        ),
    ],
    ids=["string", "timestamp"],
)
def test_bounds_of_string_and_timestamp_keys_spare_untouched_files(
    tmp_path: Path, kind: dict[str, Any], values: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    schema = {
        "type": "SCHEMA",
        "stream": "users",
        "key_properties": ["k"],
        "schema": {"properties": {"k": kind, "v": {"type": ["integer", "null"]}}},
    }
    config = _config(tmp_path)

    def rec(key: str, v: int) -> dict[str, Any]:
        return {"type": "RECORD", "stream": "users", "record": {"k": key, "v": v}}

    for part in range(4):  # four files of ten consecutive keys each
        chunk = values[part * 10 : part * 10 + 10]
        TargetDativoIceberg(config=config).listen(_lines(schema, *(rec(k, 0) for k in chunk)))
    with caplog.at_level(logging.INFO, logger="dativo.iceberg"):
        TargetDativoIceberg(config=config).listen(_lines(schema, rec(values[25], 1)))
    # The manifests' bounds alone leave one candidate: only its key column is read.
    assert "1 of 4 data file(s) rewritten (1 by bounds)" in caplog.text
    table = _table(config)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary.additional_properties["deleted-data-files"] == "1"
    rows = table.scan().to_arrow().to_pylist()
    assert len(rows) == 40 and sum(r["v"] for r in rows) == 1


@pytest.mark.parametrize("hard", [True, False])
def test_large_files_are_rewritten_one_at_a_time(tmp_path: Path, hard: bool) -> None:
    # A 2 KB target: every file is "large", so each rewritten file's remainder is written
    # on its own as it is read, and the new rows go to files of their own.
    config = _config(tmp_path, hard_delete=hard, target_file_size_mb=0.002)
    for part in range(3):
        rows = [_row(i, f"n{i}", i, i) for i in range(part * 100 + 1, part * 100 + 101)]
        TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *rows))
    before = _rows(config)
    changes = [_delete(5, 1000), _row(7, "seven", -7, 1001), _row(250, "x", -1, 1002)]
    changes += [_row(400, "new", 4, 1003)]
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes))
    expected = {r[0]: r for r in before}
    if hard:
        del expected[5]
    else:
        expected[5] = (5, "n5", 5, 1000, DELETED)
    expected[7] = (7, "seven", -7, 1001, None)
    expected[250] = (250, "x", -1, 1002, None)
    expected[400] = (400, "new", 4, 1003, None)
    assert _rows(config) == [expected[k] for k in sorted(expected)]
    table = _table(config)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    summary = snapshot.summary.additional_properties
    assert summary["deleted-data-files"] == "2", "the files of keys 1-100 and 201-300"
    deleted_rows = int(summary["deleted-records"])
    assert deleted_rows == 200
    assert int(summary["added-records"]) == len(expected) - 100  # all but the untouched file


def test_small_files_are_merged_into_files_of_the_target_size(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    for part in range(8):
        rows = [_row(i, f"n{i}", i, i) for i in range(part * 100 + 1, part * 100 + 101)]
        TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *rows))
    sizes = _table(config).inspect.files().column("file_size_in_bytes").to_pylist()
    # Each file is under a quarter of the target; five of them reach it.
    target = 4.5 * max(sizes)
    assert max(sizes) * 4 < target <= 5 * min(sizes)
    changes = [_row(part * 100 + 50, "changed", 0, 1000 + part) for part in range(8)]
    config["target_file_size_mb"] = target / 2**20
    TargetDativoIceberg(config=config).listen(_lines(SCHEMA, *changes))
    table = _table(config)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    summary = snapshot.summary.additional_properties
    assert summary["deleted-data-files"] == "8"
    assert summary["added-data-files"] == "2", "8 small files merged: 5, then 3 + the changes"
    rows = {r[0]: r for r in _rows(config)}
    assert len(rows) == 800
    assert all(rows[p * 100 + 50] == (p * 100 + 50, "changed", 0, 1000 + p, None) for p in range(8))
    # Files are merged in key order: the first holds the five lowest files' rows; the last
    # the other three files' rows and the changed rows (keys 50, 150, ... 750).
    metrics = table.inspect.files().column("readable_metrics").to_pylist()
    ranges = sorted((m["id"]["lower_bound"], m["id"]["upper_bound"]) for m in metrics)
    assert ranges == [(1, 500), (50, 800)]


def test_a_log_based_stream_with_nullable_keys_gets_identifier_fields(tmp_path: Path) -> None:
    # tap-dativo-postgres LOG_BASED declares every column nullable (a delete carries only
    # the key): the table's identifier fields are still the keys, required.
    stamp = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("_sdc_lsn", pa.int64()),
            ("_sdc_deleted_at", stamp),
        ]
    )
    config = _config(tmp_path, hard_delete=True)
    stream = StreamInfo("users", schema, ("id",), "_sdc_lsn", "LOG_BASED")

    def batch(ids: list[int | None], deleted: bool = False) -> pa.RecordBatch:
        n = len(ids)
        at = pa.array([0 if deleted else None] * n, pa.int64()).cast(stamp)
        names = pa.array([None if deleted else f"n{i}" for i in ids], pa.string())
        lsns = pa.array([7] * n, pa.int64())
        return pa.record_batch([pa.array(ids, pa.int64()), names, lsns, at], schema=schema)

    writer = IcebergWriter()
    writer.open(config, stream)
    writer.write(batch([1, 2, 3]))
    writer.commit()
    writer.write(batch([2], deleted=True))
    writer.commit()
    with pytest.raises(WriteError, match="key property 'id' is null"):
        writer.write(batch([4, None]))
    writer.close()
    table = _table(config)
    assert table.schema().identifier_field_names() == {"id"}
    assert table.scan().to_arrow().sort_by("id").column("name").to_pylist() == ["n1", "n3"]


def test_a_singer_change_stream_with_a_nullable_key_gets_identifier_fields(tmp_path: Path) -> None:
    schema = json.loads(json.dumps(SCHEMA))
    schema["schema"]["properties"]["id"] = {"type": ["integer", "null"]}
    config = _config(tmp_path, hard_delete=True)
    TargetDativoIceberg(config=config).listen(_lines(schema, _row(1, "a", 1, 1), _delete(1, 2)))
    TargetDativoIceberg(config=config).listen(_lines(schema, _row(2, "b", 2, 3)))
    assert _rows(config) == [(2, "b", 2, 3, None)]


def test_a_partition_transform_that_needs_pyiceberg_core_is_refused_at_open(
    tmp_path: Path,
) -> None:
    try:
        import pyiceberg_core  # noqa: F401  (installed: every transform can be written)
    except ImportError:
        pass
    else:
        pytest.skip("pyiceberg-core is installed")
    config = _config(tmp_path, partition_by=[{"column": "id", "transform": "truncate[10]"}])
    with pytest.raises(ConfigError, match=r"truncate\[10\] of 'id'.*pyiceberg-core"):
        TargetDativoIceberg(config=config).listen(_lines(SCHEMA, _row(1, "a", 1, 1)))


def test_a_conflicting_commit_is_planned_again_on_the_new_snapshot(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    _seed(config)
    stamp = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            ("name", pa.string()),
            ("score", pa.int64()),
            ("_sdc_lsn", pa.int64()),
            ("_sdc_deleted_at", stamp),
        ]
    )
    stream = StreamInfo("users", schema, ("id",))

    def batch(key: int, name: str | None, lsn: int, deleted: bool = False) -> pa.RecordBatch:
        at = pa.array([0 if deleted else None], pa.int64()).cast(stamp)
        return pa.record_batch(
            [pa.array([key]), pa.array([name]), pa.array([lsn]), pa.array([lsn]), at],
            schema=schema,
        )

    first, second = IcebergWriter(), IcebergWriter()
    first.open(config, stream)
    second.open(config, stream)  # both hold the same table metadata
    first.write(batch(1, "first", 10))
    first.write(batch(2, None, 11, deleted=True))
    second.write(batch(1, "second", 12))
    second.write(batch(3, "third", 13))
    first.commit()
    second.commit()  # stale: refused by the catalog, planned again on first's snapshot
    first.close()
    second.close()
    assert _rows(config) == [
        (1, "second", 12, 12, None),
        (3, "third", 13, 13, None),
        (4, "n4", 40, 4, None),
        (5, "n5", 50, 5, None),
    ]
    data = Path(config["warehouse"]) / "singer" / "users" / "data"
    referenced = _table(config).inspect.all_files().column("file_path").to_pylist()
    assert {p.name for p in data.glob("*.parquet")} == {Path(p).name for p in referenced}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_random_change_logs_match_a_model(tmp_path: Path, seed: int, hard: bool) -> None:
    """Random inserts, updates (some to null) and deletes over few keys, shuffled within
    each commit (the LSN orders them), in commits of random sizes into files of random
    target sizes: the table is the model's state after every commit."""
    rng = random.Random(seed)
    stamp = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            ("name", pa.string()),
            ("score", pa.int64()),
            ("_sdc_lsn", pa.int64()),
            ("_sdc_deleted_at", stamp),
        ]
    )
    stream = StreamInfo("users", schema, ("id",), "_sdc_lsn", "LOG_BASED")
    config = _config(tmp_path, hard_delete=hard)
    model: dict[int, tuple[Any, ...]] = {}
    lsn = 0
    for _ in range(4):
        records = []
        for _ in range(rng.randint(1, 60)):
            lsn += 1
            key = rng.randint(1, 25)
            if rng.random() < 0.3:
                at = 1_000_000 * lsn
                records.append((key, None, None, lsn, at))
                if hard:
                    model.pop(key, None)
                else:
                    name, score = model[key][1:3] if key in model else (None, None)
                    model[key] = (key, name, score, lsn, at)
            else:
                name = None if rng.random() < 0.2 else f"v{lsn}"
                records.append((key, name, lsn, lsn, None))
                model[key] = (key, name, lsn, lsn, None)
        rng.shuffle(records)  # arrival order is not the LSN order
        columns = list(zip(*records, strict=True))
        batch = pa.record_batch(
            [
                pa.array(columns[0], pa.int64()),
                pa.array(columns[1], pa.string()),
                pa.array(columns[2], pa.int64()),
                pa.array(columns[3], pa.int64()),
                pa.array(columns[4], pa.int64()).cast(stamp),
            ],
            schema=schema,
        )
        writer = IcebergWriter()
        size = rng.choice([0.0005, 0.002, 256])  # every file large, some, or none
        writer.open({**config, "target_file_size_mb": size}, stream)
        for offset in range(0, batch.num_rows, 17):
            writer.write(batch.slice(offset, 17))
        writer.commit()
        writer.close()
        rows = _table(config).scan().to_arrow().sort_by("id").to_pylist()
        got = [
            (
                r["id"],
                r["name"],
                r["score"],
                r["_sdc_lsn"],
                int(r["_sdc_deleted_at"].timestamp() * 1_000_000) if r["_sdc_deleted_at"] else None,
            )
            for r in rows
        ]
        assert got == [model[k] for k in sorted(model)], f"after LSN {lsn}"


#: As tap-dativo-postgres LOG_BASED declares it: every column nullable, keys included.
STAMP = pa.timestamp("us", tz="UTC")
NULLABLE = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("score", pa.int64()),
        ("_sdc_lsn", pa.int64()),
        ("_sdc_deleted_at", STAMP),
    ]
)
T_DELETED = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)


def _apply(config: dict[str, Any], *rows: tuple[Any, ...]) -> None:
    """One commit of (id, name, score, lsn, deleted_at) rows through the writer (in
    process, as `dativo run` delivers them: a TRUNCATE's null key never meets the Singer
    decoder, which refuses a record without its key)."""
    writer = IcebergWriter()
    writer.open(config, StreamInfo("users", NULLABLE, ("id",), "_sdc_lsn", "LOG_BASED"))
    try:
        columns = list(zip(*rows, strict=True))
        writer.write(
            pa.record_batch(
                [pa.array(c, t) for c, t in zip(columns, NULLABLE.types, strict=True)],
                schema=NULLABLE,
            )
        )
        writer.commit()
    finally:
        writer.close()


def test_a_truncate_empties_the_table_then_later_changes_apply(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    _seed(config)
    _apply(
        config,
        (2, "before", 0, 10, None),
        (8, "gone too", 0, 11, None),
        (None, None, None, 12, T_DELETED),  # the TRUNCATE
        (3, "after", 33, 13, None),
        (4, None, None, 14, T_DELETED),
        (9, "nine", 9, 15, None),
    )
    assert _rows(config) == [(3, "after", 33, 13, None), (9, "nine", 9, 15, None)]
    snapshot = _table(config).current_snapshot()
    assert snapshot is not None
    assert snapshot.summary.additional_properties["deleted-records"] == "5"
    _apply(config, (None, None, None, 20, T_DELETED))  # a truncate alone: an empty table
    assert _rows(config) == []


def test_a_soft_truncate_marks_every_live_row_deleted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _seed(config, 3)
    earlier = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    _apply(config, (1, None, None, 5, earlier))
    # Arrival order differs from the LSN order: the TRUNCATE (12) comes second.
    _apply(
        config,
        (2, "back", 22, 13, None),
        (None, None, None, 12, T_DELETED),
        (3, None, None, 14, T_DELETED),
    )
    assert _rows(config) == [
        (1, "n1", 10, 5, earlier.isoformat()),  # deleted before: kept as it was
        (2, "back", 22, 13, None),
        (3, "n3", 30, 14, DELETED),  # truncated, then deleted: its values kept
    ]
    _apply(config, (None, None, None, 30, T_DELETED))
    assert [r[3:] for r in _rows(config)] == [
        (5, earlier.isoformat()),
        (30, DELETED),
        (14, DELETED),
    ]


def test_a_null_key_that_is_not_a_truncate_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, hard_delete=True)
    with pytest.raises(WriteError, match="key property 'id' is null"):
        _apply(config, (2, "ok", 2, 1, None), (None, "x", 1, 2, None))
    with pytest.raises(WriteError, match="key property 'id' is null"):
        _apply({"warehouse": str(tmp_path / "append")}, (None, None, None, 1, T_DELETED))
