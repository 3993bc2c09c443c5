"""Reading encrypted objects back: plaintext chunks, or Arrow batches for Parquet content."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dativo_bridge.aws import parse_s3_uri, s3_client
from dativo_bridge.crypto.aws import decryption_providers
from dativo_bridge.crypto.decrypt import BinarySource, Decryptor
from dativo_bridge.crypto.errors import CryptoError, DecryptionError, EncryptionContextError
from dativo_bridge.crypto.keys import KeyProvider

#: Encryption-context entries Dativo writes (user entries may not use the prefix).
CONTEXT_BUCKET = "dativo:bucket"
CONTEXT_KEY = "dativo:key"
CONTEXT_STREAM = "dativo:stream"
CONTEXT_FORMAT = "dativo:format"
RESERVED_PREFIX = "dativo:"

Source = str | os.PathLike[str] | bytes | BinarySource


@contextlib.contextmanager
def open_source(
    source: Source,
    aws: Mapping[str, Any] | None = None,
    expected_context: Mapping[str, str] | None = None,
) -> Iterator[tuple[BinarySource, dict[str, str]]]:
    """Open a local path, an ``s3://bucket/key`` URI, bytes or a stream for reading.

    For an S3 URI the expected context gains ``dativo:bucket`` and ``dativo:key`` of the
    URI, so an object copied or moved to another key is rejected.

    Yields:
        The binary stream and the full expected context.
    """
    expected = dict(expected_context or {})
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(source)), expected
    elif isinstance(source, str) and source.startswith("s3://"):
        bucket, key = parse_s3_uri(source)
        for name, value in ((CONTEXT_BUCKET, bucket), (CONTEXT_KEY, key)):
            if expected.get(name, value) != value:
                raise EncryptionContextError(
                    f"expected {name} {expected[name]!r} but reading {value!r}"
                )
            expected[name] = value
        try:
            body = s3_client(aws or {}).get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            raise CryptoError(f"cannot read {source}: {code or type(exc).__name__}") from None
        try:
            yield body, expected
        finally:
            body.close()
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            yield fh, expected
    else:
        yield source, expected


def _providers(
    providers: Sequence[KeyProvider] | None, aws: Mapping[str, Any] | None
) -> Sequence[KeyProvider]:
    return providers if providers is not None else decryption_providers(aws or {})


def iter_plaintext(
    source: Source,
    providers: Sequence[KeyProvider] | None = None,
    *,
    expected_context: Mapping[str, str] | None = None,
    aws: Mapping[str, Any] | None = None,
) -> Iterator[bytes]:
    """Stream the plaintext of an encrypted object, one authenticated frame at a time.

    Memory: one frame. A DecryptionError may be raised after earlier (authentic) frames
    were yielded; discard the output then.

    Args:
        source: A local path, an ``s3://`` URI, bytes, or a binary stream.
        providers: Key providers; None means KMS with the key id from the header.
        expected_context: Entries the encryption context must contain.
        aws: S3/KMS settings (endpoint_url, kms_endpoint_url, region, credentials).

    Yields:
        Plaintext chunks.
    """
    keyring = _providers(providers, aws)
    with open_source(source, aws, expected_context) as (stream, expected):
        yield from Decryptor(stream, keyring, expected).frames()


def open_encrypted_parquet(
    source: Source,
    providers: Sequence[KeyProvider] | None = None,
    *,
    expected_context: Mapping[str, str] | None = None,
    aws: Mapping[str, Any] | None = None,
) -> pq.ParquetFile:
    """Decrypt an encrypted Parquet object into memory and open it.

    Parquet needs random access (its footer is at the end), so the whole plaintext is
    decrypted and authenticated into memory first: memory is about the object's plaintext
    size (bounded by the writer's ``target_file_size_mb``). Nothing is parsed before every
    frame verified, and no plaintext is written to disk.

    Args:
        source: A local path, an ``s3://`` URI, bytes, or a binary stream.
        providers: Key providers; None means KMS with the key id from the header.
        expected_context: Entries the encryption context must contain.
        aws: S3/KMS settings.

    Returns:
        The opened Parquet file (backed by the in-memory plaintext).
    """
    keyring = _providers(providers, aws)
    with open_source(source, aws, expected_context) as (stream, expected):
        decryptor = Decryptor(stream, keyring, expected)
        fmt = decryptor.header().context.get(CONTEXT_FORMAT, "parquet")
        if fmt != "parquet":
            raise DecryptionError(f"the object holds {fmt}, not parquet: use iter_plaintext")
        plaintext = b"".join(decryptor.frames())
    return pq.ParquetFile(pa.BufferReader(plaintext))


def read_encrypted_parquet(
    source: Source,
    providers: Sequence[KeyProvider] | None = None,
    *,
    expected_context: Mapping[str, str] | None = None,
    aws: Mapping[str, Any] | None = None,
    batch_size: int = 65_536,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Decrypt an encrypted Parquet object and yield its rows as Arrow batches.

    See :func:`open_encrypted_parquet` for the memory behaviour (the object's plaintext is
    held in memory; ciphertext is streamed and verified frame by frame).

    Args:
        source: A local path, an ``s3://`` URI, bytes, or a binary stream.
        providers: Key providers; None means KMS with the key id from the header.
        expected_context: Entries the encryption context must contain.
        aws: S3/KMS settings.
        batch_size: Rows per yielded batch.
        columns: Only these columns.

    Yields:
        Record batches.
    """
    parquet = open_encrypted_parquet(source, providers, expected_context=expected_context, aws=aws)
    yield from parquet.iter_batches(
        batch_size=batch_size, columns=list(columns) if columns is not None else None
    )


def read_encrypted_table(
    source: Source,
    providers: Sequence[KeyProvider] | None = None,
    *,
    expected_context: Mapping[str, str] | None = None,
    aws: Mapping[str, Any] | None = None,
) -> pa.Table:
    """An encrypted Parquet object as one Arrow table (see :func:`open_encrypted_parquet`)."""
    return open_encrypted_parquet(
        source, providers, expected_context=expected_context, aws=aws
    ).read()
