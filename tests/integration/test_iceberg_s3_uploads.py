"""On S3, a target-dativo-iceberg writer killed while writing a data file leaves an
unfinished multipart upload: invisible to readers, but billed until a bucket lifecycle
rule (if any) aborts it. The next writer that opens the table aborts those of writers of
this host that are gone, and leaves a live writer's and another host's alone (the rule
the same writer already applies to whole orphan files, and the ray engine to its
tasks')."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.ownership import HOST_TAG
from target_dativo_iceberg.writer import IcebergWriter, open_catalog

from .s3server import CREDENTIALS, new_bucket, s3_endpoint

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def _config(tmp_path: Path, bucket: str) -> dict[str, Any]:
    return {
        "namespace": "up",
        "catalog": {
            "type": "sql",
            "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
            "warehouse": f"s3://{bucket}/warehouse",
            "s3.endpoint": s3_endpoint(),
            "s3.access-key-id": CREDENTIALS["aws_access_key_id"],
            "s3.secret-access-key": CREDENTIALS["aws_secret_access_key"],
            "s3.region": CREDENTIALS["region"],
        },
    }


def _client() -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )


def _uploads(bucket: str) -> set[str]:
    listed = _client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []
    return {str(u["Key"]) for u in listed}


def _write(config: dict[str, Any], ids: list[int]) -> None:
    with IcebergWriter() as writer:
        writer.open(config, StreamInfo("events", SCHEMA, ("id",)))
        writer.write(pa.record_batch([pa.array(ids, pa.int64())], SCHEMA))
        writer.commit()


def test_a_dead_writers_unfinished_upload_is_aborted_by_the_next_writer(tmp_path: Path) -> None:
    bucket = new_bucket("dativo-ice-uploads")
    config = _config(tmp_path, bucket)
    _write(config, [1, 2])
    table = open_catalog(config).load_table("up.events")
    data = table.location().split(f"s3://{bucket}/", 1)[1] + "/data"

    gone = subprocess.Popen(["true"])
    gone.wait()  # a writer of this host that is no longer running
    live = subprocess.Popen(["sleep", "120"])  # another writer, still writing
    try:

        def name(host: str, pid: int) -> str:
            return f"{data}/dativo-{host}-{pid}-{uuid.uuid4().hex[:8]}-00001.parquet"

        dead_key = name(HOST_TAG, gone.pid)
        live_key = name(HOST_TAG, live.pid)
        other_host = name("otherhost", gone.pid)
        foreign = f"{data}/someone-elses-file.parquet"
        for key in (dead_key, live_key, other_host, foreign):
            _client().create_multipart_upload(Bucket=bucket, Key=key)
        assert _uploads(bucket) == {dead_key, live_key, other_host, foreign}

        _write(config, [3])

        assert _uploads(bucket) == {live_key, other_host, foreign}
    finally:
        live.kill()
        live.wait()
    table = open_catalog(config).load_table("up.events")
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 2, 3]
