"""One behaviour suite for every writer: Parquet on a local disk, Parquet on S3 (moto's
server), and Iceberg (SQL catalog on SQLite). Results are read back with pyarrow and
pyiceberg directly, not through Dativo."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.delivery import StreamWriters
from dativo_bridge.interfaces import ArrowWriter, StreamInfo
from target_dativo_iceberg.types import iceberg_schema
from target_dativo_iceberg.writer import IcebergWriter, open_catalog, table_name
from target_dativo_parquet.writer import ParquetWriter, stream_dir_name
from tests.cases import ALL_TYPES

from .s3server import CREDENTIALS, new_bucket, s3_endpoint


@dataclass
class Backend:
    name: str
    writer: type[ArrowWriter]
    config: dict[str, Any]
    read: Callable[[str], pa.Table | None]
    expected_type: Callable[[pa.Schema], pa.Schema]


def _parquet_reader(filesystem: pafs.FileSystem, root: str) -> Callable[[str], pa.Table | None]:
    def read(stream: str) -> pa.Table | None:
        folder = f"{root}/{stream_dir_name(stream)}"
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        files = [
            i.path
            for i in filesystem.get_file_info(selector)
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith(".")
        ]
        if not files:
            return None
        # Files written before and after a SCHEMA change differ: read them as one.
        schemas = [pq.read_schema(f, filesystem=filesystem) for f in files]
        unified = pa.unify_schemas(schemas, promote_options="permissive")
        return ds.dataset(files, schema=unified, filesystem=filesystem, format="parquet").to_table()

    return read


@pytest.fixture(params=["parquet-local", "parquet-s3", "iceberg"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    same = lambda schema: schema  # noqa: E731
    if request.param == "parquet-local":
        return Backend(
            "parquet-local",
            ParquetWriter,
            {"path": str(tmp_path)},
            _parquet_reader(pafs.LocalFileSystem(), str(tmp_path)),
            same,
        )
    if request.param == "parquet-s3":
        bucket = new_bucket()
        config = {"path": f"s3://{bucket}/lake", "endpoint_url": s3_endpoint(), **CREDENTIALS}
        filesystem = pafs.S3FileSystem(
            endpoint_override=s3_endpoint().split("://")[1],
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        return Backend(
            "parquet-s3", ParquetWriter, config, _parquet_reader(filesystem, f"{bucket}/lake"), same
        )
    config = {"warehouse": str(tmp_path / "warehouse"), "namespace": "suite"}

    def read(stream: str) -> pa.Table | None:
        catalog = open_catalog(config)
        identifier = f"suite.{table_name(stream, config)}"
        if not catalog.table_exists(identifier):
            return None
        return catalog.load_table(identifier).scan().to_arrow()

    return Backend("iceberg", IcebergWriter, config, read, iceberg_schema)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float) and a == 0 and isinstance(b, float):
        return b == 0 and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def _writers(backend: Backend, states: list[Any]) -> StreamWriters:
    return StreamWriters(backend.writer, backend.config, states.append, checkpoint_rows=1)


def test_every_mapped_type_round_trips(backend: Backend) -> None:
    schema = pa.schema([f.with_nullable(f.name != "id") for f in ALL_TYPES.schema])
    batch = pa.RecordBatch.from_arrays(ALL_TYPES.columns, schema=schema)
    writer = backend.writer()
    writer.open(backend.config, StreamInfo("types", schema, ("id",)))
    writer.write(batch)
    writer.commit()
    writer.close()
    table = backend.read("types")
    assert table is not None
    table = table.sort_by("id")
    expected_schema = backend.expected_type(schema)
    for field in expected_schema:
        got = table.schema.field(field.name).type
        assert got == field.type, (backend.name, field.name, got, field.type)
    expected = ALL_TYPES.to_pylist()
    for got_row, want_row in zip(table.to_pylist(), expected, strict=True):
        for name, want in want_row.items():
            got = got_row[name]
            if name == "j" and backend.name == "iceberg":
                assert got == want, name  # JSON text stored as an Iceberg string
            else:
                assert _same(want, got), (backend.name, name, got, want)


def _feed(writers: StreamWriters, lines: list[str]) -> None:
    SingerInput(writers, batch_rows=2).process(io.StringIO("\n".join(lines) + "\n"))
    writers.finish()


def test_schema_evolution_adds_columns_and_widens_types(backend: Backend) -> None:
    states: list[Any] = []
    _feed(
        _writers(backend, states),
        [
            '{"type":"SCHEMA","stream":"evo","key_properties":["id"],"schema":{"properties":'
            '{"id":{"type":"integer"},"n":{"type":["integer","null"],"minimum":-2147483648,'
            '"maximum":2147483647}}}}',
            '{"type":"RECORD","stream":"evo","record":{"id":1,"n":10}}',
            '{"type":"STATE","value":{"step":1}}',
            '{"type":"SCHEMA","stream":"evo","key_properties":["id"],"schema":{"properties":'
            '{"id":{"type":"integer"},"n":{"type":["integer","null"]},'
            '"note":{"type":["string","null"]}}}}',
            '{"type":"RECORD","stream":"evo","record":{"id":2,"n":9000000000,"note":"wide"}}',
            '{"type":"STATE","value":{"step":2}}',
        ],
    )
    table = backend.read("evo")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    if backend.name == "iceberg":  # one table, evolved: old rows read with the new schema
        assert rows == [
            {"id": 1, "n": 10, "note": None},
            {"id": 2, "n": 9000000000, "note": "wide"},
        ]
        assert table.schema.field("n").type == pa.int64()
    else:  # each file keeps the schema it was written with; read together, both rows
        assert rows == [
            {"id": 1, "n": 10, "note": None},
            {"id": 2, "n": 9000000000, "note": "wide"},
        ]
    assert states[-1] == {"step": 2}


def test_empty_stream(backend: Backend) -> None:
    states: list[Any] = []
    _feed(
        _writers(backend, states),
        [
            '{"type":"SCHEMA","stream":"nothing","key_properties":[],"schema":{"properties":'
            '{"id":{"type":"integer"}}}}',
            '{"type":"STATE","value":{"empty":true}}',
        ],
    )
    table = backend.read("nothing")
    assert table is None or table.num_rows == 0
    assert states == [{"empty": True}]


def test_many_streams_interleaved(backend: Backend) -> None:
    states: list[Any] = []
    lines = []
    for name in ("alpha", "beta", "gamma"):
        lines.append(
            f'{{"type":"SCHEMA","stream":"{name}","key_properties":["id"],'
            '"schema":{"properties":{"id":{"type":"integer"},'
            '"v":{"type":["string","null"]}}}}'
        )
    for i in range(30):
        for name in ("alpha", "beta", "gamma"):
            lines.append(
                f'{{"type":"RECORD","stream":"{name}","record":{{"id":{i},"v":"{name}-{i}"}}}}'
            )
        if i % 7 == 0:
            lines.append(f'{{"type":"STATE","value":{{"i":{i}}}}}')
    _feed(_writers(backend, states), lines)
    for name in ("alpha", "beta", "gamma"):
        table = backend.read(name)
        assert table is not None
        assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
            {"id": i, "v": f"{name}-{i}"} for i in range(30)
        ]
    assert states[-1] == {"i": 28}
