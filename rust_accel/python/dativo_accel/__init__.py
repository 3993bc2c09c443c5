"""Rust accelerators for Dativo.

``read_copy`` runs a PostgreSQL ``COPY ... TO STDOUT (FORMAT binary)`` and decodes the
rows straight into Arrow record batches of a given schema, off the GIL; the result is
read through the Arrow PyCapsule interface (``pyarrow.RecordBatchReader.from_stream``).
``read_copy_parallel`` does the same for several queries (ctid partitions) at once, on
Rust threads, merged into one stream.

``encode_records`` writes a record batch as Singer RECORD lines, byte for byte as
``dativo_bridge.codecs.encode.encode_records`` does, or returns ``None`` for a batch it
does not support (then the Python encoder is used).

``RecordDecoder`` reads Singer RECORD lines into Arrow record batches of a stream's schema,
with the values ``dativo_bridge.codecs.decode.RecordDecoder`` gives, or declines a batch
(anything invalid or read differently by Python), which Python then decodes and reports.
``record_run`` finds runs of RECORD lines of one stream in a block of input, so a target
hands whole blocks to the decoder (``RecordDecoder.decode_segments``).

``ReplicationReader`` streams a logical replication slot (``START_REPLICATION ...
LOGICAL``, pgoutput) up to a given LSN, as chunks of ``(wal_position, message)``; its
standby status updates only ever report the LSN it is told the slot is confirmed at.
``TableChangeReader`` reads the same stream for one table, assembling its changes into
whole transactions and Arrow batches of text columns in Rust.
"""

from dativo_accel._core import (
    ConnectError,
    CopyError,
    CopyReader,
    DecodedBatch,
    RecordDecoder,
    ReplicationReader,
    TableChangeReader,
    __version__,
    encode_records,
    read_copy,
    read_copy_parallel,
    record_run,
)

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
