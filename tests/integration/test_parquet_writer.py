"""ParquetWriter behaviour: atomic visibility, size-based files, hive partitions, schema
changes, every mapped type landing in Parquet as itself."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.schema import JSON_TYPE
from target_dativo_parquet.writer import HIVE_NULL, ParquetWriter


def _visible(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def _batch(lo: int, hi: int) -> pa.RecordBatch:
    ids = list(range(lo, hi))
    return pa.record_batch(
        {
            "id": pa.array(ids, pa.int64()),
            "region": pa.array([None if i % 5 == 0 else f"r/{i % 3}" for i in ids], pa.string()),
            "text": pa.array([f"value-{i}-" + "x" * 50 for i in ids]),
        }
    )


def test_nothing_visible_until_commit_and_close_discards(tmp_path: Path) -> None:
    writer = ParquetWriter()
    writer.open({"path": str(tmp_path)}, StreamInfo("s", _batch(0, 1).schema))
    writer.write(_batch(0, 100))
    assert _visible(tmp_path) == []
    result = writer.commit()
    assert result.rows == 100 and len(result.paths) == 1
    assert _visible(tmp_path) == [Path(result.paths[0])]
    assert result.checksums[result.paths[0]].startswith("sha256:")
    writer.write(_batch(100, 200))
    writer.close()
    assert len(_visible(tmp_path)) == 1
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert pq.read_table(result.paths[0]).num_rows == 100


def test_files_roll_at_target_size(tmp_path: Path) -> None:
    writer = ParquetWriter()
    writer.open(
        {"path": str(tmp_path), "target_file_size_mb": 0.01, "compression": "none"},
        StreamInfo("s", _batch(0, 1).schema),
    )
    for lo in range(0, 5000, 500):
        writer.write(_batch(lo, lo + 500))
    result = writer.commit()
    assert len(result.paths) > 3
    assert result.rows == 5000
    total = sum(pq.read_metadata(p).num_rows for p in result.paths)
    assert total == 5000


def test_hive_partitions_including_nulls_and_unsafe_values(tmp_path: Path) -> None:
    writer = ParquetWriter()
    writer.open(
        {"path": str(tmp_path), "partition_by": ["region"]}, StreamInfo("s", _batch(0, 1).schema)
    )
    writer.write(_batch(0, 30))
    writer.commit()
    folders = sorted(p.parent.name for p in _visible(tmp_path))
    assert folders == sorted(
        ["region=r%2F0", "region=r%2F1", "region=r%2F2", f"region={HIVE_NULL}"]
    )
    rows = sum(pq.read_metadata(p).num_rows for p in _visible(tmp_path))
    assert rows == 30
    nulls = next(p for p in _visible(tmp_path) if HIVE_NULL in str(p))
    assert pq.read_table(nulls).column("region").null_count == 6


def test_schema_update_starts_a_new_file(tmp_path: Path) -> None:
    writer = ParquetWriter()
    first = _batch(0, 10)
    writer.open({"path": str(tmp_path)}, StreamInfo("s", first.schema))
    writer.write(first)
    wider = first.append_column("extra", pa.array([True] * 10))
    writer.update_schema(wider.schema)
    writer.write(wider)
    result = writer.commit()
    schemas = [pq.read_schema(p).names for p in result.paths]
    assert sorted(schemas, key=len) == [first.schema.names, wider.schema.names]


def test_every_mapped_type_lands_as_itself(tmp_path: Path) -> None:
    batch = pa.record_batch(
        {
            "i8": pa.array([1, None], pa.int8()),
            "u64": pa.array([2**64 - 1, 0], pa.uint64()),
            "f32": pa.array([1.5, float("nan")], pa.float32()),
            "dec": pa.array(
                [decimal.Decimal("12345678901234567890.12"), None], pa.decimal128(22, 2)
            ),
            "ts": pa.array(
                [dt.datetime(2020, 1, 1, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC")
            ),
            "naive": pa.array([dt.datetime(2020, 1, 1), None], pa.timestamp("us")),
            "d": pa.array([dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
            "t": pa.array([dt.time(23, 59, 59, 999999), None], pa.time64("us")),
            "b": pa.array([b"\x00\xff", None]),
            "j": pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(['{"a": [1, 2]}', None])),
            "st": pa.array([{"x": 1, "y": "a"}, None]),
            "l": pa.array([[1, None], []], pa.list_(pa.int64())),
        }
    )
    writer = ParquetWriter()
    writer.open({"path": str(tmp_path)}, StreamInfo("types", batch.schema))
    writer.write(batch)
    result = writer.commit()
    table = pq.read_table(result.paths[0])
    for field in batch.schema:
        assert table.schema.field(field.name).type == field.type, field.name
    assert table.column("dec").to_pylist()[0] == decimal.Decimal("12345678901234567890.12")


def _row_groups(paths: list[str]) -> list[int]:
    sizes: list[int] = []
    for path in sorted(paths):
        meta = pq.read_metadata(path)
        sizes += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return sizes


def test_small_batches_are_gathered_into_row_groups_of_row_group_rows(tmp_path: Path) -> None:
    """A reader's batches are small (a few thousand rows): each must not become a row group
    of its own (the setting row_group_rows would then mean nothing); a batch larger than a
    row group is split across row groups."""
    writer = ParquetWriter()
    writer.open(
        {"path": str(tmp_path), "row_group_rows": 3000}, StreamInfo("s", _batch(0, 1).schema)
    )
    for lo in range(0, 9000, 500):
        writer.write(_batch(lo, lo + 500))
    writer.write(_batch(9000, 16000))  # 7,000 rows in one batch
    result = writer.commit()
    assert result.rows == 16000
    assert _row_groups(result.paths) == [3000] * 5 + [1000]
    ids = pq.read_table(result.paths[0]).column("id").to_pylist()
    assert ids == list(range(16000))


def test_row_group_mb_bounds_the_rows_gathered(tmp_path: Path) -> None:
    """With row_group_rows far away, a row group ends once its rows reach row_group_mb of
    Arrow memory (the writer's memory per open file stays bounded)."""
    writer = ParquetWriter()
    per_batch = _batch(0, 500).nbytes
    writer.open(
        {"path": str(tmp_path), "row_group_mb": 3 * per_batch / (1024 * 1024)},
        StreamInfo("s", _batch(0, 1).schema),
    )
    for lo in range(0, 10000, 500):
        writer.write(_batch(lo, lo + 500))
    result = writer.commit()
    groups = _row_groups(result.paths)
    assert sum(groups) == 10000
    assert max(groups) <= 1600 and len(groups) >= 6, groups


def test_files_still_end_near_their_target_size_with_gathered_row_groups(tmp_path: Path) -> None:
    """Gathering rows must not make files overshoot target_file_size_mb by a row group's
    worth: the gathered rows count toward the file's size before they are written."""
    writer = ParquetWriter()
    target = 80 * 1024
    writer.open(
        {"path": str(tmp_path), "target_file_size_mb": target / (1024 * 1024)},
        StreamInfo("s", _batch(0, 1).schema),
    )
    for lo in range(0, 60000, 1000):
        writer.write(_batch(lo, lo + 1000))
    result = writer.commit()
    sizes = [Path(p).stat().st_size for p in result.paths]
    assert len(sizes) >= 3
    assert all(size < 1.5 * target for size in sizes), sizes
    assert sum(pq.read_metadata(p).num_rows for p in result.paths) == 60000


def test_gathered_rows_are_bounded_across_partition_folders(tmp_path: Path) -> None:
    """With partition_by, every folder has an open file gathering its own row group: the
    bound is the stream's, not each file's (40 folders must not hold 40 x row_group_mb)."""
    writer = ParquetWriter()
    schema = pa.schema([("id", pa.int64()), ("day", pa.int64()), ("text", pa.string())])
    per_row = 8 + 8 + 60
    budget = 200 * per_row
    writer.open(
        {"path": str(tmp_path), "partition_by": ["day"], "row_group_mb": budget / 2**20},
        StreamInfo("s", schema),
    )
    peak = 0
    for lo in range(0, 20000, 400):
        ids = list(range(lo, lo + 400))
        writer.write(
            pa.record_batch(
                [
                    pa.array(ids, pa.int64()),
                    pa.array([i % 40 for i in ids], pa.int64()),
                    pa.array(["t" * 56 + f"{i:04d}"[-4:] for i in ids]),
                ],
                schema=schema,
            )
        )
        peak = max(peak, sum(h.group.bytes for h in writer._files.values()))
    result = writer.commit()
    assert result.rows == 20000
    assert peak <= 2 * budget, (peak, budget)
    folders = {Path(p).parent.name for p in result.paths}
    assert len(folders) == 40
