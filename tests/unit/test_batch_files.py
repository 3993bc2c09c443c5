"""BATCH file ownership: a target reads the files a manifest names but deletes only those a
Dativo tap provably wrote for the stream, only after the commit, and nothing on any error."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from dativo_bridge.batch_files import BatchFileWriter, BatchSettings
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.delivery import StreamWriters
from dativo_bridge.errors import ConfigError, DecodeError
from dativo_bridge.interfaces import ArrowWriter, CommitResult

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])
JSON_SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}


class MemoryWriter(ArrowWriter):
    """Keeps committed rows in memory (one list for every writer of a test)."""

    committed: list[int] = []

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[int] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self._rows.extend(batch.column("id").to_pylist())

    def commit(self) -> CommitResult:
        MemoryWriter.committed.extend(self._rows)
        done = CommitResult(rows=len(self._rows))
        self._rows = []
        return done


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    MemoryWriter.committed = []


def _dativo_file(root: Path, stream: str = "s", fmt: str = "arrow", ids: Any = (1, 2)) -> Path:
    settings = BatchSettings.parse({"encoding": {"format": fmt}, "storage": {"root": str(root)}})
    writer = BatchFileWriter(settings, stream, SCHEMA)
    writer.write(pa.record_batch({"id": pa.array(list(ids), pa.int64())}, schema=SCHEMA))
    writer.close()
    return writer.path


def _foreign_arrow(path: Path, ids: Any = (7,)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, SCHEMA) as writer:
        writer.write_batch(pa.record_batch({"id": pa.array(list(ids), pa.int64())}, schema=SCHEMA))
    return path


def _run(
    manifests: list[Any], fmt: str = "arrow", config: Mapping[str, Any] | None = None, **extra: Any
) -> None:
    lines = [{"type": "SCHEMA", "stream": "s", "schema": JSON_SCHEMA, "key_properties": ["id"]}]
    for manifest in manifests:
        lines.append(
            {
                "type": "BATCH",
                "stream": "s",
                "encoding": {"format": fmt, **extra},
                "manifest": manifest,
            }
        )
    lines.append({"type": "STATE", "value": {"done": True}})
    data = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    writers = StreamWriters(MemoryWriter, dict(config or {}), lambda state: None)
    SingerInput(writers).process(io.BytesIO(data))
    writers.finish()


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "jsonl"])
def test_a_dativo_tap_file_is_deleted_after_the_commit(tmp_path: Path, fmt: str) -> None:
    path = _dativo_file(tmp_path, fmt=fmt)
    _run([[path.as_uri()]], fmt=fmt, compression="gzip" if fmt == "jsonl" else None)
    assert MemoryWriter.committed == [1, 2]
    assert not path.exists()


def test_an_empty_lock_file_in_a_manifest_is_an_error_and_survives(tmp_path: Path) -> None:
    lock = tmp_path / "x" / "app.lock"
    lock.parent.mkdir()
    lock.write_bytes(b"")
    ours = _dativo_file(tmp_path / "b")
    with pytest.raises(DecodeError) as caught:
        _run([[ours.as_uri(), lock.as_uri()]])
    assert "app.lock" in str(caught.value) and "stream 's'" in str(caught.value)
    assert lock.exists() and ours.exists()
    assert MemoryWriter.committed == []


def test_a_foreign_file_is_read_but_never_deleted(tmp_path: Path) -> None:
    foreign = _foreign_arrow(tmp_path / "x" / "app.lock")
    # Even with Dativo's file naming, a file without Dativo's marker is not ours.
    lookalike = _foreign_arrow(tmp_path / "y" / f"batch-s-{'a' * 32}.arrow", ids=(8,))
    relative = os.path.relpath(foreign)
    _run([[foreign.as_uri()], [relative], [str(lookalike)]])
    assert sorted(MemoryWriter.committed) == [7, 7, 8]
    assert foreign.exists() and lookalike.exists()


def test_symlinks_copies_and_other_streams_files_are_kept(tmp_path: Path) -> None:
    ours = _dativo_file(tmp_path / "b")
    link = tmp_path / "link" / ours.name
    link.parent.mkdir()
    link.symlink_to(ours)
    copy = tmp_path / "copy" / ours.name.replace(ours.name[-38:-6], "b" * 32)
    copy.parent.mkdir()
    copy.write_bytes(ours.read_bytes())
    other = _dativo_file(tmp_path / "o", stream="other")
    renamed = other.with_name(other.name.replace("other", "s"))
    other.rename(renamed)
    _run([[str(link)], [str(copy)], [str(renamed)]])
    assert sorted(MemoryWriter.committed) == [1, 1, 1, 2, 2, 2]
    assert ours.exists() and link.is_symlink() and copy.exists() and renamed.exists()


def test_batch_cleanup_off_keeps_every_file(tmp_path: Path) -> None:
    ours = _dativo_file(tmp_path)
    _run([[ours.as_uri()]], config={"batch_cleanup": "off"})
    assert MemoryWriter.committed == [1, 2] and ours.exists()


def test_an_unknown_batch_cleanup_is_a_config_error(tmp_path: Path) -> None:
    ours = _dativo_file(tmp_path)
    with pytest.raises(ConfigError, match="batch_cleanup"):
        _run([[ours.as_uri()]], config={"batch_cleanup": "all"})
    assert ours.exists()


def _bad_entries(tmp_path: Path) -> dict[str, tuple[Any, str, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"id": 1}\n')
    truncated = tmp_path / "cut.arrow"
    truncated.write_bytes(_foreign_arrow(tmp_path / "whole.arrow").read_bytes()[:40])
    return {
        "not a list": ("file:///etc/passwd", "arrow", "must be a list"),
        "not a string": ([5], "arrow", "not a string"),
        "missing": ([str(tmp_path / "gone.arrow")], "arrow", "no such file"),
        "directory": ([str(tmp_path)], "arrow", "is a directory"),
        "remote": (["s3://bucket/key.arrow"], "arrow", "must be local"),
        "wrong magic": ([str(text)], "parquet", "not a Parquet file"),
        "not arrow": ([str(text)], "arrow", "not an Arrow IPC file"),
        "truncated": ([str(truncated)], "arrow", "not an Arrow IPC file"),
        "not jsonl": ([str(text)], "jsonl", "not a JSON Lines file"),
        "not gzip": ([str(plain)], "jsonl", "not a gzip file"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not a list",
        "not a string",
        "missing",
        "directory",
        "remote",
        "wrong magic",
        "not arrow",
        "truncated",
        "not jsonl",
        "not gzip",
    ],
)
def test_a_bad_manifest_is_a_clear_error_and_nothing_is_read_or_deleted(
    tmp_path: Path, case: str
) -> None:
    manifest, fmt, reason = _bad_entries(tmp_path)[case]
    ours = _dativo_file(tmp_path / "b", fmt=fmt)
    if isinstance(manifest, list):
        manifest = [ours.as_uri(), *manifest]  # a good entry first: not read either
    compression = "gzip" if case == "not gzip" else None
    with pytest.raises(DecodeError) as caught:
        _run([manifest], fmt=fmt, compression=compression)
    message = str(caught.value)
    assert reason in message and "stream 's'" in message, message
    if isinstance(manifest, list):
        assert repr(manifest[-1]) in message
    assert ours.exists() and MemoryWriter.committed == []


def test_a_corrupt_gzip_body_is_a_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"id": 1}\n')[:-6])
    with pytest.raises(DecodeError, match="unreadable jsonl file"):
        _run([[str(bad)]], fmt="jsonl", compression="gzip")
    assert bad.exists()


def test_the_marker_names_stream_and_file(tmp_path: Path) -> None:
    path = _dativo_file(tmp_path, stream="a b", fmt="parquet")
    marker = json.loads(pq.read_schema(path).metadata[b"dativo.batch_file"])
    assert marker == {"stream": "a b", "file": path.name}
    assert path.name.startswith("batch-a_b-")
