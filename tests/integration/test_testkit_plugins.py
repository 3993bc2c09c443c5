"""Every Dativo plugin passes the conformance suite against its real backend: the CSV and
PostgreSQL readers (the test server), the REST reader (the rest tests' local server), and
the Parquet, Iceberg (SQL catalog) and encrypted S3 (moto's server) writers."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge.crypto import LocalKeyProvider
from dativo_bridge.crypto.reading import read_encrypted_table
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.testkit import Report, run_reader_checks, run_writer_checks
from tap_dativo_csv.reader import CsvReader
from tap_dativo_postgres.reader import PostgresReader
from tap_dativo_rest.reader import RestReader
from target_dativo_iceberg.writer import IcebergWriter, open_catalog, table_name
from target_dativo_parquet.writer import ParquetWriter, stream_dir_name
from target_dativo_s3.writer import EncryptedS3Writer

from .postgres.server import fresh_schema, pg_dsn
from .s3_encryption.support import aws_settings, client, write_key
from .s3server import new_bucket


def _passes(report: Report, *, may_skip: tuple[str, ...] = ()) -> None:
    report.assert_ok()
    assert report.seconds < 60, report.text()
    skipped = [r.name for r in report.results if r.status == "skipped"]
    assert set(skipped) <= set(may_skip), report.text()


@pytest.mark.parametrize("block_size_mb", [16, 0.0001])
def test_csv_reader(tmp_path: Path, block_size_mb: float) -> None:
    # Four files: two share a modification time (one bookmark group), rows in each.
    moments = [1_700_000_000, 1_700_000_100, 1_700_000_100, 1_700_000_200]
    for n, moment in enumerate(moments):
        path = tmp_path / f"part{n}.csv"
        lines = ["id,name,amount"] + [f"{n * 10 + i},name {i},{i * 1.5}" for i in range(5)]
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (moment, moment))
    config = {
        "files": [
            {
                "stream": "items",
                "path": str(tmp_path / "*.csv"),
                "key_properties": ["id"],
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": ["string", "null"]},
                        "amount": {"type": ["number", "null"]},
                    },
                },
            }
        ],
        "block_size_mb": block_size_mb,  # 0.0001: several batches per file
    }
    # No late_rows hook: the CSV reader resumes after the bookmark's modification time by
    # design (files are immutable once read; docs/writing-plugins.md).
    _passes(run_reader_checks(CsvReader, config), may_skip=("reader.late-rows",))


def _late_rows(table: str, columns: str) -> Any:
    """A late_rows hook: rows inserted with the bookmark's key value, ids from 10000 on."""

    def add(config: Mapping[str, Any], stream: StreamInfo, bookmark: Any) -> list[dict[str, Any]]:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {table} (id, {columns}) SELECT 10000 + g, %s FROM "
                "generate_series(1, 3) g",
                [bookmark],
            )
        return [{"id": 10000 + g} for g in range(1, 4)]

    return add


@pytest.mark.parametrize("accelerator", ["python", "auto"])
def test_postgres_reader(accelerator: str) -> None:
    schema = fresh_schema("dativo_testkit")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.events (id int PRIMARY KEY, updated_at timestamptz, "
            "amount numeric(12, 2), note text)"
        )
        # Ties (ten rows per hour), NULL keys, and batches far smaller than the table.
        conn.execute(
            f"INSERT INTO {schema}.events SELECT g, CASE WHEN g % 17 = 0 THEN NULL ELSE "
            "timestamptz '2025-01-01' + (g / 10) * interval '1 hour' END, g * 1.25, "
            f"repeat('x', 50) FROM generate_series(1, 400) g"
        )
    config = {
        "dsn": pg_dsn(),
        "filter_schemas": [schema],
        "batch_size_bytes": 2000,
        "accelerator": accelerator,
    }
    metadata = {"*": {"replication-method": "INCREMENTAL", "replication-key": "updated_at"}}
    late = _late_rows(f"{schema}.events", "updated_at")
    _passes(run_reader_checks(PostgresReader, config, metadata=metadata, late_rows=late))


def test_postgres_reader_parallel_full_table() -> None:
    """The ctid-parallel full-table read, abandoned after one batch by the close check,
    leaves no connection or worker thread behind."""
    calls: list[int] = []

    class Counted(PostgresReader):
        def _read_parallel(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return super()._read_parallel(*args, **kwargs)

    schema = fresh_schema("dativo_testkit_parallel")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.big (id int PRIMARY KEY, pad text)")
        conn.execute(
            f"INSERT INTO {schema}.big SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g"
        )
    config = {
        "dsn": pg_dsn(),
        "filter_schemas": [schema],
        "pages_per_partition": 4,
        "max_parallelism": 3,
        "batch_size_bytes": 20000,
    }
    _passes(
        run_reader_checks(Counted, config),
        may_skip=("reader.bookmark", "reader.resume", "reader.late-rows"),
    )
    assert calls  # the parallel path ran


def test_rest_reader() -> None:
    from .rest.common import config, stream
    from .rest.server import make_order, shared_server

    server = shared_server()
    server.state.set_dataset("testkit", [make_order(i) for i in range(1, 30)])
    cfg = config(
        stream(
            "/cursor",
            params={"ds": "testkit", "limit": 4},
            replication_key="updated_at",
            bookmark_param="updated_since",
            pagination={"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
        )
    )
    # No late_rows hook: whether rows at the bookmark come again is the API's filter.
    _passes(run_reader_checks(RestReader, cfg), may_skip=("reader.late-rows",))


def test_parquet_writer(tmp_path: Path) -> None:
    _passes(run_writer_checks(ParquetWriter, {"path": str(tmp_path)}))


def test_parquet_writer_overwrite(tmp_path: Path) -> None:
    config = {"path": str(tmp_path), "load_method": "overwrite"}
    _passes(run_writer_checks(ParquetWriter, config))


def test_parquet_writer_on_s3() -> None:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from .s3server import CREDENTIALS, s3_endpoint

    bucket = new_bucket("dativo-testkit-pq")
    config = {"path": f"s3://{bucket}/lake", "endpoint_url": s3_endpoint(), **CREDENTIALS}
    filesystem = pafs.S3FileSystem(
        endpoint_override=s3_endpoint().split("://")[1],
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
    )

    def read_back(settings: Mapping[str, Any], stream: StreamInfo) -> pa.Table | None:
        folder = f"{bucket}/lake/{stream_dir_name(stream.name)}"
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        files = [
            i.path
            for i in filesystem.get_file_info(selector)
            if i.type == pafs.FileType.File and not i.base_name.startswith(".")
        ]
        tables = [pq.read_table(f, filesystem=filesystem) for f in files]
        return pa.concat_tables(tables, promote_options="permissive") if tables else None

    _passes(run_writer_checks(ParquetWriter, config, read_back=read_back))


def test_iceberg_writer(tmp_path: Path) -> None:
    config = {"warehouse": str(tmp_path / "warehouse"), "namespace": "testkit"}

    def read_back(settings: Mapping[str, Any], stream: StreamInfo) -> pa.Table | None:
        catalog = open_catalog(settings)
        identifier = f"testkit.{table_name(stream.name, settings)}"
        if not catalog.table_exists(identifier):
            return None
        return catalog.load_table(identifier).scan().to_arrow()

    _passes(run_writer_checks(IcebergWriter, config, read_back=read_back))


def test_encrypted_s3_writer(tmp_path: Path) -> None:
    key_file = write_key(tmp_path / "local.key")
    aws = aws_settings()
    bucket = new_bucket("dativo-testkit")
    config = {**aws, "bucket": bucket, "prefix": "lake", "key_file": str(key_file)}
    s3 = client("s3")
    keys = [LocalKeyProvider.from_file(key_file)]

    def read_back(settings: Mapping[str, Any], stream: StreamInfo) -> pa.Table | None:
        prefix = f"lake/{stream_dir_name(stream.name)}/"
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents") or []
        tables = [read_encrypted_table(f"s3://{bucket}/{o['Key']}", keys, aws=aws) for o in listing]
        return pa.concat_tables(tables, promote_options="permissive") if tables else None

    _passes(run_writer_checks(EncryptedS3Writer, config, read_back=read_back))
    # An aborted upload leaves no multipart upload behind either.
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_reader_bug_in_a_real_source_is_caught() -> None:
    """The PostgreSQL reader made to resume strictly after the bookmark never reads rows
    that commit late with the bookmark's key: the suite says so (a guard that the passes
    above mean something)."""

    class StrictlyAfter(PostgresReader):
        def read(self, stream: StreamInfo, bookmark: Any | None) -> Any:
            for batch in super().read(stream, bookmark):
                if bookmark is None:
                    yield batch
                    continue
                keys = batch.column(stream.replication_key or "").to_pylist()
                bound = dt.date.fromisoformat(str(bookmark)[:10])
                keep = [k is not None and k > bound for k in keys]
                yield batch.filter(pa.array(keep))

    schema = fresh_schema("dativo_testkit_bug")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, d date, pad text)")
        conn.execute(
            f"INSERT INTO {schema}.t SELECT g, %s::date + g / 20, repeat('x', 40) "
            "FROM generate_series(1, 100) g",
            [dt.date(2025, 1, 1)],
        )
    config = {"dsn": pg_dsn(), "filter_schemas": [schema], "batch_size_bytes": 1000}
    metadata = {"*": {"replication-method": "INCREMENTAL", "replication-key": "d"}}
    late = _late_rows(f"{schema}.t", "d")
    report = run_reader_checks(StrictlyAfter, config, metadata=metadata, late_rows=late)
    # Its batches hold whole key groups, so no stop loses a row: the late rows do.
    assert report.failed_names == {"reader.late-rows"}, report.text()
    assert "3 of 3 row(s) added with the bookmark's key value '2025-01-06'" in report.text()
