"""ParquetWriter: one stream's batches into Parquet files that appear only when complete."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.row_groups import RowGroup
from dativo_bridge.settings import load_method, with_defaults
from target_dativo_parquet.leftovers import (
    abandoned_upload,
    new_run_id,
    recover_folders,
    remove_orphans,
    replaced_name,
    staged_name,
)
from target_dativo_parquet.settings import CONFIG_JSONSCHEMA
from target_dativo_parquet.storage import HashingSink, Storage
from target_dativo_parquet.swap import replace_dir

logger = logging.getLogger("dativo.parquet")

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def stream_dir_name(stream: str) -> str:
    """A stream name made safe as one directory name."""
    return _UNSAFE.sub("_", stream).strip(".") or "stream"


#: The open writers of this process by stream folder: two streams must not share one.
_folders: weakref.WeakValueDictionary[str, ParquetWriter] = weakref.WeakValueDictionary()
_folders_lock = threading.Lock()


def _claim_folder(location: str, writer: ParquetWriter, stream: str) -> None:
    with _folders_lock:
        other = _folders.get(location)
        if other is not None and other.stream is not None and other.stream.name != stream:
            raise ConfigError(
                f"streams '{other.stream.name}' and '{stream}' would both be written to "
                f"{location}: rename one (stream maps) or write them to different paths"
            )
        _folders[location] = writer


def _release_folder(location: str, writer: ParquetWriter) -> None:
    with _folders_lock:
        if _folders.get(location) is writer:
            del _folders[location]


@dataclass
class _OpenFile:
    temp: str
    final: str
    sink: HashingSink
    writer: pq.ParquetWriter
    rows: int = 0
    group: RowGroup = field(default_factory=RowGroup)


@dataclass
class _Finished:
    temp: str
    final: str
    rows: int
    size: int
    sha256: str


class ParquetWriter(ArrowWriter):
    """Writes a stream as Parquet files under ``<path>/<stream>/[col=value/]part-*.parquet``.

    ``path`` is a directory or ``s3://bucket/prefix``. Files are written under a hidden
    temporary name (``.part-*.parquet.inprogress``) and moved to their final name on
    commit, so a reader never sees a partial file or uncommitted rows. On S3 an object
    only exists once its upload completed, and the move is a server-side copy.

    ``load_method: overwrite`` (local disk) builds the stream's new folder as a hidden
    sibling and swaps it with the live one at the (single, end-of-run) commit: a reader
    lists either the old files or the new ones (target_dativo_parquet.swap). What killed runs
    leave is removed by the next open once its writer is provably gone
    (target_dativo_parquet.leftovers).
    """

    name = "target-dativo-parquet"
    config_jsonschema = CONFIG_JSONSCHEMA

    def __init__(self) -> None:
        super().__init__()
        self._files: dict[tuple[Any, ...], _OpenFile] = {}
        self._finished: list[_Finished] = []
        self._schema: pa.Schema | None = None
        self._seq = 0
        self._pending_total = 0  # Arrow bytes gathered in every open file's row group
        self._run = new_run_id()
        self._method = "append"
        self._swapped = False
        self._location: str | None = None

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        config = with_defaults(self.config_jsonschema, config)
        super().open(config, stream)
        if not config.get("path"):
            raise ConfigError(
                "target-dativo-parquet needs the setting 'path' (a directory or s3://bucket/prefix)"
            )
        self._method = load_method(config, ("append", "overwrite"), self.name)
        self._storage = Storage(str(config["path"]), config)
        folder = stream_dir_name(stream.name)
        self._live = self._storage.join(folder)
        if self._method == "overwrite" and not self._storage.local:
            raise ConfigError(
                f"stream '{stream.name}': load_method overwrite is not supported on S3 "
                "(objects cannot be replaced together in one step, so readers would see "
                "both copies or neither): use target-dativo-iceberg, whose overwrite is one "
                "snapshot, or load_method append into an empty prefix"
            )
        self._compression = str(config["compression"])
        self._target_bytes = int(float(config["target_file_size_mb"]) * 1024 * 1024)
        self._row_group_rows = int(config["row_group_rows"])
        self._row_group_bytes = int(float(config["row_group_mb"]) * 1024 * 1024)
        self._partition_by: Sequence[str] = list(config.get("partition_by") or [])
        missing = [c for c in self._partition_by if c not in stream.schema.names]
        if missing:
            raise ConfigError(
                f"stream '{stream.name}': partition_by columns not in the stream: {missing}"
            )
        _claim_folder(self._storage.uri(self._live), self, stream.name)
        self._location = self._storage.uri(self._live)
        self._schema = self._file_schema(stream.schema)
        self._root = self._live
        if self._storage.local:
            recover_folders(Path(self._storage.root), folder)
            self._storage.makedirs(self._live)
            remove_orphans(Path(self._live))
            if self._method == "overwrite":
                self._root = self._storage.join(staged_name(folder, self._run))
                self._replaced = self._storage.join(replaced_name(folder, self._run))
                self._storage.makedirs(self._root)
        else:
            now = dt.datetime.now(dt.UTC)
            self._storage.abort_uploads(
                self._live + "/", lambda key, initiated: abandoned_upload(key, initiated, now)
            )

    def _file_schema(self, schema: pa.Schema) -> pa.Schema:
        """The files' schema: a LOG_BASED change log's keys are nullable, as a TRUNCATE's
        row has none (docs/cdc.md, 'TRUNCATE')."""
        if self.stream is None or self.stream.replication_method != "LOG_BASED":
            return schema
        keys = set(self.stream.key_properties)
        return pa.schema(
            [f.with_nullable(True) if f.name in keys else f for f in schema],
            metadata=schema.metadata,
        )

    @property
    def publishes_at_end(self) -> bool:
        """True with ``load_method: overwrite``: the stream is replaced once, at the end."""
        return self._method == "overwrite"

    def _new_file(self, key: tuple[Any, ...]) -> _OpenFile:
        assert self._schema is not None
        parts = []
        for col, value in zip(self._partition_by, key, strict=True):
            text = HIVE_NULL if value is None else quote(str(value), safe="")
            parts.append(f"{col}={text}")
        folder = "/".join([self._root, *parts])
        self._storage.makedirs(folder)
        self._seq += 1
        base = f"part-{self._run}-{self._seq:05d}.parquet"
        temp = f"{folder}/.{base}.inprogress"
        sink = self._storage.open_output(temp)
        writer = pq.ParquetWriter(
            sink,
            self._schema,
            compression=None if self._compression == "none" else self._compression,
        )
        return _OpenFile(temp, f"{folder}/{base}", sink, writer)

    def _flush_row_group(self, handle: _OpenFile) -> None:
        """Write the gathered batches as one row group (or several of row_group_rows)."""
        self._pending_total -= handle.group.bytes
        table = handle.group.take()
        if table is not None:
            handle.writer.write_table(table, row_group_size=self._row_group_rows)

    def _roll_if_full(self, handle: _OpenFile) -> None:
        """Finish ``handle``'s file once it reached the target size (the next rows of
        its folder open a new one)."""
        if handle.sink.size >= self._target_bytes:
            key = next(k for k, h in self._files.items() if h is handle)
            self._finish(key)

    def _finish(self, key: tuple[Any, ...]) -> None:
        handle = self._files.pop(key)
        self._flush_row_group(handle)
        handle.writer.close()
        handle.sink.close()
        self._finished.append(
            _Finished(
                handle.temp,
                handle.final,
                handle.rows,
                handle.sink.size,
                handle.sink.sha256.hexdigest(),
            )
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            raise WriteError("ParquetWriter.write called before open")
        batch = self.conformed(batch, self._schema)
        if not self._partition_by:
            self._write_part((), batch)
            return
        table = pa.Table.from_batches([batch])
        keys = table.select(self._partition_by).group_by(self._partition_by).aggregate([])
        for key in keys.to_pylist():
            mask = None
            for col, value in key.items():
                cond = (
                    pc.is_null(table[col])
                    if value is None
                    else pc.fill_null(
                        pc.equal(table[col], pa.scalar(value, table[col].type)), False
                    )
                )
                mask = cond if mask is None else pc.and_(mask, cond)
            part = table.filter(mask).combine_chunks()
            for rb in part.to_batches():
                self._write_part(tuple(key[c] for c in self._partition_by), rb)

    def _write_part(self, key: tuple[Any, ...], batch: pa.RecordBatch) -> None:
        handle = self._files.get(key)
        if handle is None:
            handle = self._files[key] = self._new_file(key)
        # Rows are gathered into row groups of row_group_rows (bounded by row_group_mb):
        # pyarrow writes each call as its own row group, and a reader's batches are small.
        while batch.num_rows:
            room = self._row_group_rows - handle.group.rows
            part, batch = batch.slice(0, room), batch.slice(room)
            handle.group.add(part)
            self._pending_total += part.nbytes
            handle.rows += part.num_rows
            if self._pending_total >= self._row_group_bytes and len(self._files) > 1:
                # Many open folders: the one holding the most goes out first.
                largest = max(self._files.values(), key=lambda h: h.group.bytes)
                if largest is not handle:
                    self._flush_row_group(largest)
                    self._roll_if_full(largest)
            if (
                handle.group.rows >= self._row_group_rows
                or self._pending_total >= self._row_group_bytes
                or handle.group.fills(handle.sink.size, self._target_bytes)
            ):
                self._flush_row_group(handle)
                if handle.sink.size >= self._target_bytes:
                    self._finish(key)
                    if batch.num_rows:
                        handle = self._files[key] = self._new_file(key)

    def update_schema(self, schema: pa.Schema) -> None:
        """Later batches get the new schema: open files are finished, new files follow it."""
        for key in list(self._files):
            self._finish(key)
        self._schema = self._file_schema(schema)
        self.adopt_schema(schema)

    def commit(self) -> CommitResult:
        """Publish every file written so far; with overwrite, the first commit replaces the
        stream's folder with this run's (later commits add to it)."""
        for key in list(self._files):
            self._finish(key)
        result = CommitResult()
        for done in self._finished:
            self._storage.publish(done.temp, done.final)
            location = self._storage.uri(done.final)
            result.paths.append(location)
            result.rows += done.rows
            result.bytes += done.size
            result.checksums[location] = "sha256:" + done.sha256
        self._finished = []
        if self._method == "overwrite" and not self._swapped:
            staged = self._root
            replace_dir(Path(staged), Path(self._live), Path(self._replaced))
            self._root, self._swapped = self._live, True
            result.paths = [self._live + p[len(staged) :] for p in result.paths]
            result.checksums = {
                self._live + p[len(staged) :]: c for p, c in result.checksums.items()
            }
            logger.info("replaced the files of %s with this run's", self._live)
        if result.paths:
            logger.info(
                "committed %d rows in %d file(s) under %s",
                result.rows,
                len(result.paths),
                self._storage.uri(self._root),
            )
        return result

    def close(self) -> None:
        try:
            for handle in self._files.values():
                try:
                    handle.writer.close()
                    handle.sink.close()
                finally:
                    self._storage.delete(handle.temp)
            for done in self._finished:
                self._storage.delete(done.temp)
            self._files = {}
            self._finished = []
            self._pending_total = 0  # the gathered rows went with their files
            if self._method == "overwrite" and not self._swapped and self._location:
                shutil.rmtree(self._root, ignore_errors=True)  # an unpublished overwrite
        finally:
            if self._location is not None:
                _release_folder(self._location, self)
                self._location = None
