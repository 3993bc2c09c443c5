"""The reader side of every run: one loop that checks a reader's batches against what it
declared and says when the stream's bookmark may advance.

Used by the in-process runner, the Singer tap's RECORD path and its BATCH path, so that
all three hold the same two rules:

- A batch has the stream's declared schema: the same columns and types (or one of the
  safe casts in :data:`SAFE_CASTS`), no null in a key property or a non-nullable column.
  Anything else is a :class:`ReaderContractError` naming the stream and the column.
- LOG_BASED streams are read only by readers that declare ``supports_log_based``, in
  the reader's change form (:func:`stream_to_read`); their bookmark is the reader's LSN.
  Their one row with null keys is a TRUNCATE (:func:`truncate_rows`): passed in process,
  refused with a ReadError on a Singer pipe (docs/cdc.md).
- The bookmark contract (docs/writing-plugins.md): a stream whose reader declares
  ``is_sorted`` yields batches in replication-key order, which is checked (a key that goes
  backwards is an error, never a lost row); its bookmark advances after each batch. An
  unsorted stream's bookmark advances only when the stream has been read to its end.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.conform import MissingColumns, NullValue, TypeMismatch, conform
from dativo_bridge.errors import ConfigError, ReaderContractError, ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo

#: Implemented by readers that declare ``supports_log_based = True`` (tap-dativo-postgres).
LOG_BASED = "LOG_BASED"


def _is_safe_cast(got: pa.DataType, want: pa.DataType) -> bool:
    """The casts a reader may rely on: lossless, and the same value in every engine."""
    if pa.types.is_null(got):
        return True  # an all-null column of any declared type
    if pa.types.is_integer(got) and pa.types.is_integer(want):
        # Widening only: every value of `got` fits `want`.
        if pa.types.is_signed_integer(got) and pa.types.is_unsigned_integer(want):
            return False
        extra = 0 if pa.types.is_signed_integer(got) == pa.types.is_signed_integer(want) else 1
        return bool(got.bit_width + extra <= want.bit_width)
    if pa.types.is_floating(got) and pa.types.is_floating(want):
        return bool(got.bit_width <= want.bit_width)
    pairs = (
        (pa.types.is_string, pa.types.is_large_string),
        (pa.types.is_binary, pa.types.is_large_binary),
    )
    for small, large in pairs:
        if (small(got) or large(got)) and (small(want) or large(want)):
            return True
    return False


#: What :func:`check_batch` casts instead of refusing (documented in writing-plugins.md).
SAFE_CASTS = (
    "a column of Arrow type null (all values null) to any type",
    "integers to a wider integer type (int32 -> int64, uint16 -> int32, ...)",
    "float32 to float64",
    "string <-> large_string, binary <-> large_binary",
)


#: Set on a LOG_BASED stream's deletes and truncates.
DELETED_AT = "_sdc_deleted_at"


def truncate_rows(stream: StreamInfo, batch: pa.RecordBatch) -> pa.Array | None:
    """Per row, whether it is a TRUNCATE of a LOG_BASED stream (every key property null,
    ``_sdc_deleted_at`` set: docs/cdc.md); None when the batch has none."""
    keys = [k for k in stream.key_properties if k in batch.schema.names]
    if stream.replication_method != LOG_BASED or not keys or DELETED_AT not in batch.schema.names:
        return None
    mask = pc.is_valid(batch.column(DELETED_AT))
    for key in keys:
        mask = pc.and_(mask, pc.is_null(batch.column(key)))
    return mask if pc.any(mask).as_py() else None


def check_batch(
    stream: StreamInfo, batch: pa.RecordBatch, *, truncates: bool = True
) -> pa.RecordBatch:
    """``batch`` with exactly the stream's declared schema, or a ReaderContractError.

    Columns are taken by name in the declared order (a reader may yield more columns
    than were selected). Types must match exactly, or be one of :data:`SAFE_CASTS`; a
    naive timestamp in a zoned column, a string in an integer column and the like are
    refused. Key properties and columns declared non-nullable must have no nulls, but in
    a TRUNCATE of a LOG_BASED stream (:func:`truncate_rows`), which ``truncates=False``
    (a Singer pipe: no Singer target takes a record without its key) refuses with a
    ReadError.
    """
    keys = set(stream.key_properties)
    required = [f.name for f in stream.schema if f.name in keys or not f.nullable]
    marks = truncate_rows(stream, batch)
    if marks is not None:
        if not truncates:
            raise ReadError(
                f"stream '{stream.name}': the source table was truncated; a Singer record "
                "cannot carry a TRUNCATE (its key would be null), so the read stops there "
                "and the state does not pass it. Read the stream with dativo run (which "
                "applies it), or empty the destination and read the stream again from a new "
                "snapshot (remove its bookmark from the state); docs/cdc.md, 'TRUNCATE'"
            )
        # A truncate's keys are null; every other row's must hold values.
        check_batch(stream, batch.filter(pc.invert(marks)), truncates=False)
        required = [f.name for f in stream.schema if f.name not in keys and not f.nullable]
    try:
        return conform(batch, stream.schema, allowed=_is_safe_cast, not_null=required)
    except MissingColumns as exc:
        raise ReaderContractError(
            f"stream '{stream.name}': a batch lacks declared column(s) {exc.names}"
        ) from None
    except TypeMismatch as exc:
        raise ReaderContractError(
            f"stream '{stream.name}', column '{exc.field.name}': a batch has type "
            f"{exc.got}, but the stream declares {exc.field.type} (readers must "
            "yield the declared types; see docs/writing-plugins.md)"
        ) from None
    except NullValue as exc:
        what = "key property" if exc.name in keys else "non-nullable column"
        raise ReaderContractError(
            f"stream '{stream.name}': row {exc.row} of a batch has no value for {what} '{exc.name}'"
        ) from None


def comparable_bookmark(value: Any, type_: pa.DataType) -> pa.Scalar | None:
    """A stored bookmark (as STATE keeps it: often an ISO string) as a scalar of the
    replication key's Arrow type, so it compares with the column's values; None when it
    cannot be read as that type."""
    if value is None:
        return None
    try:
        if pa.types.is_timestamp(type_) and isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value)
            if type_.tz is not None and parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            if type_.tz is None and parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            return pa.scalar(parsed, type_)
        if pa.types.is_date(type_) and isinstance(value, str):
            return pa.scalar(dt.date.fromisoformat(value[:10]), type_)
        if pa.types.is_decimal(type_):
            return pa.scalar(decimal.Decimal(str(value)), type_)
        return pa.scalar(value).cast(type_)
    except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


class BookmarkTracker:
    """The bookmark of one stream as its batches go by.

    Args:
        reader: The stream's reader (its ``bookmark`` gives the value to store).
        stream: The stream as read (schema, replication key and method).
        start: The bookmark the read resumed from (None for a full read).
    """

    def __init__(self, reader: ArrowReader, stream: StreamInfo, start: Any) -> None:
        self.reader = reader
        self.stream = stream
        self.value = start
        self.sorted = bool(getattr(reader, "is_sorted", False))
        self.incremental = stream.replication_method in ("INCREMENTAL", LOG_BASED) and bool(
            stream.replication_key
        )
        self._released = start
        self._top: pa.Scalar | None = None

    def after(self, batch: pa.RecordBatch) -> Any | None:
        """Account for ``batch``; returns the bookmark to release now, or None.

        Raises:
            ReaderContractError: A sorted stream's key went below one already yielded.
        """
        if not self.incremental:
            return None
        key = self.stream.replication_key
        assert key is not None
        if self.sorted and batch.num_rows:
            column = batch.column(key)
            low = pc.min(column)
            if self._top is not None and low.is_valid and pc.less(low, self._top).as_py():
                raise ReaderContractError(
                    f"stream '{self.stream.name}': the reader declares is_sorted, but "
                    f"replication key '{key}' went back from {self._top.as_py()} to "
                    f"{low.as_py()}; yield batches in key order or set is_sorted = False "
                    "(the bookmark then advances only at the end of the stream)"
                )
            high = pc.max(column)
            if high.is_valid and (self._top is None or pc.greater(high, self._top).as_py()):
                self._top = high
        self.value = self.reader.bookmark(self.stream, batch, self.value)
        if not self.sorted or self.value is None or self.value == self._released:
            return None
        self._released = self.value
        return self.value

    def at_end(self) -> Any | None:
        """The stream was read to its end: the bookmark to release, or None if unchanged."""
        if not self.incremental or self.value is None or self.value == self._released:
            return None
        self._released = self.value
        return self.value


#: The replication methods every reader implements.
REPLICATION_METHODS = ("FULL_TABLE", "INCREMENTAL")


def supports_log_based(reader: ArrowReader | type[ArrowReader] | None) -> bool:
    """Whether ``reader`` declares that it reads LOG_BASED (change data capture) streams:
    a class attribute ``supports_log_based = True`` and a ``log_based_stream`` method."""
    cls = reader if isinstance(reader, type) or reader is None else type(reader)
    return bool(getattr(cls, "supports_log_based", False)) and hasattr(cls, "log_based_stream")


def check_replication_method(stream: StreamInfo, reader: ArrowReader | None = None) -> None:
    """Refuse a replication method the reader does not implement, instead of reading in
    full and pretending (the catalog's ``replication-method``).

    Raises:
        ConfigError: The method is not FULL_TABLE or INCREMENTAL, nor LOG_BASED for a
            reader that supports it.
    """
    method = stream.replication_method
    if method in REPLICATION_METHODS or (method == LOG_BASED and supports_log_based(reader)):
        return
    if method == LOG_BASED:
        raise ConfigError(
            f"stream '{stream.name}': replication-method LOG_BASED is not supported by "
            f"{getattr(reader, 'name', 'this reader')}: use INCREMENTAL with a "
            "replication-key, or FULL_TABLE (tap-dativo-postgres reads LOG_BASED: docs/cdc.md)"
        )
    raise ConfigError(
        f"stream '{stream.name}': replication-method {method} is not supported: use "
        "INCREMENTAL with a replication-key, or FULL_TABLE"
    )


def stream_to_read(reader: ArrowReader, stream: StreamInfo) -> StreamInfo:
    """``stream`` as ``reader`` reads it: its replication method checked, and a LOG_BASED
    stream in the reader's change form (its change columns, such as ``_sdc_lsn`` and
    ``_sdc_deleted_at``, and its LSN column as the replication key). Idempotent."""
    check_replication_method(stream, reader)
    if stream.replication_method == LOG_BASED:
        shaped: StreamInfo = reader.log_based_stream(stream)  # type: ignore[attr-defined]
        return shaped
    return stream


def checked_batches(
    reader: ArrowReader, stream: StreamInfo, start: Any, *, truncates: bool = True
) -> Iterator[tuple[pa.RecordBatch, Any | None]]:
    """``(batch, bookmark_or_None)`` for every batch the reader yields for ``stream``, each
    checked against the declaration; a last ``(empty batch, bookmark)`` when the end of
    the stream releases a bookmark (an unsorted stream's only one). A LOG_BASED stream is
    read in the reader's change form (:func:`stream_to_read`); ``truncates`` as in
    :func:`check_batch`."""
    stream = stream_to_read(reader, stream)
    tracker = BookmarkTracker(reader, stream, start)
    for batch in reader.read(stream, start):
        batch = check_batch(stream, batch, truncates=truncates)
        yield batch, tracker.after(batch)
    final = tracker.at_end()
    if final is not None:
        yield pa.RecordBatch.from_pylist([], schema=stream.schema), final
