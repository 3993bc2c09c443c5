"""EncryptedS3Writer: a stream as Parquet (or JSONL) objects, encrypted before they leave.

Plaintext exists only in this process: Parquet (or JSONL) bytes go into an Encryptor,
whose frames go into a multipart upload (one part buffered). The object appears only when
the upload is completed, on commit; close without commit aborts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dativo_bridge.aws import s3_client, s3_session
from dativo_bridge.codecs.encode import encode_rows
from dativo_bridge.crypto.aws import encryption_providers
from dativo_bridge.crypto.encrypt import Encryptor
from dativo_bridge.crypto.keys import KeyProvider
from dativo_bridge.crypto.reading import (
    CONTEXT_BUCKET,
    CONTEXT_FORMAT,
    CONTEXT_KEY,
    CONTEXT_STREAM,
    RESERVED_PREFIX,
)
from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.row_groups import RowGroup
from dativo_bridge.settings import with_defaults
from target_dativo_parquet.writer import stream_dir_name
from target_dativo_s3.settings import CONFIG_JSONSCHEMA, EXTENSION, OBJECT_METADATA
from target_dativo_s3.upload import MIN_PART_SIZE, MultipartUpload

logger = logging.getLogger("dativo.s3")

__all__ = ["CONFIG_JSONSCHEMA", "EncryptedS3Writer"]

_SAFE_PREFIX = re.compile(r"^[^\x00-\x1f]*$")


@dataclass
class _OpenObject:
    upload: MultipartUpload
    encryptor: Encryptor
    parquet: pq.ParquetWriter | None
    rows: int = 0
    group: RowGroup = field(default_factory=RowGroup)

    def write_group(self, row_group_rows: int) -> None:
        """Write the gathered rows as a row group (dativo_bridge.row_groups)."""
        table = self.group.take()
        if table is not None and self.parquet is not None:
            self.parquet.write_table(table, row_group_size=row_group_rows)


class EncryptedS3Writer(ArrowWriter):
    """Writes a stream as client-side encrypted objects under ``s3://bucket/prefix/stream/``.

    Each object is one DTVE message (docs/encryption-format.md) whose plaintext is a
    Parquet file (``format: parquet``) or JSON lines (``format: jsonl``). Its encryption
    context holds the bucket, the object key, the stream and the format, plus the user's
    ``encryption_context``.
    """

    name = "target-dativo-s3"
    config_jsonschema = CONFIG_JSONSCHEMA

    def __init__(self) -> None:
        super().__init__()
        self._open: _OpenObject | None = None
        self._finished: list[_OpenObject] = []
        self._schema: pa.Schema | None = None
        self._seq = 0
        self._run = f"{uuid.uuid4().hex[:8]}-{os.getpid()}"

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        config = with_defaults(self.config_jsonschema, config)
        super().open(config, stream)
        bucket = str(config.get("bucket") or "")
        if not bucket:
            raise ConfigError("target-dativo-s3 needs the setting 'bucket'")
        prefix = str(config["prefix"]).strip("/")
        if not _SAFE_PREFIX.match(prefix):
            raise ConfigError("the setting 'prefix' contains control characters")
        self._format = str(config["format"])
        if self._format not in ("parquet", "jsonl"):
            raise ConfigError(f"format must be parquet or jsonl, not {self._format!r}")
        self._user_context = _user_context(config.get("encryption_context"))
        self._frame_length = int(config["frame_size"])
        if not 1024 <= self._frame_length <= 64 * 1024 * 1024:
            raise ConfigError("frame_size must be between 1024 and 67108864 bytes")
        self._part_size = int(float(config["upload_part_size_mb"]) * 1024 * 1024)
        if self._part_size < MIN_PART_SIZE:
            raise ConfigError("upload_part_size_mb must be at least 5 (an S3 limit)")
        self._target_bytes = int(float(config["target_file_size_mb"]) * 1024 * 1024)
        self._compression = str(config["compression"])
        self._row_group_rows = int(config["row_group_rows"])
        self._row_group_bytes = int(float(config["row_group_mb"]) * 1024 * 1024)
        session = s3_session(config)  # every S3 and KMS call bounded by the timeouts
        self._providers: list[KeyProvider] = encryption_providers(config, session)
        self._client = s3_client(config, session)
        self._bucket = bucket
        self._folder = "/".join(p for p in (prefix, stream_dir_name(stream.name)) if p)
        self._schema = stream.schema

    def _context(self, key: str) -> dict[str, str]:
        assert self.stream is not None
        return {
            **self._user_context,
            CONTEXT_BUCKET: self._bucket,
            CONTEXT_KEY: key,
            CONTEXT_STREAM: self.stream.name,
            CONTEXT_FORMAT: self._format,
        }

    def _new_object(self) -> _OpenObject:
        assert self._schema is not None
        self._seq += 1
        key = f"{self._folder}/part-{self._run}-{self._seq:05d}.{self._format}{EXTENSION}"
        upload = MultipartUpload(self._client, self._bucket, key, self._part_size, OBJECT_METADATA)
        try:
            encryptor = Encryptor(upload, self._providers, self._context(key), self._frame_length)
            parquet = None
            if self._format == "parquet":
                parquet = pq.ParquetWriter(
                    encryptor,
                    self._schema,
                    compression=None if self._compression == "none" else self._compression,
                )
        except BaseException:
            upload.abort()
            raise
        return _OpenObject(upload, encryptor, parquet)

    def _finish(self) -> None:
        handle, self._open = self._open, None
        if handle is None:
            return
        try:
            if handle.parquet is not None:
                handle.write_group(self._row_group_rows)
                handle.parquet.close()
            handle.encryptor.close()
            handle.upload.finish()
        except BaseException:
            _discard(handle)
            raise
        self._finished.append(handle)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None or self.stream is None:
            raise WriteError("EncryptedS3Writer.write called before open")
        batch = self.conformed(batch, self._schema)
        if batch.num_rows == 0:
            return
        if self._open is None:
            self._open = self._new_object()
        handle = self._open
        try:
            if handle.parquet is None:
                handle.encryptor.write(encode_rows(batch))
                handle.rows += batch.num_rows
            else:
                self._gather(handle, batch)
        except BaseException:
            current, self._open = self._open, None  # the object being written, if any
            if current is not None:
                _discard(current)
            raise
        if self._open is handle and handle.encryptor.plaintext_bytes >= self._target_bytes:
            self._finish()

    def _gather(self, handle: _OpenObject, batch: pa.RecordBatch) -> None:
        """Rows into row groups of row_group_rows, bounded by row_group_mb and by the
        object's target size (dativo_bridge.row_groups)."""
        while batch.num_rows:
            room = self._row_group_rows - handle.group.rows
            part, batch = batch.slice(0, room), batch.slice(room)
            handle.group.add(part)
            handle.rows += part.num_rows
            written = handle.encryptor.plaintext_bytes
            if (
                handle.group.rows >= self._row_group_rows
                or handle.group.bytes >= self._row_group_bytes
                or handle.group.fills(written, self._target_bytes)
            ):
                handle.write_group(self._row_group_rows)
                if batch.num_rows and handle.encryptor.plaintext_bytes >= self._target_bytes:
                    self._finish()
                    handle = self._open = self._new_object()

    def update_schema(self, schema: pa.Schema) -> None:
        """Later batches get the new schema: the open object is finished, new ones follow it."""
        self._finish()
        self._schema = schema
        self.adopt_schema(schema)

    def commit(self) -> CommitResult:
        self._finish()
        result = CommitResult()
        finished, self._finished = self._finished, []
        try:
            while finished:
                handle = finished[0]
                handle.upload.complete()
                finished.pop(0)
                uri = handle.upload.uri
                result.paths.append(uri)
                result.rows += handle.rows
                result.bytes += handle.upload.size
                result.checksums[uri] = "sha256:" + handle.upload.sha256.hexdigest()
        finally:
            self._finished = finished + self._finished
        if result.paths:
            logger.info(
                "committed %d rows in %d encrypted object(s) under s3://%s/%s/",
                result.rows,
                len(result.paths),
                self._bucket,
                self._folder,
            )
        return result

    def close(self) -> None:
        handles = ([self._open] if self._open is not None else []) + self._finished
        self._open, self._finished = None, []
        for handle in handles:
            _discard(handle)


def _discard(handle: _OpenObject) -> None:
    """Drop an object: buffered plaintext is discarded and the upload aborted."""
    handle.encryptor.abandon()
    if handle.parquet is not None:
        with contextlib.suppress(Exception):
            handle.parquet.close()
    handle.upload.abort()


def _user_context(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("encryption_context must be an object of string values")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ConfigError("encryption_context must map non-empty strings to strings")
        if key.startswith(RESERVED_PREFIX) or key.startswith("aws"):
            raise ConfigError(
                f"encryption_context key {key!r}: the prefixes 'dativo:' and 'aws' are reserved"
            )
        out[key] = value
    return out
