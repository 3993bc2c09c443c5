"""${SECRET:...} references resolved from AWS Secrets Manager (moto's server, started as
its own process as for the S3 tests): string, JSON-key and binary secrets, a named
``aws:`` backend next to the default, and errors that name the reference and the backend."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from dativo_bridge.project import Project
from dativo_bridge.redact import MASK, Redactor
from dativo_bridge.secret_refs import SecretError

from .s3server import CREDENTIALS, s3_endpoint

VALUE = "aws-Secret-Value-" + uuid.uuid4().hex[:12]


def ref(body: str) -> str:
    """The reference ``${SECRET:body}``."""
    return "${SECRET:" + body + "}"


def _backend() -> dict[str, Any]:
    return {
        "backend": "aws",
        "endpoint_url": s3_endpoint(),
        "region": CREDENTIALS["region"],
        "aws_access_key_id": CREDENTIALS["aws_access_key_id"],
        "aws_secret_access_key": CREDENTIALS["aws_secret_access_key"],
    }


@pytest.fixture()
def names() -> dict[str, str]:
    client = boto3.client(
        "secretsmanager",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )
    prefix = f"dativo/{uuid.uuid4().hex[:8]}"
    out = {"plain": f"{prefix}/plain", "json": f"{prefix}/db", "binary": f"{prefix}/bin"}
    client.create_secret(Name=out["plain"], SecretString=VALUE)
    client.create_secret(Name=out["json"], SecretString=f'{{"user": "app", "password": "{VALUE}"}}')
    client.create_secret(Name=out["binary"], SecretBinary=VALUE.encode())
    return out


def _project(tmp_path: Path, config: dict[str, Any], secrets: dict[str, Any]) -> Project:
    data = {
        "version": 1,
        "dativo": {"secrets": secrets},
        "plugins": {"extractors": [{"name": "tap-x", "config": config}], "loaders": []},
    }
    path = tmp_path / "meltano.yml"
    path.write_text(yaml.safe_dump(data))
    return Project(path)


def test_secrets_manager_string_json_key_and_binary(tmp_path: Path, names: dict[str, str]) -> None:
    redactor = Redactor()
    redactor.install()
    config = {
        "password": ref(names["plain"]),
        "dsn": f"postgresql://app:{ref(names['json'] + '#password')}@db/x",
        "user": ref(names["json"] + "#user"),
        "key": ref(names["binary"]),
    }
    plugin = _project(tmp_path, config, _backend()).plugin("tap-x")
    assert plugin.config == {
        "password": VALUE,
        "dsn": f"postgresql://app:{VALUE}@db/x",
        "user": "app",
        "key": VALUE,
    }
    assert redactor.redact(f"echo {VALUE}") == f"echo {MASK}"


def test_named_aws_backend_beside_a_files_default(tmp_path: Path, names: dict[str, str]) -> None:
    (tmp_path / "local").write_text("local-secret-1234\n")
    (tmp_path / "local").chmod(0o600)
    secrets = {
        "default": "files",
        "backends": {"files": {"directory": str(tmp_path)}, "aws": _backend()},
    }
    config = {"a": "${SECRET:local}", "b": ref("aws:" + names["plain"])}
    plugin = _project(tmp_path, config, secrets).plugin("tap-x")
    assert plugin.config == {"a": "local-secret-1234", "b": VALUE}


def test_missing_secret_names_reference_and_backend(tmp_path: Path) -> None:
    project = _project(tmp_path, {"password": "${SECRET:dativo/absent}"}, _backend())
    with pytest.raises(SecretError) as err:
        project.plugin("tap-x")
    message = str(err.value)
    assert "plugin 'tap-x': setting 'password': ${SECRET:dativo/absent}" in message
    assert f"backend 'aws' (AWS Secrets Manager, {s3_endpoint()})" in message
    assert "no secret named 'dativo/absent'" in message


def test_missing_json_key_lists_keys_not_values(tmp_path: Path, names: dict[str, str]) -> None:
    project = _project(tmp_path, {"password": ref(names["json"] + "#pw")}, _backend())
    with pytest.raises(SecretError) as err:
        project.plugin("tap-x")
    assert "no key 'pw' (keys: password, user)" in str(err.value)
    assert VALUE not in str(err.value)
