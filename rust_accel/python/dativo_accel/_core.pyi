"""Type stub of the compiled extension (checked with ``python -m mypy.stubtest``)."""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, final

__all__ = [
    "ConnectError",
    "CopyError",
    "CopyReader",
    "DecodedBatch",
    "RecordDecoder",
    "ReplicationReader",
    "TableChangeReader",
    "__version__",
    "encode_records",
    "read_copy",
    "read_copy_parallel",
    "record_run",
]
__version__: str

class _ArrowSchemaExportable(Protocol):
    def __arrow_c_schema__(self) -> object: ...

class _ArrowArrayExportable(Protocol):
    def __arrow_c_array__(self, requested_schema: Any | None = None) -> tuple[object, object]: ...

class CopyError(Exception):
    """A binary COPY read failed: a server error, or a value that does not fit its column."""

class ConnectError(CopyError):
    """The server could not be reached or refused the login (never holds the password)."""

@final
class CopyReader:
    """A running binary COPY, readable once as an Arrow stream of record batches."""

    def __arrow_c_stream__(self, requested_schema: Any | None = None) -> object: ...
    def __arrow_c_schema__(self) -> object: ...

def read_copy(
    dsn: str,
    query: str,
    schema: _ArrowSchemaExportable,
    decoders: Sequence[str],
    batch_bytes: int,
    setup: Sequence[str] = ...,
    tls: Mapping[str, str] | None = None,
) -> CopyReader:
    """Run ``query`` (a ``COPY ... TO STDOUT (FORMAT binary)``) and stream its rows.

    Args:
        dsn: A libpq ``key=value`` connection string or a ``postgresql://`` URI
            (a ``host`` starting with ``/`` is a unix-socket directory); with ``tls``,
            its ``sslmode`` must be ``require``.
        query: The COPY statement.
        schema: The Arrow schema of the batches (field metadata, e.g. extension types,
            is kept), anything with ``__arrow_c_schema__``.
        decoders: Per field, the PostgreSQL wire type to decode: ``int2``, ``int4``,
            ``int8``, ``oid``, ``float4``, ``float8``, ``bool``, ``text``, ``json``,
            ``jsonb``, ``uuid``, ``bytea``, ``date``, ``timestamp``, ``time``,
            ``interval``, ``numeric``, or one of them followed by ``[]`` for a
            one-dimensional array.
        batch_bytes: A batch ends after the row that brings its COPY bytes to this.
        setup: Statements run first on the same connection (``SET ...``, ``BEGIN ...``).
        tls: ``None`` (no TLS) or libpq's TLS settings: ``mode`` (``require``: encrypted,
            the certificate is not checked; ``verify-ca``: its chain must lead to
            ``root_cert``; ``verify-full``: and its name must match the host), and the
            PEM files ``root_cert``, ``cert`` and ``key`` (a client certificate).

    Raises:
        ConnectError: The server could not be reached or refused the login.
        CopyError: A statement failed.
        ValueError: ``decoders`` does not match ``schema``.
    """

def read_copy_parallel(
    dsn: str,
    queries: Sequence[str],
    schema: _ArrowSchemaExportable,
    decoders: Sequence[str],
    batch_bytes: int,
    workers: int,
    setup: Sequence[str] = ...,
    tls: Mapping[str, str] | None = None,
) -> CopyReader:
    """Run several COPY queries at once, on ``workers`` Rust threads, as one stream.

    Each query gets its own connection, which runs ``setup`` first (e.g. ``BEGIN ...``
    and ``SET TRANSACTION SNAPSHOT '...'`` so that all partitions read one snapshot). The
    batches of all queries arrive in one stream, in the order they are decoded. The first
    query of each worker is started before this returns, so connection and SQL errors are
    raised here; later ones surface from the stream. Reading stops (and the running COPYs
    are cancelled) when the stream is dropped.

    Args:
        dsn, schema, decoders, batch_bytes, setup, tls: As for :func:`read_copy`.
        queries: The COPY statements, e.g. one per ctid range.
        workers: Threads (and connections) at once, at most ``len(queries)``.

    Raises:
        ConnectError: The server could not be reached or refused the login.
        CopyError: A statement failed.
        ValueError: ``decoders`` does not match ``schema``, or ``queries`` is empty.
    """

def encode_records(
    batch: _ArrowArrayExportable, stream: str, version: int | None = None
) -> bytes | None:
    """Encode a record batch as Singer RECORD lines (one per row, each ending in a newline).

    The output is byte for byte that of ``dativo_bridge.codecs.encode.encode_records``.
    Encoding runs without the GIL.

    Args:
        batch: A record batch, anything with ``__arrow_c_array__`` exporting a struct array.
        stream: The stream name written into each message.
        version: Optional table version (``"version":N`` after ``record``).

    Returns:
        The lines, or ``None`` when the batch holds an Arrow type (dictionary, duration,
        float16, an extension other than ``arrow.json``, ...) or a value (a date outside
        years 1-9999, a time of day out of range) not written here; the caller then
        encodes it in Python.
    """

@final
class DecodedBatch:
    """One decoded record batch, exported once (``pyarrow.record_batch(obj)``)."""

    def __arrow_c_array__(self, requested_schema: Any | None = None) -> tuple[object, object]: ...

@final
class RecordDecoder:
    """Decodes the Singer RECORD lines of one stream into Arrow batches of its schema.

    Args:
        schema: The stream's Arrow schema, anything with ``__arrow_c_schema__``; the
            ``arrow.json`` extension is read from field metadata.
        key_properties: Properties every record must have, not null.
        float32_direct: Read float32 properties with one rounding (as Arrow's JSON
            reader) instead of through a float64 (as Python's ``float``).

    Raises:
        ValueError: A type of ``schema`` is not supported here.
    """

    def __new__(
        cls,
        schema: _ArrowSchemaExportable,
        key_properties: Sequence[str] = ...,
        float32_direct: bool = True,
    ) -> RecordDecoder: ...
    def decode(self, lines: Sequence[bytes]) -> tuple[DecodedBatch | None, list[str], str | None]:
        """Decode whole RECORD messages (one per line), without the GIL.

        Returns:
            ``(batch, extra, None)``: the batch and the record properties not in the
            schema; or ``(None, [], reason)`` when the batch is declined: a value
            Python rejects, or one Python reads in a way not reproduced here.
        """
    def decode_segments(
        self, segments: Sequence[tuple[bytes, int, int]]
    ) -> tuple[DecodedBatch | None, list[str], str | None]:
        """``decode`` of the lines in ``data[start:end]`` of each ``(data, start, end)``.

        Each line ends after a ``\\n``; a last piece without one is a line too. Lets a
        target pass whole blocks of input instead of one ``bytes`` object per line.

        Raises:
            ValueError: A segment is out of its data's range.
        """

def record_run(
    data: bytes, start: int, stream: bytes | None, max_lines: int, max_bytes: int
) -> tuple[bytes | None, int, int]:
    """The run of RECORD lines of ``stream`` starting at ``data[start]``.

    A line belongs to the run when it is complete (ends in ``\\n``) and starts with
    ``{"type": "RECORD", "stream": "<stream>"`` (white space allowed around the tokens, no
    escapes in the name): the head pattern of ``dativo_bridge.codecs.messages``.
    The run holds at most ``max_lines`` lines and ends with the line that brings its
    size to ``max_bytes`` or more.

    Returns:
        ``(head, end, count)``: the stream named by the first line's head (None when it
        is not such a line or not complete), the end offset of the run and its number of
        lines. The run is empty when the first line names another stream or ``stream``
        is None: ask again with that stream's limits.
    """

@final
class ReplicationReader:
    """A running ``START_REPLICATION SLOT ... LOGICAL`` read (pgoutput, proto_version 1)
    of a slot over a walsender connection, iterated as chunks of ``(wal_position,
    message)``; it ends once the read reached ``upto``, the way
    ``pg_logical_slot_peek_binary_changes(slot, upto, ...)`` ends.

    Standby status updates report ``confirmed`` (as written, flushed and applied), never
    the position read: the slot is not moved by the read.

    Args:
        dsn: A libpq ``key=value`` connection string or a ``postgresql://`` URI (a
            ``host`` starting with ``/`` is a unix-socket directory); with ``tls``,
            ``sslmode=require``.
        slot: The logical (pgoutput) slot; the server lets one backend use it at a time.
        publication: The publication to decode.
        start: Stream transactions committed from this LSN on.
        upto: The WAL end seen when the read began.
        confirmed: The LSN the slot is confirmed at (what status updates report).
        chunk: Messages per chunk at most.
        unchanged: Given, each insert, update and delete comes decoded, as ``(kind,
            relation_oid, new, old, key_only)`` (``kind`` ``insert``, ``update`` or
            ``delete``; ``new``/``old`` tuples of None, str for a text value, bytes for
            a binary one, or ``unchanged`` for an unchanged TOASTed value; None when the
            message has no such tuple), other messages as bytes.
        tls: As for :func:`read_copy`: the connection asks for TLS (``SSLRequest``) and
            checks the server's certificate as ``mode`` says; a server without TLS is an
            error.
    """

    def __new__(
        cls,
        dsn: str,
        slot: str,
        publication: str,
        start: int,
        upto: int,
        confirmed: int,
        chunk: int = 4096,
        unchanged: object | None = None,
        tls: Mapping[str, str] | None = None,
    ) -> ReplicationReader: ...
    def __iter__(self) -> ReplicationReader: ...
    def __next__(
        self,
    ) -> list[
        tuple[
            int, bytes | tuple[str, int, tuple[object, ...] | None, tuple[object, ...] | None, bool]
        ]
    ]: ...
    def close(self) -> None:
        """End the session (the server releases the slot as its backend exits)."""
    @property
    def reported_lsn(self) -> int:
        """The highest LSN a standby status update reported as flushed (0: none sent)."""
    @property
    def status_updates(self) -> int:
        """Standby status updates sent."""
    @property
    def server_lsn(self) -> int:
        """The highest WAL position the server reported (XLogData or keepalive)."""

@final
class TableChangeReader:
    """One table's changes from a ``START_REPLICATION SLOT ... LOGICAL`` read (the
    connection, ``upto`` and ``confirmed`` meanings are :class:`ReplicationReader`'s),
    assembled in Rust into whole transactions in commit order, the way
    ``tap_dativo_postgres.cdc.ChangeStream`` assembles them for the peek path.

    Iterated as ``(batch, position, added)``: ``batch`` exports (``__arrow_c_array__``,
    once) the wanted ``columns`` as text (utf8, null where the row has no value), then
    ``_lsn`` (int64, the commit's end LSN), ``_commit_us`` (int64, microseconds since the
    Unix epoch) and ``_deleted`` (bool); ``position`` is the end LSN of the batch's last
    transaction; ``added`` is None, or, on the last item, the columns (not in ``known``)
    whose Relation message stopped the read before the transaction that has them.

    Args:
        oid: The table's oid.
        columns: The table columns wanted in the batches, in order.
        keys: The primary key's columns (an update that changes them is a delete of the
            old key, then the new row).
        known: The columns the stream was discovered with.
        batch_rows: A batch ends at the first commit that brings it to this many rows.

    Raises:
        CopyError: On a decode error, including an unchanged TOASTed value the WAL does
            not carry (REPLICA IDENTITY DEFAULT), with the ALTER TABLE to run.
    """

    def __new__(
        cls,
        dsn: str,
        slot: str,
        publication: str,
        start: int,
        upto: int,
        confirmed: int,
        oid: int,
        columns: Sequence[str],
        keys: Sequence[str],
        known: Sequence[str],
        batch_rows: int,
        chunk: int = 4096,
        tls: Mapping[str, str] | None = None,
    ) -> TableChangeReader: ...
    def __iter__(self) -> TableChangeReader: ...
    def __next__(self) -> tuple[DecodedBatch, int, list[str] | None]: ...
    def close(self) -> None:
        """End the session (the server releases the slot as its backend exits)."""
    @property
    def reported_lsn(self) -> int:
        """The highest LSN a standby status update reported as flushed (0: none sent)."""
