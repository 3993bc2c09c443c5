"""`dativo decrypt` (the click command, run in process) against objects on moto's S3."""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from dativo_bridge.decrypt_cli import decrypt
from dativo_bridge.interfaces import StreamInfo
from target_dativo_s3.writer import EncryptedS3Writer

from ..s3server import CREDENTIALS
from .test_target import SCHEMA, TYPES, assert_same_rows, object_key

ENV = {
    "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
    "AWS_DEFAULT_REGION": CREDENTIALS["region"],
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@pytest.fixture(scope="module")
def objects(aws: dict[str, Any], key_file: Path, kms_key: str) -> dict[str, str]:
    from ..s3server import new_bucket

    bucket = new_bucket("dativo-cli")
    uris = {}
    for name, extra in (("local", {"key_file": str(key_file)}), ("kms", {"kms_key_id": kms_key})):
        writer = EncryptedS3Writer()
        writer.open({**aws, "bucket": bucket, **extra}, StreamInfo(name, SCHEMA, ("id",)))
        writer.write(TYPES)
        [uris[name]] = writer.commit().paths
        writer.close()
    return uris


def run(*args: str) -> Any:
    return CliRunner().invoke(decrypt, list(args), env=ENV, catch_exceptions=False)


def endpoints(aws: dict[str, Any]) -> list[str]:
    return ["--endpoint-url", aws["endpoint_url"], "--kms-endpoint-url", aws["kms_endpoint_url"]]


def test_decrypts_s3_objects_to_stdout(
    objects: dict[str, str], aws: dict[str, Any], key_file: Path
) -> None:
    result = run(objects["local"], "--key-file", str(key_file), *endpoints(aws))
    assert result.exit_code == 0, result.output
    assert_same_rows(pq.read_table(io.BytesIO(result.stdout_bytes)))
    # KMS: no key file, the key id comes from the header.
    result = run(objects["kms"], *endpoints(aws))
    assert result.exit_code == 0, result.output
    assert_same_rows(pq.read_table(io.BytesIO(result.stdout_bytes)))


def test_decrypts_a_local_file_to_a_private_output(
    objects: dict[str, str], aws: dict[str, Any], key_file: Path, s3: Any, tmp_path: Path
) -> None:
    bucket = objects["local"].split("/")[2]
    encrypted = tmp_path / "visits.parquet.dtve"
    encrypted.write_bytes(
        s3.get_object(Bucket=bucket, Key=object_key(objects["local"]))["Body"].read()
    )
    output = tmp_path / "visits.parquet"
    result = run(
        str(encrypted),
        "--key-file",
        str(key_file),
        "-o",
        str(output),
        "--context",
        "dativo:stream=local",
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert_same_rows(pq.read_table(output))


def test_failures_exit_non_zero_and_leave_no_output(
    objects: dict[str, str],
    aws: dict[str, Any],
    key_file: Path,
    other_key_file: Path,
    s3: Any,
    tmp_path: Path,
) -> None:
    bucket = objects["local"].split("/")[2]
    data = s3.get_object(Bucket=bucket, Key=object_key(objects["local"]))["Body"].read()
    tampered = bytearray(data)
    tampered[-40] ^= 0x01  # inside the final frame
    encrypted = tmp_path / "tampered.dtve"
    encrypted.write_bytes(bytes(tampered))
    output = tmp_path / "out.parquet"
    cases = [
        ([str(encrypted), "--key-file", str(key_file)], "failed authentication"),
        ([objects["local"], "--key-file", str(other_key_file), *endpoints(aws)], "wrong key"),
        (
            [
                objects["local"],
                "--key-file",
                str(key_file),
                "--context",
                "dativo:stream=kms",
                *endpoints(aws),
            ],
            "encryption context mismatch",
        ),
        ([objects["kms"], "--kms-key-id", "not-this-key", *endpoints(aws)], "wrong key"),
        (
            [f"s3://{bucket}/missing.dtve", "--key-file", str(key_file), *endpoints(aws)],
            "NoSuchKey",
        ),
    ]
    cases.append(([str(tmp_path / "missing.dtve"), "--key-file", str(key_file)], "no such file"))
    for args, message in cases:
        result = run(*args, "-o", str(output))
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert not output.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tampered.dtve"]


def test_plaintext_of_a_whole_object_is_the_parquet_file(
    objects: dict[str, str], aws: dict[str, Any], key_file: Path
) -> None:
    result = run(objects["local"], "--key-file", str(key_file), *endpoints(aws))
    assert result.stdout_bytes[:4] == b"PAR1" and result.stdout_bytes[-4:] == b"PAR1"
    assert pq.read_table(io.BytesIO(result.stdout_bytes)).schema == pa.schema(SCHEMA)
