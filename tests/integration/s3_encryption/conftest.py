"""Fixtures: moto's server (S3 and KMS) as a separate process, a KMS key, local key files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dativo_bridge.crypto import KmsKeyProvider, LocalKeyProvider

from ..s3server import new_bucket
from .support import aws_settings, client, write_key


@pytest.fixture(scope="session")
def aws() -> dict[str, Any]:
    return aws_settings()


@pytest.fixture(scope="session")
def s3() -> Any:
    return client("s3")


@pytest.fixture(scope="session")
def kms() -> Any:
    return client("kms")


@pytest.fixture(scope="session")
def kms_key(kms: Any) -> str:
    """The ARN of a fresh symmetric KMS key."""
    return str(kms.create_key(Description="dativo test")["KeyMetadata"]["Arn"])


@pytest.fixture(scope="session")
def other_kms_key(kms: Any) -> str:
    return str(kms.create_key(Description="dativo test, other")["KeyMetadata"]["Arn"])


@pytest.fixture
def bucket() -> str:
    return new_bucket("dativo-enc")


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_key(tmp_path_factory.mktemp("keys") / "local.key")


@pytest.fixture(scope="session")
def other_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_key(tmp_path_factory.mktemp("keys") / "other.key")


@pytest.fixture(scope="session")
def local(key_file: Path) -> LocalKeyProvider:
    return LocalKeyProvider.from_file(key_file)


@pytest.fixture(scope="session")
def kms_provider(kms: Any, kms_key: str) -> KmsKeyProvider:
    return KmsKeyProvider(kms, kms_key, [kms_key])
