"""A tap made by make_tap with stream maps and flattening: its SCHEMA comes from the mapped
Arrow schema (exact types), its RECORD lines and BATCH files from mapped batches, every
record validates under singer-sdk's own validator, and a stream whose expression has no
Arrow form falls back to singer-sdk's row path, with a warning, and maps as the SDK does."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from singer_sdk.sinks.core import JSONSchemaValidator

from dativo_bridge import ArrowReader, StreamInfo, make_tap
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.schema import JSON_TYPE

D = decimal.Decimal
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("amount", pa.decimal128(38, 10)),
        pa.field("at", pa.timestamp("us")),
        pa.field("at_tz", pa.timestamp("us", tz="UTC")),
        pa.field("doc", JSON_TYPE),
        pa.field("addr", pa.struct([("city", pa.string()), ("zip", pa.decimal128(5, 0))])),
        pa.field("name", pa.string()),
    ]
)
ROWS = [
    {
        "id": 1,
        "amount": D("1234567890123456789012345678.0123456789"),
        "at": dt.datetime(1, 1, 1),
        "at_tz": dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        "doc": '{"n": 1.10, "deep": {"x": [1, null]}}',
        "addr": {"city": "Oslo", "zip": D("150")},
        "name": "a",
    },
    {
        "id": 2,
        "amount": None,
        "at": None,
        "at_tz": None,
        "doc": "null",
        "addr": None,
        "name": None,
    },
]


class MemoryReader(ArrowReader):
    """Two streams, `things` and `others`, of the same two rows."""

    name = "tap-memory"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("things", SCHEMA, ("id",)), StreamInfo("others", SCHEMA, ("id",))]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        batch = pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA)
        yield batch.select(stream.schema.names)


MAPS = {
    "stream_maps": {
        "things": {"__alias__": "items", "total": "amount", "id_plus": "id + 1", "name": None},
        "things_keys": {"__source__": "things", "__else__": None, "id": "id"},
        "others": None,
    },
    "flattening_enabled": True,
    "flattening_max_depth": 1,
}


class Collect:
    def __init__(self) -> None:
        self.schemas: dict[str, StreamInfo] = {}
        self.batches: dict[str, list[pa.RecordBatch]] = {}

    def schema(self, stream: StreamInfo) -> None:
        self.schemas[stream.name] = stream

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        self.batches.setdefault(stream, []).append(batch)

    def state(self, value: Any) -> None:
        pass

    def discard_after_commit(self, files: Any) -> None:
        pass

    def rows(self, stream: str) -> list[dict[str, Any]]:
        return [r for b in self.batches.get(stream, []) for r in b.to_pylist()]


class Output(list[dict[str, Any]]):
    """The tap's messages, and its raw standard output."""

    text = ""


def _run(config: dict[str, Any], capfd: pytest.CaptureFixture[bytes]) -> Output:
    make_tap(MemoryReader)(config=config).sync_all()
    out = capfd.readouterr().out.decode()
    messages = Output(json.loads(line, parse_float=D) for line in out.splitlines())
    messages.text = out
    return messages


def _validated(messages: list[dict[str, Any]]) -> None:
    validators = {
        m["stream"]: JSONSchemaValidator(m["schema"])  # as singer-sdk targets validate
        for m in messages
        if m["type"] == "SCHEMA"
    }
    for m in messages:
        if m["type"] == "RECORD":
            validators[m["stream"]].validate(m["record"])


def _decoded(messages: Output) -> Collect:
    sink = Collect()
    SingerInput(sink).process(io.StringIO(messages.text))
    return sink


def test_mapped_records_keep_exact_types_and_validate(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    messages = _run(MAPS, capfdbinary)
    schemas = {m["stream"]: m for m in messages if m["type"] == "SCHEMA"}
    assert set(schemas) == {"items", "things_keys"}
    props = schemas["items"]["schema"]["properties"]
    assert props["total"]["format"] == "x-singer.decimal"
    assert (props["total"]["precision"], props["total"]["scale"]) == (38, 10)
    assert props["at"]["x-arrow-type"] == "timestamp[us]"
    assert props["addr__zip"]["precision"] == 5
    assert "name" not in props and "addr" not in props
    assert schemas["items"]["key_properties"] == ["id"]
    _validated(messages)
    sink = _decoded(messages)
    assert sink.schemas["items"].schema.field("total").type == pa.decimal128(38, 10)
    assert sink.schemas["items"].schema.field("doc").type == JSON_TYPE
    items = sink.rows("items")
    assert [r["total"] for r in items] == [ROWS[0]["amount"], None]
    assert [r["at"] for r in items] == [dt.datetime(1, 1, 1), None]
    assert items[0]["at_tz"] == ROWS[0]["at_tz"]
    assert json.loads(items[0]["doc"], parse_float=D) == {"n": D("1.10"), "deep": {"x": [1, None]}}
    assert items[1]["doc"] == "null"  # JSON null, not SQL NULL
    assert [r["id_plus"] for r in items] == [2, 3]
    assert [r["addr__city"] for r in items] == ["Oslo", None]
    assert sink.rows("things_keys") == [{"id": 1}, {"id": 2}]


def test_a_stream_removed_with_null_is_not_sent(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    messages = _run({"stream_maps": {"things": None, "__else__": None}}, capfdbinary)
    assert not [m for m in messages if m["type"] in ("SCHEMA", "RECORD")]


def test_an_expression_arrow_cannot_run_falls_back_to_the_sdk(
    capfdbinary: pytest.CaptureFixture[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    from singer_sdk.mapper import PluginMapper

    config = {
        "stream_maps": {
            "things": {"year": "str(at)", "id2": "id * 2"},
            "others": {"copy": "amount"},
        }
    }
    with caplog.at_level(logging.WARNING):
        messages = _run(config, capfdbinary)
    warning = [r.getMessage() for r in caplog.records if "row path" in r.getMessage()]
    assert len(warning) == 1 and "'things'" in warning[0] and "str(at)" in warning[0]
    # the other stream stays on the Arrow batches, with its exact types
    (others,) = [m for m in messages if m["type"] == "SCHEMA" and m["stream"] == "others"]
    assert others["schema"]["properties"]["copy"]["precision"] == 38
    _validated([m for m in messages if m.get("stream") == "others"])
    records = [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == "things"]
    assert [r["id2"] for r in records] == [2, 4]
    # singer-sdk's own mapper on the rows the SDK's record path maps (its datetimes as
    # the SDK conforms them: ISO text with +00:00 for a naive one)
    mapper = PluginMapper(json.loads(json.dumps(config)), logging.getLogger("t"))
    raw = {"type": "object", "properties": {"id": {"type": "integer"}, "at": {"type": "string"}}}
    mapper.register_raw_stream_schema("things", raw, ["id"])
    (sdk_map,) = mapper.stream_maps["things"]
    expected = sdk_map.transform({"id": 1, "at": "0001-01-01T00:00:00.000000+00:00"})
    assert expected is not None
    assert records[0]["year"] == expected["year"]


def test_batch_files_carry_the_mapped_rows(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = {
        **MAPS,
        "batch_config": {
            "encoding": {"format": "arrow"},
            "storage": {"root": f"file://{tmp_path}"},
        },
    }
    messages = _run(config, capfdbinary)
    batches = [m for m in messages if m["type"] == "BATCH"]
    assert sorted(m["stream"] for m in batches) == ["items", "things_keys"]
    sink = _decoded(messages)
    assert sink.schemas["items"].schema.field("total").type == pa.decimal128(38, 10)
    assert [r["total"] for r in sink.rows("items")] == [ROWS[0]["amount"], None]
    assert sink.rows("things_keys") == [{"id": 1}, {"id": 2}]
