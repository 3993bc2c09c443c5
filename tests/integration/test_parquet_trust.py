"""ParquetWriter at its edges: overwrite replaces a stream in one step (and survives a kill
at any moment), colliding stream folders are refused, and on S3 (moto's server) a killed
run's unfinished uploads are aborted and no 0-byte directory markers are left."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dativo_bridge.delivery import StreamWriters
from dativo_bridge.errors import ConfigError
from dativo_bridge.interfaces import StreamInfo
from target_dativo_parquet import leftovers, swap
from target_dativo_parquet.target import TargetDativoParquet
from target_dativo_parquet.writer import ParquetWriter

from .s3server import CREDENTIALS, new_bucket, s3_endpoint

REPO = Path(__file__).resolve().parents[2]
SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("p", pa.string())])


def _batch(lo: int, hi: int) -> pa.RecordBatch:
    ids = list(range(lo, hi))
    return pa.record_batch(
        {"id": pa.array(ids, pa.int64()), "p": pa.array([f"p{i % 2}" for i in ids])},
        schema=SCHEMA,
    )


def _ids(folder: Path) -> list[int]:
    files = [p for p in folder.rglob("*.parquet") if not p.name.startswith(".")]
    return sorted(i for f in files for i in pq.read_table(f).column("id").to_pylist())


def _load(path: Path, lo: int, hi: int, **config: Any) -> None:
    writer = ParquetWriter()
    writer.open({"path": str(path), **config}, StreamInfo("s", SCHEMA))
    writer.write(_batch(lo, hi))
    writer.commit()
    writer.close()


def test_overwrite_replaces_the_streams_files(tmp_path: Path) -> None:
    _load(tmp_path, 0, 5, partition_by=["p"])
    _load(tmp_path, 0, 5, partition_by=["p"])
    assert _ids(tmp_path / "s") == sorted([*range(5), *range(5)])  # append appends
    writer = ParquetWriter()
    writer.open({"path": str(tmp_path), "load_method": "overwrite"}, StreamInfo("s", SCHEMA))
    assert writer.publishes_at_end
    writer.write(_batch(100, 103))
    assert _ids(tmp_path / "s") == sorted([*range(5), *range(5)])  # nothing visible yet
    result = writer.commit()
    assert _ids(tmp_path / "s") == [100, 101, 102]
    assert all(Path(p).parent == tmp_path / "s" and Path(p).exists() for p in result.paths)
    assert set(result.checksums) == set(result.paths)
    writer.write(_batch(103, 104))  # a later commit of the same run adds to its files
    writer.commit()
    writer.close()
    assert _ids(tmp_path / "s") == [100, 101, 102, 103]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no staged leftovers


def test_an_overwrite_run_releases_state_once_at_the_end(tmp_path: Path) -> None:
    _load(tmp_path, 0, 5)
    released: list[Any] = []
    writers = StreamWriters(
        ParquetWriter,
        {"path": str(tmp_path), "load_method": "overwrite"},
        released.append,
        checkpoint_rows=1,
    )
    writers.schema(StreamInfo("s", SCHEMA, ("id",)))
    for lo in range(0, 5):
        writers.write("s", _batch(lo, lo + 1))
        writers.state({"n": lo})
        assert released == [] and _ids(tmp_path / "s") == list(range(5))
    writers.finish()
    assert released == [{"n": 4}] and _ids(tmp_path / "s") == list(range(5))


def test_target_overwrite_twice_keeps_one_copy(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}}
    lines = [{"type": "SCHEMA", "stream": "s", "schema": schema, "key_properties": ["id"]}]
    lines += [{"type": "RECORD", "stream": "s", "record": {"id": i}} for i in range(5)]
    lines.append({"type": "STATE", "value": {"done": 1}})
    text = "".join(json.dumps(m) + "\n" for m in lines)
    for _ in range(3):
        target = TargetDativoParquet(config={"path": str(tmp_path), "load_method": "overwrite"})
        with redirect_stdout(io.StringIO()):
            target.listen(io.StringIO(text))
    assert _ids(tmp_path / "s") == list(range(5))


def test_a_reader_lists_the_old_files_or_the_new_ones_never_neither_or_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old folder is removed after the swap; a listing that began before the swap can
    # see its files go (docs/batch-files.md says so). Here the removal waits, so every
    # listing is of the live path at one moment.
    removed: list[Path] = []
    monkeypatch.setattr(swap.shutil, "rmtree", lambda path, **kw: removed.append(Path(path)))
    _load(tmp_path, 0, 4)
    live = tmp_path / "s"
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(len([n for n in os.listdir(live) if not n.startswith(".")]))
            except FileNotFoundError:
                seen.append(-1)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        for round_ in range(30):
            writer = ParquetWriter()
            config = {"path": str(tmp_path), "load_method": "overwrite"}
            writer.open(config, StreamInfo("s", SCHEMA))
            writer.write(_batch(round_, round_ + 1))
            writer.commit()
            writer.close()
    finally:
        stop.set()
        thread.join()
        monkeypatch.undo()
        for path in removed:
            shutil.rmtree(path)
    assert seen and set(seen) == {1}, sorted(set(seen))
    assert swap.exchange(tmp_path / "s", tmp_path / "s"), "renameat2 must work here"


_CHILD = """
import os, sys
import pyarrow as pa
sys.path.insert(0, {repo!r})
from dativo_bridge.interfaces import StreamInfo
from target_dativo_parquet import swap, writer as writer_module
from target_dativo_parquet.writer import ParquetWriter

def die(*args, **kwargs):
    os._exit(9)

point = {point!r}
if point == "before-swap":
    writer_module.replace_dir = die
elif point == "after-swap":
    swap.shutil.rmtree = die
elif point == "fallback-between-renames":
    swap.exchange = lambda a, b: False
    renames = []
    real = os.rename
    def rename(a, b):
        renames.append(a)
        if len(renames) == 2:
            die()
        real(a, b)
    swap.os.rename = rename
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("p", pa.string())])
writer = ParquetWriter()
writer.open({config!r}, StreamInfo("s", schema))
writer.write(pa.record_batch({{"id": pa.array([100, 101]), "p": pa.array(["a", "b"])}},
                             schema=schema))
writer.commit()
os._exit(0)
"""


def _killed_child(point: str, config: dict[str, Any]) -> int:
    code = _CHILD.format(repo=str(REPO), point=point, config=config)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=120)
    return done.returncode


@pytest.mark.parametrize(
    ("point", "after_kill"),
    [
        ("before-swap", [0, 1, 2]),
        ("after-swap", [100, 101]),
        ("fallback-between-renames", None),  # the folder is briefly absent, then restored
    ],
)
def test_a_kill_at_any_moment_leaves_the_old_or_the_new_folder_complete(
    tmp_path: Path, point: str, after_kill: list[int] | None
) -> None:
    _load(tmp_path, 0, 3, partition_by=["p"])
    config = {"path": str(tmp_path), "load_method": "overwrite", "partition_by": ["p"]}
    assert _killed_child(point, config) == 9
    live = tmp_path / "s"
    if after_kill is None:
        assert not live.exists()
    else:
        assert _ids(live) == after_kill
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".s.")], "leftovers expected"
    # The next open (any load method) cleans up and restores.
    _load(tmp_path, 200, 201, partition_by=["p"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert _ids(live) == [*(after_kill or [0, 1, 2]), 200]
    assert not [p for p in live.rglob(".*")]


def test_leftovers_of_a_live_writer_are_kept(tmp_path: Path) -> None:
    _load(tmp_path, 0, 1)
    busy = ParquetWriter()
    busy.open({"path": str(tmp_path), "load_method": "overwrite"}, StreamInfo("s", SCHEMA))
    busy.write(_batch(5, 6))
    _load(tmp_path, 1, 2)  # another writer of this live process opens the stream
    busy.commit()
    busy.close()
    assert _ids(tmp_path / "s") == [5]


def test_two_streams_that_share_a_folder_are_refused(tmp_path: Path) -> None:
    first = ParquetWriter()
    first.open({"path": str(tmp_path)}, StreamInfo("a b", SCHEMA))
    second = ParquetWriter()
    with pytest.raises(ConfigError) as caught:
        second.open({"path": str(tmp_path)}, StreamInfo("a_b", SCHEMA))
    assert "'a b'" in str(caught.value) and "'a_b'" in str(caught.value)
    other = ParquetWriter()
    other.open({"path": str(tmp_path / "elsewhere")}, StreamInfo("a_b", SCHEMA))
    other.close()
    first.close()
    second.open({"path": str(tmp_path)}, StreamInfo("a_b", SCHEMA))  # free again
    second.close()


def _s3_config(bucket: str, **extra: Any) -> dict[str, Any]:
    return {"path": f"s3://{bucket}/lake", "endpoint_url": s3_endpoint(), **CREDENTIALS, **extra}


def _client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )


def _objects(bucket: str) -> list[tuple[str, int]]:
    pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents") or []]


def _uploads(bucket: str) -> list[str]:
    return sorted(
        u["Key"] for u in _client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []
    )


def test_overwrite_on_s3_is_refused() -> None:
    writer = ParquetWriter()
    with pytest.raises(ConfigError, match="target-dativo-iceberg"):
        writer.open(_s3_config(new_bucket(), load_method="overwrite"), StreamInfo("s", SCHEMA))


def test_s3_leaves_no_directory_markers() -> None:
    bucket = new_bucket()
    writer = ParquetWriter()
    writer.open(_s3_config(bucket, partition_by=["p"]), StreamInfo("s", SCHEMA))
    writer.write(_batch(0, 4))
    writer.commit()
    writer.write(_batch(4, 8))
    writer.close()  # uncommitted: discarded
    objects = _objects(bucket)
    assert len(objects) == 2, objects
    assert not [k for k, size in objects if k.endswith("/") or size == 0], objects
    assert _uploads(bucket) == []


def test_a_killed_runs_uploads_are_aborted_at_the_next_open_and_no_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = new_bucket()
    code = f"""
import os, sys
import pyarrow as pa
sys.path.insert(0, {str(REPO)!r})
from dativo_bridge.interfaces import StreamInfo
from target_dativo_parquet.writer import ParquetWriter
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("p", pa.string())])
writer = ParquetWriter()
writer.open({_s3_config(bucket, partition_by=["p"])!r}, StreamInfo("s", schema))
writer.write(pa.record_batch({{"id": pa.array([1, 2]), "p": pa.array(["a", "b"])}},
                             schema=schema))
os._exit(9)  # killed before commit: two unfinished uploads
"""
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    killed = _uploads(bucket)
    assert len(killed) == 2 and all(".inprogress" in k for k in killed)
    client = _client()
    others = [
        # a live writer on this host (this process), another host's recent upload,
        # a name that is not a ParquetWriter's, and another stream's folder
        f"lake/s/.part-0000000a-{os.getpid()}-{leftovers.HOST_TAG}-00001.parquet.inprogress",
        "lake/s/.part-0000000b-1-ffffffff-00001.parquet.inprogress",
        "lake/s/someone-elses-upload.bin",
        f"lake/t/.part-0000000c-999999-{leftovers.HOST_TAG}-00001.parquet.inprogress",
    ]
    for key in others:
        client.create_multipart_upload(Bucket=bucket, Key=key)
    # moto reports every upload as initiated in 2010: make "recent" mean that here.
    monkeypatch.setattr(leftovers, "STALE_UPLOAD_SECONDS", 100 * 365 * 86400)
    writer = ParquetWriter()
    writer.open(_s3_config(bucket, partition_by=["p"]), StreamInfo("s", SCHEMA))
    writer.close()
    assert _uploads(bucket) == sorted(others)
    # Uploads from other hosts are aborted once they are older than the bound.
    monkeypatch.setattr(leftovers, "STALE_UPLOAD_SECONDS", -1)
    writer = ParquetWriter()
    writer.open(_s3_config(bucket), StreamInfo("s", SCHEMA))
    writer.close()
    assert _uploads(bucket) == sorted(k for k in others if "ffffffff" not in k)
    assert not [k for k, size in _objects(bucket) if k.endswith("/") or size == 0]
