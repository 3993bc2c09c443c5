"""EncryptedS3Writer against moto's S3 and KMS server: round trips of every Arrow type for
both key providers, visibility only on commit, constant-memory streaming, and objects that
say nothing about their content."""

from __future__ import annotations

import base64
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.codecs.encode import encode_rows
from dativo_bridge.crypto import (
    DecryptionError,
    EncryptionContextError,
    KeyProviderError,
    LocalKeyProvider,
    iter_plaintext,
    read_encrypted_parquet,
    read_encrypted_table,
)
from dativo_bridge.errors import ConfigError
from dativo_bridge.interfaces import StreamInfo
from target_dativo_s3.writer import EncryptedS3Writer

from ..test_writer_behaviour import ALL_TYPES, _same
from .layout import collect, parse

SCHEMA = pa.schema([f.with_nullable(f.name != "id") for f in ALL_TYPES.schema])
TYPES = pa.RecordBatch.from_arrays(ALL_TYPES.columns, schema=SCHEMA)


def write(config: dict[str, Any], stream: str, *batches: pa.RecordBatch) -> list[str]:
    writer = EncryptedS3Writer()
    writer.open(config, StreamInfo(stream, batches[0].schema, ("id",)))
    try:
        for batch in batches:
            writer.write(batch)
        return writer.commit().paths
    finally:
        writer.close()


def object_key(uri: str) -> str:
    return uri.split("/", 3)[3]


def assert_same_rows(table: pa.Table) -> None:
    assert table.schema == SCHEMA
    for got_row, want_row in zip(table.to_pylist(), TYPES.to_pylist(), strict=True):
        for name, want in want_row.items():
            assert _same(want, got_row[name]), (name, got_row[name], want)


@pytest.mark.parametrize("provider", ["key_file", "key_env", "kms", "kms+key_file"])
def test_every_arrow_type_round_trips(
    provider: str,
    aws: dict[str, Any],
    bucket: str,
    key_file: Path,
    kms_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config: dict[str, Any] = {**aws, "bucket": bucket, "prefix": "lake/raw"}
    if "kms" in provider:
        config["kms_key_id"] = kms_key
    if "key_file" in provider:
        config["key_file"] = str(key_file)
    if provider == "key_env":
        monkeypatch.setenv("DATIVO_TEST_KEY", base64.b64encode(key_file.read_bytes()).decode())
        config["key_env"] = "DATIVO_TEST_KEY"
    [uri] = write(config, "clinic-visits", TYPES)
    assert uri.startswith(f"s3://{bucket}/lake/raw/clinic-visits/part-")
    assert uri.endswith(".parquet.dtve")
    local = [LocalKeyProvider.from_file(key_file)]
    if "kms" in provider:
        # No local key: the KMS key id comes from the header.
        assert_same_rows(read_encrypted_table(uri, aws=aws))
    if provider != "kms":
        batches = list(read_encrypted_parquet(uri, local, aws=aws, batch_size=2))
        assert [b.num_rows for b in batches] == [2, 1]
        assert_same_rows(pa.Table.from_batches(batches))


def test_objects_are_invisible_until_commit_and_aborted_on_close(
    aws: dict[str, Any], bucket: str, key_file: Path, s3: Any
) -> None:
    config = {**aws, "bucket": bucket, "key_file": str(key_file)}
    writer = EncryptedS3Writer()
    writer.open(config, StreamInfo("visits", SCHEMA, ("id",)))
    writer.write(TYPES)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    [uri] = writer.commit().paths
    writer.write(TYPES)  # written, never committed
    writer.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [object_key(uri)]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_object_says_nothing_about_its_content(
    aws: dict[str, Any], bucket: str, key_file: Path, s3: Any
) -> None:
    secret = pa.record_batch({"id": [1, 2], "note": ["PATIENT-SECRET-DIAGNOSIS"] * 2})
    config = {
        **aws,
        "bucket": bucket,
        "key_file": str(key_file),
        "compression": "none",
        "encryption_context": {"tenant": "north"},
    }
    [uri] = write(config, "notes", secret)
    head = s3.head_object(Bucket=bucket, Key=object_key(uri))
    assert head["Metadata"] == {"dativo-envelope": "dtve-1"}
    assert head["ContentType"] == "application/octet-stream"
    body = s3.get_object(Bucket=bucket, Key=object_key(uri))["Body"].read()
    assert b"PATIENT" not in body and b"PAR1" not in body
    layout = parse(body)
    assert layout.context == {
        "dativo:bucket": bucket,
        "dativo:key": object_key(uri),
        "dativo:stream": "notes",
        "dativo:format": "parquet",
        "tenant": "north",
    }
    assert layout.frame_length == 1024 * 1024
    [(provider, key_id, _)] = layout.data_keys
    assert provider == "dativo-local" and key_id.startswith("sha256:")
    assert key_file.read_bytes().hex()[:16] not in key_id


def test_moved_or_swapped_object_is_rejected(
    aws: dict[str, Any], bucket: str, key_file: Path, s3: Any
) -> None:
    config = {**aws, "bucket": bucket, "key_file": str(key_file)}
    [first] = write(config, "a", TYPES)
    [second] = write(config, "b", TYPES)
    keyring = [LocalKeyProvider.from_file(key_file)]
    s3.copy_object(
        Bucket=bucket,
        Key=object_key(second),
        CopySource={"Bucket": bucket, "Key": object_key(first)},
    )
    for uri in (second, f"s3://{bucket}/elsewhere/copy.parquet.dtve"):
        if "elsewhere" in uri:
            s3.copy_object(
                Bucket=bucket,
                Key=object_key(uri),
                CopySource={"Bucket": bucket, "Key": object_key(first)},
            )
        out, error = collect(partial(iter_plaintext, uri, keyring, aws=aws))
        assert isinstance(error, EncryptionContextError) and "dativo:key" in str(error)
        assert out == b""


def test_large_objects_stream_in_constant_memory(
    aws: dict[str, Any], bucket: str, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 MiB of incompressible rows: three 5 MiB multipart parts, one part buffered."""
    from target_dativo_s3 import writer as writer_module

    uploads: list[Any] = []
    original = writer_module.MultipartUpload

    def tracked(*args: Any, **kwargs: Any) -> Any:
        uploads.append(original(*args, **kwargs))
        return uploads[-1]

    monkeypatch.setattr(writer_module, "MultipartUpload", tracked)
    config = {
        **aws,
        "bucket": bucket,
        "key_file": str(key_file),
        "compression": "none",
        "upload_part_size_mb": 5,
        "frame_size": 65536,
    }
    batches = [pa.record_batch({"id": [i], "blob": [os.urandom(1024 * 1024)]}) for i in range(12)]
    [uri] = write(config, "scans", *batches)
    [upload] = uploads
    assert len(upload._parts) == 3
    assert upload.max_buffered < 5 * 1024 * 1024 + 2 * 1024 * 1024
    table = read_encrypted_table(uri, [LocalKeyProvider.from_file(key_file)], aws=aws)
    assert table["blob"].to_pylist() == [b["blob"][0].as_py() for b in batches]


def test_objects_rotate_at_target_size(aws: dict[str, Any], bucket: str, key_file: Path) -> None:
    # Rows are gathered into row groups, counted at their Arrow size until written: a
    # target below one batch's 395 Arrow bytes makes each batch an object of its own.
    config = {**aws, "bucket": bucket, "key_file": str(key_file), "target_file_size_mb": 0.0003}
    paths = write(config, "visits", TYPES, TYPES, TYPES)
    assert len(paths) == 3
    keyring = [LocalKeyProvider.from_file(key_file)]
    for uri in paths:
        assert_same_rows(read_encrypted_table(uri, keyring, aws=aws))


def test_jsonl_format(aws: dict[str, Any], bucket: str, key_file: Path) -> None:
    config = {
        **aws,
        "bucket": bucket,
        "key_file": str(key_file),
        "format": "jsonl",
        "frame_size": 1024,
    }
    [uri] = write(config, "visits", TYPES)
    assert uri.endswith(".jsonl.dtve")
    keyring = [LocalKeyProvider.from_file(key_file)]
    plaintext = b"".join(iter_plaintext(uri, keyring, aws=aws))
    assert plaintext == encode_rows(TYPES)
    assert [json.loads(line)["id"] for line in plaintext.splitlines()] == [1, 2, 3]
    with pytest.raises(DecryptionError, match="holds jsonl"):
        read_encrypted_table(uri, keyring, aws=aws)


def test_schema_change_starts_a_new_object(
    aws: dict[str, Any], bucket: str, key_file: Path
) -> None:
    config = {**aws, "bucket": bucket, "key_file": str(key_file)}
    narrow = pa.record_batch({"id": pa.array([1], pa.int64())})
    wide = pa.record_batch({"id": pa.array([2], pa.int64()), "x": pa.array(["b"])})
    writer = EncryptedS3Writer()
    writer.open(config, StreamInfo("evo", narrow.schema, ("id",)))
    writer.write(narrow)
    writer.update_schema(wide.schema)
    writer.write(wide)
    result = writer.commit()
    writer.close()
    keyring = [LocalKeyProvider.from_file(key_file)]
    tables = [read_encrypted_table(p, keyring, aws=aws) for p in result.paths]
    assert [t.to_pylist() for t in tables] == [[{"id": 1}], [{"id": 2, "x": "b"}]]
    assert result.rows == 2


def test_settings_are_checked(
    tmp_path: Path, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(31))
    stream = StreamInfo("s", SCHEMA)
    base = {**aws, "bucket": "b"}
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({}, ConfigError, "no encryption key"),
        ({"key_file": str(short)}, KeyProviderError, "holds 31 bytes"),
        ({"key_file": str(tmp_path / "missing")}, KeyProviderError, "cannot read key file"),
        ({"key_env": "DATIVO_UNSET_KEY"}, KeyProviderError, "is not set"),
        ({"key_env": "DATIVO_BAD_KEY"}, KeyProviderError, "not valid base64"),
        (
            {"key_file": str(short), "encryption_context": {"dativo:key": "x"}},
            ConfigError,
            "reserved",
        ),
        ({"format": "csv"}, ConfigError, "parquet or jsonl"),
        ({"upload_part_size_mb": 1}, ConfigError, "at least 5"),
        ({"frame_size": 16}, ConfigError, "frame_size"),
    ]
    monkeypatch.setenv("DATIVO_BAD_KEY", "not base64!")
    for extra, error, text in cases:
        with pytest.raises(error, match=text):
            EncryptedS3Writer().open({**base, **extra}, stream)
    with pytest.raises(ConfigError, match="bucket"):
        EncryptedS3Writer().open({"key_file": str(short)}, stream)


def test_small_batches_are_gathered_into_row_groups(
    aws: dict[str, Any], bucket: str, key_file: Path
) -> None:
    """row_group_rows means the row groups in the decrypted Parquet file, not the size of
    the batches the writer was handed (pyarrow writes each call as a row group)."""
    from dativo_bridge.crypto.reading import open_encrypted_parquet

    config = {**aws, "bucket": bucket, "key_file": str(key_file), "row_group_rows": 1000}
    batches = [
        pa.record_batch({"id": pa.array(range(lo, lo + 300), pa.int64())})
        for lo in range(0, 3000, 300)
    ]
    [uri] = write(config, "events", *batches)
    parquet = open_encrypted_parquet(uri, [LocalKeyProvider.from_file(key_file)], aws=aws)
    meta = parquet.metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000] * 3
    assert parquet.read().column("id").to_pylist() == list(range(3000))
