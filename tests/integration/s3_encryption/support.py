"""Helpers shared by the fixtures and the SDK suite module: endpoints, clients, key files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3

from ..s3server import CREDENTIALS, s3_endpoint


def kms_endpoint() -> str:
    """DATIVO_TEST_KMS_ENDPOINT if set, else the S3 endpoint (moto serves both on one port)."""
    return os.environ.get("DATIVO_TEST_KMS_ENDPOINT") or s3_endpoint()


def aws_settings() -> dict[str, Any]:
    """Endpoints and credentials for S3 and KMS."""
    return {"endpoint_url": s3_endpoint(), "kms_endpoint_url": kms_endpoint(), **CREDENTIALS}


def client(service: str) -> Any:
    """A boto3 client of the test endpoint."""
    return boto3.client(
        service,
        endpoint_url=kms_endpoint() if service == "kms" else s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )


def write_key(path: Path) -> Path:
    """A fresh 32-byte key file, mode 0600."""
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path
