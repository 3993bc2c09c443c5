"""Rust accelerators for Dativo.

``read_copy`` runs a PostgreSQL ``COPY ... TO STDOUT (FORMAT binary)`` and decodes the
rows straight into Arrow record batches of a given schema, off the GIL; the result is
read through the Arrow PyCapsule interface (``pyarrow.RecordBatchReader.from_stream``).
"""

from dativo_accel._core import ConnectError, CopyError, CopyReader, __version__, read_copy

__all__ = ["ConnectError", "CopyError", "CopyReader", "__version__", "read_copy"]
