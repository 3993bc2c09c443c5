"""Singer BATCH files in Arrow IPC, Parquet or JSON Lines: written by taps, read as Arrow by
targets, deleted once the target committed their rows."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dativo_bridge.codecs.encode import encode_rows
from dativo_bridge.errors import ConfigError

logger = logging.getLogger("dativo.batch")

FORMATS = ("arrow", "parquet", "jsonl")

#: The `batch_config` setting of Dativo taps (singer-sdk's, with `arrow` and `batch_size`).
BATCH_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Emit BATCH messages with files instead of RECORD messages.",
    "properties": {
        "encoding": {
            "type": "object",
            "properties": {
                "format": {"type": "string", "enum": list(FORMATS)},
                "compression": {"type": "string", "enum": ["none", "gzip", "zstd"]},
            },
        },
        "storage": {
            "type": "object",
            "properties": {
                "root": {"type": "string", "description": "Directory or file:// URL."},
                "prefix": {"type": "string"},
            },
        },
        "batch_size": {"type": "integer", "description": "Rows per file (default 1,000,000)."},
    },
}


@dataclass(frozen=True)
class BatchSettings:
    """Parsed ``batch_config``."""

    format: str
    compression: str
    root: Path
    prefix: str
    batch_size: int

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BatchSettings:
        """Validate a ``batch_config`` mapping.

        Raises:
            ConfigError: Unknown format or compression, or a root that is not local.
        """
        encoding = raw.get("encoding") or {}
        fmt = str(encoding.get("format") or "arrow")
        if fmt not in FORMATS:
            raise ConfigError(f"batch_config.encoding.format must be one of {FORMATS}, not {fmt!r}")
        default = "gzip" if fmt == "jsonl" else "zstd"
        compression = str(encoding.get("compression") or default)
        allowed = ("none", "gzip") if fmt == "jsonl" else ("none", "zstd")
        if compression not in allowed:
            raise ConfigError(f"batch_config: {fmt} files support compression {allowed}")
        storage = raw.get("storage") or {}
        root = str(storage.get("root") or "output/batches")
        return cls(
            fmt,
            compression,
            local_path(root),
            str(storage.get("prefix") or "batch-"),
            int(raw.get("batch_size") or 1_000_000),
        )

    def encoding(self) -> dict[str, str]:
        """The ``encoding`` object of BATCH messages."""
        return {"format": self.format, "compression": self.compression}


def local_path(uri: str) -> Path:
    """A local path from a path or file:// URL (other schemes are refused)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ConfigError(f"batch files must be local (a path or file:// URL), not {uri!r}")
    return Path(uri)


class BatchFileWriter:
    """Writes one BATCH file; it appears under its final name only when closed."""

    def __init__(self, settings: BatchSettings, stream: str, schema: pa.Schema) -> None:
        self.settings = settings
        settings.root.mkdir(parents=True, exist_ok=True)
        suffix = {"arrow": ".arrow", "parquet": ".parquet", "jsonl": ".jsonl"}[settings.format]
        if settings.format == "jsonl" and settings.compression == "gzip":
            suffix += ".gz"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stream)
        name = f"{settings.prefix}{safe}-{uuid.uuid4().hex}{suffix}"
        self.path = settings.root / name
        self._temp = settings.root / f".{name}.tmp"
        self.rows = 0
        self._schema = schema
        compression = None if settings.compression == "none" else settings.compression
        if settings.format == "arrow":
            self._sink: Any = pa.OSFile(str(self._temp), "wb")
            self._writer: Any = ipc.new_file(
                self._sink, schema, options=ipc.IpcWriteOptions(compression=compression)
            )
        elif settings.format == "parquet":
            self._sink = None
            self._writer = pq.ParquetWriter(str(self._temp), schema, compression=compression)
        else:
            raw = open(self._temp, "wb")  # noqa: SIM115 - closed in close()
            self._sink = (
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5)
                if compression == "gzip"
                else raw
            )
            self._raw = raw
            self._writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append rows."""
        if self.settings.format == "jsonl":
            self._sink.write(encode_rows(batch))
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> str:
        """Finish the file and return its file:// URI."""
        if self.settings.format == "arrow":
            self._writer.close()
            self._sink.close()
        elif self.settings.format == "parquet":
            self._writer.close()
        else:
            self._sink.close()
            if self._sink is not self._raw:
                self._raw.close()
        os.replace(self._temp, self.path)
        return self.path.resolve().as_uri()

    def abort(self) -> None:
        """Discard the file."""
        with contextlib.suppress(Exception):  # discarding anyway
            self.close()
        self.path.unlink(missing_ok=True)
        self._temp.unlink(missing_ok=True)


def read_batch_file(uri: str, fmt: str, compression: str | None) -> Iterator[pa.RecordBatch]:
    """Arrow batches of an arrow or parquet BATCH file (jsonl is decoded by the caller)."""
    path = local_path(uri)
    if fmt == "arrow":
        with pa.memory_map(str(path)) as source:
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
    elif fmt == "parquet":
        yield from pq.ParquetFile(str(path)).iter_batches(batch_size=65_536)
    else:
        raise ValueError(fmt)


def read_jsonl_lines(uri: str, compression: str | None) -> list[bytes]:
    """The non-empty lines of a jsonl BATCH file."""
    path = local_path(uri)
    with open(path, "rb") as raw:
        data = raw.read()
    if compression == "gzip" or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [line for line in io.BytesIO(data) if line.strip()]


def delete_batch_files(uris: list[str]) -> None:
    """Remove BATCH files after their rows were committed."""
    for uri in uris:
        try:
            local_path(uri).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete batch file %s: %s", uri, exc)
