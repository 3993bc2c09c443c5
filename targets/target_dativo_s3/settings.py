"""The settings of target-dativo-s3 and the (content-free) object metadata it writes."""

from __future__ import annotations

from typing import Any

from dativo_bridge.aws import S3_SETTINGS
from dativo_bridge.row_groups import row_group_settings

#: dativo_bridge.crypto.format.DEFAULT_FRAME_LENGTH, not imported from there: the crypto
#: package imports cryptography and pyarrow, which --about does not need (a unit test
#: checks that the two agree).
DEFAULT_FRAME_LENGTH = 1024 * 1024

#: Object key suffix of encrypted objects: ``part-....parquet.dtve``.
EXTENSION = ".dtve"

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "bucket": {"type": "string", "description": "The bucket the objects go in."},
        "load_method": {
            "type": "string",
            "enum": ["append-only", "append"],
            "default": "append-only",
            "description": (
                "singer-sdk's load method: append-only (alias append) adds the run's "
                "objects. upsert and overwrite are refused at start: encrypted objects are "
                "never read back or replaced (use target-dativo-iceberg)."
            ),
        },
        "prefix": {
            "type": "string",
            "default": "",
            "description": "Key prefix; objects go under <prefix>/<stream>/.",
        },
        "format": {
            "type": "string",
            "enum": ["parquet", "jsonl"],
            "default": "parquet",
            "description": "Plaintext format inside each encrypted object.",
        },
        "compression": {
            "type": "string",
            "default": "zstd",
            "enum": ["zstd", "snappy", "gzip", "lz4", "brotli", "none"],
            "description": "Parquet compression (applied before encryption).",
        },
        **row_group_settings(),
        "target_file_size_mb": {
            "type": "number",
            "default": 128,
            "description": "Start a new object once its plaintext reaches this many MiB.",
        },
        "frame_size": {
            "type": "integer",
            "default": DEFAULT_FRAME_LENGTH,
            "description": "Plaintext bytes per encrypted frame (1024 to 67108864).",
        },
        "upload_part_size_mb": {
            "type": "number",
            "default": 8,
            "description": "Multipart upload part size (at least 5); the only buffer.",
        },
        "kms_key_id": {
            "type": "string",
            "description": "KMS key (id, ARN or alias) that generates each data key.",
        },
        "kms_endpoint_url": {"type": "string", "description": "Non-default KMS endpoint."},
        "key_file": {
            "type": "string",
            "description": "Local key: a file holding exactly 32 random bytes.",
        },
        "key_env": {
            "type": "string",
            "description": "Local key: name of an env var holding 32 bytes in base64.",
        },
        "encryption_context": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Extra encryption-context entries (authenticated, not secret).",
        },
        **S3_SETTINGS,
    },
    "required": ["bucket"],
}


#: User metadata of every encrypted object: the envelope format, nothing about the content
#: (never a plaintext size, row count or checksum).
OBJECT_METADATA: dict[str, str] = {"dativo-envelope": "dtve-1"}
