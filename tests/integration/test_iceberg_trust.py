"""target-dativo-iceberg at its edges: overwrite publishes once at the end, two streams
never share a table, state is kept per pipeline, dead writers' files are removed, tables
are created complete, and rows re-read at the bookmark are not appended twice."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge import run
from dativo_bridge.errors import ConfigError, DecodeError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from target_dativo_iceberg.target import TargetDativoIceberg
from target_dativo_iceberg.writer import (
    STATE_ID_PROPERTY,
    STATE_PROPERTY,
    STREAM_PROPERTY,
    IcebergWriter,
    open_catalog,
)

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])
REPO = Path(__file__).resolve().parents[2]


def _batch(ids: Sequence[int]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(ids, pa.int64()), pa.array([f"n{i}" for i in ids])], SCHEMA)


def _lines(*messages: dict[str, Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def _schema_message(stream: str) -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "key_properties": ["id"],
        "schema": {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}},
    }


def _record(stream: str, i: int) -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": {"id": i, "name": f"n{i}"}}


def _state(stream: str, i: int) -> dict[str, Any]:
    return {
        "type": "STATE",
        "value": {"bookmarks": {stream: {"replication_key": "id", "replication_key_value": i}}},
    }


def _ids(config: dict[str, Any], table: str = "singer.users") -> list[int]:
    rows = open_catalog(config).load_table(table).scan().to_arrow()
    return sorted(rows.column("id").to_pylist())


def _data_files(warehouse: Path, table: str = "users") -> set[str]:
    return {p.name for p in (warehouse / "singer" / table / "data").glob("*.parquet")}


def _referenced(config: dict[str, Any], table: str = "singer.users") -> set[str]:
    files = open_catalog(config).load_table(table).inspect.all_files()
    return {os.path.basename(p) for p in files.column("file_path").to_pylist()}


# -- item 2: overwrite publishes atomically at the end of the run ----------------------------


def test_overwrite_publishes_once_in_one_snapshot_with_the_state(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    TargetDativoIceberg(config=config).listen(
        _lines(_schema_message("users"), *[_record("users", i) for i in (1, 2, 3)])
    )
    before = len(open_catalog(config).load_table("singer.users").snapshots())
    messages: list[dict[str, Any]] = [_schema_message("users")]
    for i in range(10, 20):
        messages += [_record("users", i), _state("users", i)]
    TargetDativoIceberg(config={**config, "checkpoint_rows": 2}).listen(_lines(*messages))
    table = open_catalog(config).load_table("singer.users")
    snapshots = table.snapshots()
    assert len(snapshots) == before + 1, "one snapshot for the whole overwrite run"
    props = snapshots[-1].summary.additional_properties
    assert json.loads(props[STATE_PROPERTY])["bookmarks"]["users"]["replication_key_value"] == 19
    assert _ids(config) == list(range(10, 20))


def test_overwrite_run_that_fails_midway_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    """Checkpoints are due every 2 rows, then the input breaks: nothing was published."""
    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    TargetDativoIceberg(config=config).listen(
        _lines(_schema_message("users"), *[_record("users", i) for i in (1, 2, 3)])
    )
    messages: list[dict[str, Any]] = [_schema_message("users")]
    for i in range(10, 20):
        messages += [_record("users", i), _state("users", i)]
    broken = io.StringIO(_lines(*messages).getvalue() + '{"type": "RECORD", "stream": "us\n')
    with pytest.raises(DecodeError):
        TargetDativoIceberg(config={**config, "checkpoint_rows": 2}).listen(broken)
    assert _ids(config) == [1, 2, 3]
    assert _data_files(tmp_path) == _referenced(config), "the failed run's files are deleted"


def test_overwrite_with_no_rows_replaces_and_never_twice(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    stream = StreamInfo("users", SCHEMA, ("id",))
    with IcebergWriter() as first:
        first.open({**config, "load_method": "append"}, stream)
        first.write(_batch([1, 2]))
        first.commit()
    writer = IcebergWriter()
    writer.open(config, stream)
    assert writer.publishes_at_end
    writer.stage_state({"bookmarks": {}})
    writer.commit()  # the run read an empty source: the table is emptied
    assert _ids(config) == []
    writer.write(_batch([5]))
    writer.commit()  # a second commit of the same writer appends, it never replaces again
    writer.write(_batch([6]))
    writer.commit()
    writer.close()
    assert _ids(config) == [5, 6]


def test_overwrite_starts_from_no_bookmark(tmp_path: Path) -> None:
    """An overwrite replaces the table with the whole source, so a run (and a run after a
    killed one) reads from the start, not from a bookmark an append run committed."""
    config = {"warehouse": str(tmp_path)}
    TargetDativoIceberg(config=config).listen(
        _lines(_schema_message("users"), _record("users", 1), _state("users", 1))
    )
    assert IcebergWriter.recover_state(config)["bookmarks"]["users"]  # type: ignore[index]
    overwrite = {**config, "load_method": "overwrite"}
    assert IcebergWriter.recover_state(overwrite, None) == {"bookmarks": {}}


# -- item 6: two streams never share a table ---------------------------------------------------


def test_two_streams_mapping_to_one_table_are_refused(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    with pytest.raises(ConfigError) as raised:
        TargetDativoIceberg(config=config).listen(
            _lines(
                _schema_message("a-b"),
                _record("a-b", 1),
                _schema_message("a_b"),
                _record("a_b", 2),
            )
        )
    message = str(raised.value)
    assert "'a-b'" in message and "'a_b'" in message
    assert "singer.a_b" in message and "table_names" in message
    # A later run of the other stream is refused before it writes anything.
    with pytest.raises(ConfigError, match="table_names"):
        TargetDativoIceberg(config=config).listen(_lines(_schema_message("a_b"), _record("a_b", 3)))
    assert not open_catalog(config).load_table("singer.a_b").snapshots()
    # table_names keeps them apart.
    apart = {**config, "table_names": {"a_b": "a_b_2"}}
    TargetDativoIceberg(config=apart).listen(_lines(_schema_message("a_b"), _record("a_b", 4)))
    assert _ids(config, "singer.a_b_2") == [4]


def test_a_table_from_before_the_stream_property_is_checked_by_its_snapshots(
    tmp_path: Path,
) -> None:
    config = {"warehouse": str(tmp_path)}
    catalog = open_catalog(config)
    catalog.create_namespace("singer")
    table = catalog.create_table("singer.a_b", schema=SCHEMA)
    table.append(pa.Table.from_batches([_batch([1])]), snapshot_properties={STREAM_PROPERTY: "a-b"})
    writer = IcebergWriter()
    with pytest.raises(ConfigError, match=r"'a-b' and 'a_b' both map to Iceberg table singer\.a_b"):
        writer.open(config, StreamInfo("a_b", SCHEMA, ("id",)))
    with IcebergWriter() as owner:
        owner.open(config, StreamInfo("a-b", SCHEMA))
    assert catalog.load_table("singer.a_b").properties[STREAM_PROPERTY] == "a-b"


def test_two_writers_of_one_process_for_different_streams_are_refused(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "table_names": {"left": "shared", "right": "shared"}}
    with IcebergWriter() as left:
        left.open(config, StreamInfo("left", SCHEMA, ("id",)))
        with pytest.raises(ConfigError, match="'left' and 'right'"):
            IcebergWriter().open(config, StreamInfo("right", SCHEMA, ("id",)))
        with IcebergWriter() as again:  # the same stream twice is fine (concurrent commits)
            again.open(config, StreamInfo("left", SCHEMA, ("id",)))


# -- item 10: the state in a snapshot belongs to one pipeline ---------------------------------


class _Counter(ArrowReader):
    """Rows 1..total of stream ``users``, resuming at ``id >= bookmark`` (Singer's rule)."""

    name = "tap-counter"
    config_jsonschema = {"type": "object", "properties": {"total": {"type": "integer"}}}

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("users", SCHEMA, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        start = int(bookmark) if bookmark is not None else 1
        ids = list(range(start, int(self.config["total"]) + 1))
        for lo in range(0, len(ids), 4):
            yield _batch(ids[lo : lo + 4])


def test_state_is_kept_per_pipeline(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    mine_id, other_id = (
        "dev:tap-a-to-target-dativo-iceberg",
        "dev:tap-other-to-target-dativo-iceberg",
    )

    def counter_run(state_id: str) -> int:
        source = {"total": 10}
        return run(
            _Counter,
            IcebergWriter,
            source_config=source,
            destination_config=config,
            state_id=state_id,
        ).rows

    counter_run(mine_id)
    assert counter_run(other_id) == 10, "another pipeline reads its own source from the start"
    # Each pipeline finds its own bookmark, behind the other's snapshots if need be.
    bookmark = {"bookmarks": {"users": {"replication_key": "id", "replication_key_value": 10}}}
    assert IcebergWriter.recover_state(config, mine_id) == bookmark
    assert IcebergWriter.recover_state(config, other_id) == bookmark
    assert IcebergWriter.recover_state(config, "dev:tap-third-to-target-dativo-iceberg") is None
    assert IcebergWriter.recover_state(config, None) is None, "None matches no state id only"
    snapshot = open_catalog(config).load_table("singer.users").current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.additional_properties[STATE_ID_PROPERTY] == other_id


# -- item 11: dead writers' files, tables created complete ------------------------------------


def _die_after_writing(config: dict[str, Any], commit_first: bool) -> None:
    """A child process writes data files and is SIGKILLed before committing the last."""
    code = textwrap.dedent(f"""
        import os, signal, pyarrow as pa
        from dativo_bridge.interfaces import StreamInfo
        from target_dativo_iceberg.writer import IcebergWriter
        schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])
        def batch(ids):
            return pa.record_batch([pa.array(ids, pa.int64()), pa.array(["x"] * len(ids))], schema)
        writer = IcebergWriter()
        writer.open({config!r}, StreamInfo("users", schema, ("id",)))
        if {commit_first!r}:
            writer.write(batch([100, 101]))
            writer.commit()
        writer.write(batch([200, 201]))
        writer.write(batch([202]))
        writer._finish_file()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False, timeout=120)
    assert child.returncode == -signal.SIGKILL


def test_files_a_killed_writer_left_are_deleted_by_the_next_run(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "target_file_size_mb": 0.000001}
    with IcebergWriter() as first:
        first.open(config, StreamInfo("users", SCHEMA, ("id",)))
        first.write(_batch([1, 2]))
        first.commit()
    _die_after_writing(config, commit_first=True)
    left = _data_files(tmp_path) - _referenced(config)
    assert len(left) == 2, "the killed writer left its uncommitted files"
    # A live writer's uncommitted file is never touched.
    live = IcebergWriter()
    live.open(config, StreamInfo("users", SCHEMA, ("id",)))
    live.write(_batch([7]))
    live._finish_file()
    live_files = _data_files(tmp_path) - _referenced(config) - left
    assert len(live_files) == 1
    with IcebergWriter() as nxt:
        nxt.open(config, StreamInfo("users", SCHEMA, ("id",)))
    files = _data_files(tmp_path)
    assert not (left & files), "the dead writer's uncommitted files are gone"
    assert live_files <= files, "the live writer's file is kept"
    assert _referenced(config) <= files, "committed files are kept"
    assert _ids(config) == [1, 2, 100, 101]
    live.close()
    assert _data_files(tmp_path) == _referenced(config)


def test_table_is_created_complete_in_one_step(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "partition_by": [{"column": "name"}]}
    with IcebergWriter() as writer:
        writer.open(config, StreamInfo("users", SCHEMA, ("id",)))
    table = open_catalog(config).load_table("singer.users")
    assert table.metadata.metadata_log == [], "one metadata version: created in one commit"
    assert table.schema().identifier_field_names() == {"id"}
    assert [f.name for f in table.spec().fields] == ["name_identity"]
    assert table.properties[STREAM_PROPERTY] == "users"


def test_a_half_created_table_is_repaired_and_one_with_data_refused(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "partition_by": [{"column": "name"}]}
    catalog = open_catalog(config)
    catalog.create_namespace("singer")
    catalog.create_table("singer.users", schema=SCHEMA)  # what a kill after create_table left
    with IcebergWriter() as writer:
        writer.open(config, StreamInfo("users", SCHEMA, ("id",)))
        writer.write(_batch([1, 2]))
        writer.commit()
    table = catalog.load_table("singer.users")
    assert table.schema().identifier_field_names() == {"id"}
    assert [f.name for f in table.spec().fields] == ["name_identity"]
    assert _ids(config) == [1, 2]

    catalog.create_table("singer.plain", schema=SCHEMA).append(pa.Table.from_batches([_batch([1])]))
    with pytest.raises(ConfigError, match=r"singer\.plain has identifier fields \[\]"):
        IcebergWriter().open({**config, "partition_by": []}, StreamInfo("plain", SCHEMA, ("id",)))
    with pytest.raises(ConfigError, match=r"partition spec \[\], partition_by asks"):
        IcebergWriter().open(config, StreamInfo("plain", SCHEMA))


# -- item 4: resuming at >= bookmark appends no duplicate keys ---------------------------------


DAY_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("day", pa.int64())])


class _Days(ArrowReader):
    """Rows (id, day) from the config; resumes at ``day >= bookmark`` (late rows included)."""

    name = "tap-days"
    config_jsonschema = {"type": "object", "properties": {"rows": {"type": "array"}}}

    def discover(self) -> Sequence[StreamInfo]:
        keys = ("id",) if self.config.get("keys", True) else ()
        return [StreamInfo("events", DAY_SCHEMA, keys, "day", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        rows = sorted(
            (r for r in self.config["rows"] if bookmark is None or r[1] >= bookmark),
            key=lambda r: r[1],
        )
        for lo in range(0, len(rows), 2):
            part = rows[lo : lo + 2]
            yield pa.record_batch(
                [pa.array([r[0] for r in part], pa.int64()), pa.array([r[1] for r in part])],
                DAY_SCHEMA,
            )


def _days_run(config: dict[str, Any], rows: list[tuple[int, int]], keys: bool = True) -> None:
    run(
        _Days,
        IcebergWriter,
        source_config={"rows": rows, "keys": keys},
        destination_config=config,
        state_id="dev:tap-days-to-target-dativo-iceberg",
    )


def test_rows_read_again_at_the_bookmark_are_not_appended_twice(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    first = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    _days_run(config, first)
    late = [*first, (6, 2), (7, 2), (8, 3)]  # rows 6 and 7 arrive late with day == bookmark
    _days_run(config, late)
    assert _ids(config, "singer.events") == list(range(1, 9)), "no row lost, none twice"
    _days_run(config, late)  # nothing new: the boundary group (day 3) is read and dropped
    assert _ids(config, "singer.events") == list(range(1, 9))


def test_without_keys_duplicates_are_at_most_the_boundary_group(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    first = [(1, 1), (2, 1), (3, 2), (4, 2)]
    _days_run(config, first, keys=False)
    _days_run(config, [*first, (5, 2), (6, 3)], keys=False)
    assert _ids(config, "singer.events") == [1, 2, 3, 3, 4, 4, 5, 6]


def test_upsert_resume_at_the_bookmark_has_no_duplicates(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path), "load_method": "upsert"}
    first = [(1, 1), (2, 2), (3, 2)]
    _days_run(config, first)
    _days_run(config, [*first, (4, 2)])
    assert _ids(config, "singer.events") == [1, 2, 3, 4]


STAMP_SCHEMA = pa.schema(
    [pa.field("id", pa.int64(), nullable=False), ("at", pa.timestamp("us", tz="UTC"))]
)


class _Stamps(ArrowReader):
    """Like _Days with a zoned timestamp key (the bookmark is stored as ISO text)."""

    name = "tap-stamps"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("stamps", STAMP_SCHEMA, ("id",), "at", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        start = dt.datetime.fromisoformat(bookmark) if bookmark is not None else base
        rows = [(i, base + dt.timedelta(seconds=s)) for i, s in self.config["rows"]]
        chosen = sorted((r for r in rows if r[1] >= start), key=lambda r: r[1])
        yield pa.record_batch(
            [pa.array([r[0] for r in chosen], pa.int64()), pa.array([r[1] for r in chosen])],
            STAMP_SCHEMA,
        )


def test_timestamp_bookmark_boundary_is_matched(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    first = [[1, 0], [2, 5], [3, 5]]
    for rows in (first, [*first, [4, 5], [5, 6]]):
        run(
            _Stamps,
            IcebergWriter,
            source_config={"rows": rows},
            destination_config=config,
            state_id="dev:stamps",
        )
    assert _ids(config, "singer.stamps") == [1, 2, 3, 4, 5]


def test_a_nullable_key_column_is_a_clear_error(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    with pytest.raises(ConfigError, match=r"key properties \['id'\] must be non-null"):
        IcebergWriter().open({"warehouse": str(tmp_path)}, StreamInfo("users", schema, ("id",)))


# -- full table + append is unchanged ----------------------------------------------------------


class _Full(ArrowReader):
    name = "tap-full"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("users", SCHEMA, ("id",))]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        assert bookmark is None
        yield _batch([1, 2, 3])


def test_full_table_append_appends_each_run(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path)}
    for _ in range(2):
        run(_Full, IcebergWriter, destination_config=config, state_id="dev:full")
    assert _ids(config) == [1, 1, 2, 2, 3, 3]


def test_a_first_overwrite_into_an_empty_table_shows_no_library_noise(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The first-hour issue's case: pyiceberg warns 'Delete operation did not match any
    records' when a delete matches nothing; the target's overwrite of a new (empty) table,
    and of a table emptied by an earlier overwrite, must show no such warning."""
    import warnings

    config = {"warehouse": str(tmp_path), "load_method": "overwrite"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TargetDativoIceberg(config=config).listen(_lines(_schema_message("users")))
        TargetDativoIceberg(config=config).listen(
            _lines(_schema_message("users"), _record("users", 1))
        )
        TargetDativoIceberg(config=config).listen(_lines(_schema_message("users")))
    assert [str(w.message) for w in caught] == []
    assert "did not match" not in capfd.readouterr().err
    assert _ids(config) == []


def test_data_files_hold_row_groups_larger_than_the_batches(tmp_path: Path) -> None:
    """pyarrow writes each call as a row group: without gathering, a data file's row groups
    were as small as the batches handed to the writer (a few thousand rows)."""
    import pyarrow.parquet as pq

    config = {"warehouse": str(tmp_path)}
    writer = IcebergWriter()
    writer.open(config, StreamInfo("users", SCHEMA, ("id",)))
    try:
        for lo in range(0, 20000, 500):
            writer.write(_batch(range(lo, lo + 500)))
        writer.commit()
    finally:
        writer.close()
    files = open_catalog(config).load_table("singer.users").inspect.files()
    [path] = files.column("file_path").to_pylist()
    meta = pq.read_metadata(path.removeprefix("file://"))
    assert meta.num_row_groups == 1 and meta.num_rows == 20000
    assert _ids(config) == list(range(20000))


def test_task_data_files_hold_row_groups_larger_than_the_batches(tmp_path: Path) -> None:
    """The data files the ray engine's tasks write (write_data_files) gather rows into row
    groups as the writer does (one row group per batch before)."""
    import pyarrow.parquet as pq

    from target_dativo_iceberg.files import write_data_files

    config = {"warehouse": str(tmp_path)}
    TargetDativoIceberg(config=config).listen(_lines(_schema_message("users"), _record("users", 1)))
    table = open_catalog(config).load_table("singer.users")
    schema = table.schema().as_arrow()
    batches = [
        pa.record_batch(
            [pa.array(range(lo, lo + 500), pa.int64()), pa.array([f"n{i}" for i in range(500)])],
            schema=schema,
        )
        for lo in range(0, 20000, 500)
    ]
    names = (f"{table.location()}/data/task-{i:04d}.parquet" for i in range(100))
    files, rows = write_data_files(
        table, schema, batches, names, compression="zstd", target_bytes=128 * 2**20
    )
    assert rows == 20000 and len(files) == 1
    meta = pq.read_metadata(files[0].removeprefix("file://"))
    assert meta.num_row_groups == 1 and meta.num_rows == 20000
