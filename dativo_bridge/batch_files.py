"""Singer BATCH files in Arrow IPC, Parquet or JSON Lines: written by taps, read as Arrow by
targets, deleted once the target committed their rows, and only when they are provably a
Dativo tap's files for that stream (docs/batch-files.md).

The ``arrow`` format is singer-sdk's (meltano/sdk#3696, singer-sdk 0.55): one Arrow IPC
*file* per manifest entry, a ``.arrow`` name, a ``file:///`` URI, no compression of the
file as a whole (IPC buffer codecs are inside the format), the encoding object
``{"format": "arrow"}``. Files written by other plugins carry the types their writer
inferred, so a target reads every arrow or parquet file against the stream's SCHEMA with
the meaning a RECORD message would have (:func:`as_stream_schema`).

Its settings (``batch_config``, ``batch_cleanup``) are parsed in
dativo_bridge.batch_settings, which a plugin's ``--about`` imports without pyarrow.

Invariants: every entry of a BATCH manifest is checked (a string naming an existing,
non-empty regular file in the declared format) before any file is read; a target deletes
only files it owns (:attr:`BatchFile.owned`), only after a successful commit, and only the
very file (device and inode) it read.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import gzip
import io
import json
import logging
import math
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

# The settings (no pyarrow) live in batch_settings; their names stay importable from here.
from dativo_bridge.batch_settings import BATCH_CLEANUP_SETTING as BATCH_CLEANUP_SETTING
from dativo_bridge.batch_settings import BATCH_CONFIG_SCHEMA as BATCH_CONFIG_SCHEMA
from dativo_bridge.batch_settings import CLEANUP_MODES as CLEANUP_MODES
from dativo_bridge.batch_settings import COMPRESSIONS as COMPRESSIONS
from dativo_bridge.batch_settings import FORMATS as FORMATS
from dativo_bridge.batch_settings import BatchSettings as BatchSettings
from dativo_bridge.batch_settings import cleanup_mode as cleanup_mode
from dativo_bridge.batch_settings import local_path as local_path
from dativo_bridge.codecs.encode import encode_rows
from dativo_bridge.conform import Mismatch, TypeMismatch
from dativo_bridge.errors import ConfigError, DecodeError

logger = logging.getLogger("dativo.batch")

#: Schema metadata key of the marker BatchFileWriter puts in arrow and parquet files:
#: JSON ``{"stream": <stream>, "file": <file name>}``.
MARKER_KEY = b"dativo.batch_file"

_ARROW_MAGIC = b"ARROW1"
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_IPC_CONTINUATION = b"\xff\xff\xff\xff"  # an IPC stream (not file) starts with it


def file_suffix(fmt: str, compression: str | None) -> str:
    """The file name ending Dativo gives a BATCH file of ``fmt``."""
    suffix = {"arrow": ".arrow", "parquet": ".parquet", "jsonl": ".jsonl"}[fmt]
    return suffix + ".gz" if fmt == "jsonl" and compression == "gzip" else suffix


def stream_file_part(stream: str) -> str:
    """The stream as it appears in a BATCH file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stream)


def file_uri(path: Path) -> str:
    """``file://`` and the absolute path as it is, escaping only ``%``, ``#`` and ``?``.

    singer-sdk's reader (``StorageTarget.split_url``) takes what follows ``file://`` as a
    path without percent-decoding it, while readers that decode (``urlparse`` and
    ``unquote``) read the same text correctly as long as it has no ``%``, ``#`` or ``?``:
    so a space or a non-ASCII letter in the root stays as it is, for both.
    """
    text = str(path)
    for char, escaped in (("%", "%25"), ("#", "%23"), ("?", "%3F")):
        text = text.replace(char, escaped)
    return "file://" + text


class BatchFileWriter:
    """Writes one BATCH file; it appears under its final name only when closed."""

    def __init__(self, settings: BatchSettings, stream: str, schema: pa.Schema) -> None:
        self.settings = settings
        settings.root.mkdir(parents=True, exist_ok=True)
        suffix = file_suffix(settings.format, settings.compression)
        name = f"{settings.prefix}{stream_file_part(stream)}-{uuid.uuid4().hex}{suffix}"
        self.path = settings.root / name
        self._temp = settings.root / f".{name}.tmp"
        self.rows = 0
        # The marker that lets a target prove the file is a Dativo tap's, for this stream.
        marker = json.dumps({"stream": stream, "file": name}).encode()
        schema = schema.with_metadata({**(schema.metadata or {}), MARKER_KEY: marker})
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
        return file_uri(self.path.resolve())

    def abort(self) -> None:
        """Discard the file."""
        with contextlib.suppress(Exception):  # discarding anyway
            self.close()
        self.path.unlink(missing_ok=True)
        self._temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class BatchFile:
    """One checked entry of a BATCH manifest.

    Attributes:
        uri: The entry as the manifest gives it.
        path: The local file.
        format: ``arrow``, ``parquet`` or ``jsonl``.
        compression: The declared compression.
        stream: The stream the BATCH message is for.
        owned: True when the file is provably a Dativo tap's BATCH file for the stream (a
            regular file, not a symlink, with Dativo's naming and, for arrow and parquet,
            its marker): only such files are ever deleted.
        device: ``st_dev`` of the file when it was checked.
        inode: ``st_ino`` of the file when it was checked.
        line_number: The BATCH message's line, for errors.
    """

    uri: str
    path: Path
    format: str
    compression: str | None
    stream: str
    owned: bool
    device: int
    inode: int
    line_number: int | None = None

    def error(self, reason: str) -> DecodeError:
        """A DecodeError naming this entry and its stream."""
        return _entry_error(self.uri, self.stream, self.line_number, reason)

    def batches(self, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
        """Arrow batches of an arrow or parquet file (jsonl: see :meth:`lines`).

        Args:
            schema: The stream's schema (from its SCHEMA message): each batch is given
                exactly its columns and types (:func:`as_stream_schema`). None: the
                file's own batches.

        Raises:
            DecodeError: The file is unreadable, or its data does not fit ``schema``; the
                error names the file, the stream and the column.
        """
        for batch in self._file_batches():
            if schema is None:
                yield batch
                continue
            try:
                yield as_stream_schema(batch, schema)
            except Mismatch as exc:
                raise self.error(f"does not match the SCHEMA: {exc}") from None

    def _file_batches(self) -> Iterator[pa.RecordBatch]:
        try:
            if self.format == "arrow":
                with pa.memory_map(str(self.path)) as source:
                    reader = ipc.open_file(source)
                    for i in range(reader.num_record_batches):
                        yield reader.get_batch(i)
            elif self.format == "parquet":
                yield from pq.ParquetFile(str(self.path)).iter_batches(batch_size=65_536)
            else:
                raise ValueError(self.format)
        except (OSError, pa.ArrowException) as exc:
            raise self.error(f"unreadable {self.format} file: {exc}") from None

    def lines(self) -> list[bytes]:
        """The non-empty lines of a jsonl file."""
        try:
            with open(self.path, "rb") as raw:
                data = raw.read()
            if self.compression == "gzip" or data[:2] == _GZIP_MAGIC:
                data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise self.error(f"unreadable jsonl file: {exc}") from None
        return [line for line in io.BytesIO(data) if line.strip()]


def check_manifest(
    manifest: Any,
    stream: str,
    fmt: str,
    compression: str | None,
    line_number: int | None = None,
) -> list[BatchFile]:
    """Every entry of a BATCH message's manifest, checked before any is read.

    Raises:
        DecodeError: The manifest is not a list, or an entry is not a string, not a local
            file, missing, a directory, empty, unreadable or not in the declared format;
            the error names the entry and the stream.
    """
    if not isinstance(manifest, list):
        raise DecodeError(
            f"BATCH 'manifest' must be a list of file URIs, not {type(manifest).__name__}",
            stream=stream,
            line_number=line_number,
            expected="a Singer BATCH message",
        )
    return [_check_entry(entry, stream, fmt, compression, line_number) for entry in manifest]


def _check_entry(
    entry: Any, stream: str, fmt: str, compression: str | None, line_number: int | None
) -> BatchFile:
    def fail(reason: str) -> DecodeError:
        return _entry_error(entry, stream, line_number, reason)

    if not isinstance(entry, str):
        raise fail("not a string (expected a file:// URI or a path)")
    try:
        path = _manifest_path(entry)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"unreadable: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail("not a regular file")
    if info.st_size == 0:
        raise fail(f"empty file, not a {fmt} file")
    marker = _read_marker(path, fmt, compression, fail)
    try:
        link = os.lstat(path)
    except OSError as exc:
        raise fail(f"unreadable: {exc.strerror or exc}") from None
    owned = (
        stat.S_ISREG(link.st_mode)  # not a symlink
        and (link.st_dev, link.st_ino) == (info.st_dev, info.st_ino)
        and _dativo_name(path.name, stream, fmt, compression)
        and (fmt == "jsonl" or marker == {"stream": stream, "file": path.name})
    )
    return BatchFile(
        entry, path, fmt, compression, stream, owned, info.st_dev, info.st_ino, line_number
    )


def _manifest_path(entry: str) -> Path:
    """The local file a manifest entry names: its ``file://`` URI percent-decoded, or, when
    no such file exists, taken as it is (singer-sdk writes the path of a ``file://`` storage
    root without encoding it, so ``sdk%20batches`` can be a directory's real name)."""
    path = local_path(entry)
    parsed = urlparse(entry)
    if parsed.scheme == "file" and not path.exists():
        raw = Path(entry[len("file://") :].removeprefix("localhost"))
        if raw != path and raw.is_absolute() and raw.exists():
            return raw
    return path


def _entry_error(entry: Any, stream: str, line_number: int | None, reason: str) -> DecodeError:
    return DecodeError(
        f"BATCH manifest entry {entry!r}: {reason}", stream=stream, line_number=line_number
    )


def _dativo_name(name: str, stream: str, fmt: str, compression: str | None) -> bool:
    """``<prefix><stream>-<32 hex>.<ext>``, the names BatchFileWriter gives."""
    pattern = (
        re.escape(stream_file_part(stream))
        + r"-[0-9a-f]{32}"
        + re.escape(file_suffix(fmt, compression))
    )
    return re.fullmatch(r"[^/]*" + pattern, name) is not None and not name.startswith(".")


def _read_marker(
    path: Path, fmt: str, compression: str | None, fail: Callable[[str], DecodeError]
) -> Any:
    """Check the file's format (magic bytes, readable schema); return its Dativo marker."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(-min(6, os.fstat(fh.fileno()).st_size), os.SEEK_END)
            tail = fh.read(6)
    except OSError as exc:
        raise fail(f"unreadable: {exc.strerror or exc}") from None
    if fmt == "jsonl":
        if compression == "gzip" and not head.startswith(_GZIP_MAGIC):
            raise fail("not a gzip file (the BATCH declares jsonl with gzip compression)")
        if not head.startswith(_GZIP_MAGIC) and not head.lstrip().startswith(b"{"):
            raise fail("not a JSON Lines file of objects")
        return None
    try:
        if fmt == "arrow":
            if not head.startswith(_ARROW_MAGIC) or tail != _ARROW_MAGIC:
                raise fail(_not_arrow_file(head))
            with pa.memory_map(str(path)) as source:
                schema = ipc.open_file(source).schema
        else:
            if not head.startswith(_PARQUET_MAGIC) or tail[-4:] != _PARQUET_MAGIC:
                raise fail("not a Parquet file (wrong magic bytes)")
            schema = pq.read_schema(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise fail(f"unreadable {fmt} file: {exc}") from None
    raw = (schema.metadata or {}).get(MARKER_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _not_arrow_file(head: bytes) -> str:
    """Why a file declared ``arrow`` is not an Arrow IPC file, with the likely cause."""
    if head.startswith(_GZIP_MAGIC):
        return (
            "not an Arrow IPC file but a gzip file (arrow BATCH files are never compressed "
            "as a whole; IPC buffer compression is inside the format)"
        )
    if head.startswith(_IPC_CONTINUATION):
        return (
            "an Arrow IPC stream, not an Arrow IPC file (arrow BATCH files use the IPC "
            "file format, with ARROW1 at both ends)"
        )
    return "not an Arrow IPC file (wrong magic bytes)"


def as_stream_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch from an arrow or parquet BATCH file with exactly the stream's columns and
    types, each value meaning what it would mean in a RECORD message.

    Dativo taps write the stream's own types, so their batches pass unchanged. Files of
    other writers (singer-sdk infers each file's types from its records) are cast column by
    column where the JSON kind is the same: any number to any number (exactly: a float
    that a decimal cannot hold is an error), text to a date, time, timestamp or decimal
    (the SCHEMA's strings with a format), struct to struct and list to list (by field
    name), a column of nulls to anything; a JSON column (``arrow.json``) takes any value as
    its JSON text. A column the file lacks is null, as a property a record omits; a
    column the SCHEMA lacks is dropped.

    Raises:
        Mismatch: A column cannot take the file's values; the message names the column,
            both types and why.
    """
    if batch.schema.names == schema.names and batch.schema.types == schema.types:
        return batch
    names = batch.schema.names
    columns = [
        (
            _column_as(batch.column(want.name), want)
            if want.name in names
            else pa.nulls(batch.num_rows, want.type)
        )
        for want in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _kind(dtype: pa.DataType) -> str:
    """The JSON kind of values of an Arrow type (what a RECORD would carry)."""
    if isinstance(dtype, pa.JsonType):
        return "json"
    if isinstance(dtype, pa.ExtensionType):
        return _kind(dtype.storage_type)
    checks: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
        (pa.types.is_null, "null"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "number"),
        (pa.types.is_floating, "number"),
        (pa.types.is_decimal, "number"),
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_string_view, "string"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
        (pa.types.is_time, "time"),
        (pa.types.is_binary, "binary"),
        (pa.types.is_large_binary, "binary"),
        (pa.types.is_fixed_size_binary, "binary"),
        (pa.types.is_struct, "object"),
        (pa.types.is_map, "map"),
        (pa.types.is_list, "array"),
        (pa.types.is_large_list, "array"),
        (pa.types.is_fixed_size_list, "array"),
    )
    return next((kind for check, kind in checks if check(dtype)), str(dtype))


def _column_as(column: pa.Array, want: pa.Field) -> pa.Array:
    if pa.types.is_dictionary(column.type) and not pa.types.is_dictionary(want.type):
        column = column.dictionary_decode()  # a categorical column: its values
    got = column.type
    if got == want.type:
        return column
    have, need = _kind(got), _kind(want.type)
    if have == "null":
        return pa.nulls(len(column), want.type)
    if need == "json":
        if have == "json":
            storage = column.storage if isinstance(column, pa.ExtensionArray) else column
        else:
            values = column.to_pylist()
            storage = pa.array([None if v is None else _json_text(v) for v in values], pa.string())
        return pa.ExtensionArray.from_storage(want.type, storage.cast(want.type.storage_type))
    text_to = need in ("timestamp", "date", "time") or pa.types.is_decimal(want.type)
    if have != need and not (have == "string" and text_to):
        raise TypeMismatch(want, got)
    try:
        cast = column.cast(want.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise Mismatch(
            f"column '{want.name}' ({got}) cannot be read as {want.type}: {exc}"
        ) from None
    if pa.types.is_floating(got) and pa.types.is_decimal(want.type):
        # Arrow rounds a float to the decimal's scale; a RECORD's number is exact or refused.
        inexact = pc.not_equal(cast.cast(got), column)
        if pc.any(inexact).as_py():
            row = pc.index(inexact, True).as_py()
            raise Mismatch(
                f"column '{want.name}': {column[row].as_py()!r} (row {row}) does not fit "
                f"{want.type} exactly"
            )
    return cast


def _json_text(value: Any) -> str:
    """A Python value from an Arrow column as JSON text (numbers exact, temporal values as
    ISO 8601 text, bytes as base64), as a RECORD message would carry it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else "null"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return orjson.dumps(value.isoformat()).decode()
    if isinstance(value, bytes):
        return orjson.dumps(base64.b64encode(value).decode()).decode()
    if isinstance(value, Mapping):
        items = (orjson.dumps(str(k)).decode() + ":" + _json_text(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        # A map column's rows come as lists of (key, value) pairs: an object.
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return _json_text(dict(value))
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    return orjson.dumps(str(value)).decode()


def delete_batch_files(files: Sequence[BatchFile]) -> None:
    """Remove owned BATCH files after their rows were committed (others are kept).

    A file is removed only if the path still names the very file that was read (same
    device and inode, still a regular file).
    """
    for file in files:
        if not file.owned:
            continue
        try:
            now = os.lstat(file.path)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (
                file.device,
                file.inode,
            ):
                logger.warning("not deleting batch file %s: it changed since it was read", file.uri)
                continue
            file.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("could not delete batch file %s: %s", file.uri, exc)
