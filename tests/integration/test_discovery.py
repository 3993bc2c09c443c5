"""tap-dativo-csv and tap-dativo-rest --discover: the catalog's schema is the SCHEMA
message's schema (decimal precision/scale and x-arrow-type kept), and a stream the reader
declares incremental keeps its replication key and method in the catalog."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.helpers import env, script
from tests.integration.rest.server import shared_server

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "amount": {
            "type": ["string", "null"],
            "format": "x-singer.decimal",
            "precision": 10,
            "scale": 2,
        },
        "updated_at": {"type": "string", "format": "date-time", "x-arrow-type": "timestamp[us]"},
    },
}


def _tap(name: str, config: dict[str, Any], directory: Path, *args: str) -> str:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [script(name), "--config", str(path), *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=directory,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _check(name: str, config: dict[str, Any], directory: Path) -> dict[str, Any]:
    (entry,) = json.loads(_tap(name, config, directory, "--discover"))["streams"]
    messages = [json.loads(line) for line in _tap(name, config, directory).splitlines()]
    (schema,) = [m for m in messages if m.get("type") == "SCHEMA"]
    assert entry["schema"] == schema["schema"]
    props = entry["schema"]["properties"]
    assert props["amount"]["precision"] == 10 and props["amount"]["scale"] == 2
    assert props["updated_at"]["x-arrow-type"] == "timestamp[us]"
    return entry


def test_csv_catalog_schema_is_the_schema_message_schema(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(
        "id,amount,updated_at\n1,12.50,2026-01-02T03:04:05\n2,0.01,2026-01-03T00:00:00\n"
    )
    config = {
        "files": [
            {"stream": "orders", "path": "orders.csv", "key_properties": ["id"], "schema": SCHEMA}
        ],
        "base_dir": str(tmp_path),
    }
    entry = _check("tap-dativo-csv", config, tmp_path)
    assert entry["key_properties"] == ["id"]
    # The CSV reader is incremental on the files' modification time: kept in the catalog.
    assert entry["replication_method"] == "INCREMENTAL"
    assert entry["replication_key"] == "_sdc_modified_at"
    root = next(m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == [])
    assert root["replication-key"] == "_sdc_modified_at"


def test_rest_catalog_schema_is_the_schema_message_schema(tmp_path: Path) -> None:
    server = shared_server()
    stream = {
        "name": "orders",
        "path": "/all",
        "records_path": "$.data[*]",
        "primary_keys": ["id"],
        "schema": SCHEMA,
    }
    entry = _check("tap-dativo-rest", {"api_url": server.url, "streams": [stream]}, tmp_path)
    assert "replication_method" not in entry  # FULL_TABLE unless a key is set


READER = """
from decimal import Decimal

import pyarrow as pa

from dativo_bridge import ArrowReader, StreamInfo


class Reader(ArrowReader):
    name = "tap-disc-custom"
    config_jsonschema = {"type": "object", "properties": {}}

    def discover(self):
        return [StreamInfo("amounts", pa.schema([("amount", pa.decimal128(10, 2))]))]

    def read(self, stream, bookmark=None):
        yield pa.record_batch([pa.array([Decimal("1.25")], pa.decimal128(10, 2))], stream.schema)
"""


def test_a_user_class_run_by_tap_dativo_custom_has_the_same_catalog(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "disc_custom_reader.py").write_text(READER)
    config = {"reader_class": "disc_custom_reader:Reader", "plugin_dirs": ["plugins"]}
    (entry,) = json.loads(_tap("tap-dativo-custom", config, tmp_path, "--discover"))["streams"]
    lines = _tap("tap-dativo-custom", config, tmp_path).splitlines()
    (schema,) = [m for m in map(json.loads, lines) if m.get("type") == "SCHEMA"]
    assert entry["schema"] == schema["schema"]
    assert entry["schema"]["properties"]["amount"]["precision"] == 10


def test_a_csv_schema_copied_from_the_catalog_reads_as_declared(tmp_path: Path) -> None:
    """The discovered schema lists the reader's own _sdc_* columns; used as the stream's
    declared schema it reads (they were added twice: 'exists 2 times in schema')."""
    (tmp_path / "orders.csv").write_text("id,amount,updated_at\n1,12.50,2026-01-02T03:04:05\n")
    files = {"stream": "orders", "path": "orders.csv", "schema": SCHEMA}
    config = {"files": [files], "base_dir": str(tmp_path)}
    (entry,) = json.loads(_tap("tap-dativo-csv", config, tmp_path, "--discover"))["streams"]
    copied = {"files": [{**files, "schema": entry["schema"]}], "base_dir": str(tmp_path)}
    (again,) = json.loads(_tap("tap-dativo-csv", copied, tmp_path, "--discover"))["streams"]
    assert again["schema"] == entry["schema"]
    lines = [json.loads(line) for line in _tap("tap-dativo-csv", copied, tmp_path).splitlines()]
    (record,) = [m["record"] for m in lines if m.get("type") == "RECORD"]
    assert record["amount"] == "12.50" and record["_sdc_source_file"].endswith("orders.csv")


def test_a_csv_schema_declaring_an_own_column_with_another_type_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "orders.csv").write_text("id\n1\n")
    schema = {"type": "object", "properties": {"_sdc_modified_at": {"type": "integer"}}}
    path = tmp_path / "tap.json"
    files = [{"stream": "orders", "path": "orders.csv", "schema": schema}]
    path.write_text(json.dumps({"files": files, "base_dir": str(tmp_path)}))
    done = subprocess.run(
        [script("tap-dativo-csv"), "--config", str(path), "--discover"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "'_sdc_modified_at' is a column the CSV reader adds itself" in done.stderr


def test_a_packaged_tap_from_make_tap_has_the_exact_catalog() -> None:
    """A user's own packaged tap (make_tap, no tap-dativo-custom) gets the same catalog as
    Dativo's taps: decimal precision/scale and x-arrow-type kept, no forced FULL_TABLE."""
    from collections.abc import Iterator

    import pyarrow as pa

    from dativo_bridge import ArrowReader, StreamInfo, make_tap

    class Amounts(ArrowReader):
        name = "tap-amounts"
        config_jsonschema: dict[str, Any] = {"type": "object", "properties": {}}

        def discover(self) -> list[StreamInfo]:
            schema = pa.schema(
                [
                    pa.field("id", pa.int64(), nullable=False),
                    pa.field("amount", pa.decimal128(10, 2)),
                    pa.field("updated_at", pa.timestamp("us")),
                ]
            )
            return [StreamInfo("amounts", schema, ("id",))]

        def read(self, stream: StreamInfo, bookmark: Any) -> Iterator[pa.RecordBatch]:
            yield from ()

    tap = make_tap(Amounts)(config={})
    (entry,) = tap.catalog_dict["streams"]
    amount = entry["schema"]["properties"]["amount"]
    assert (amount.get("precision"), amount.get("scale")) == (10, 2)
    assert entry["schema"]["properties"]["updated_at"]["x-arrow-type"] == "timestamp[us]"
    assert "replication_method" not in entry
