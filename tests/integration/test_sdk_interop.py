"""Our RECORD lines are accepted by an ordinary singer-sdk target (its own reader, record
validation and type conformance), and our target accepts what singer-sdk taps write."""

from __future__ import annotations

import datetime as dt
import decimal
import io
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow as pa
from singer_sdk import Target
from singer_sdk.sinks import BatchSink

from dativo_bridge import arrow_to_jsonschema, encode_records
from target_dativo_parquet.target import TargetDativoParquet


class CollectingSink(BatchSink):
    collected: ClassVar[list[dict[str, Any]]] = []

    def process_batch(self, context: dict) -> None:
        CollectingSink.collected.extend(context["records"])


class PlainSdkTarget(Target):
    name = "target-plain-sdk"
    config_jsonschema: ClassVar[dict] = {"type": "object", "properties": {}}
    default_sink_class = CollectingSink


BATCH = pa.record_batch(
    {
        "id": pa.array([1, 2], pa.int64()),
        "small": pa.array([-5, None], pa.int16()),
        "price": pa.array([decimal.Decimal("10.50"), None], pa.decimal128(10, 2)),
        "score": pa.array([0.25, float("inf")]),
        "name": pa.array(['quote " and \\ and \n', "é"]),
        "at": pa.array(
            [dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC), None],
            pa.timestamp("us", tz="UTC"),
        ),
        "day": pa.array([dt.date(2024, 2, 29), None]),
        "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
        "addr": pa.array([{"city": "Oslo", "zip": 150}, None]),
        "ok": pa.array([True, False]),
    }
)


def _messages(stream: str = "things") -> str:
    schema = {
        "type": "SCHEMA",
        "stream": stream,
        "schema": arrow_to_jsonschema(BATCH.schema),
        "key_properties": ["id"],
    }
    return orjson.dumps(schema).decode() + "\n" + encode_records(BATCH, stream).decode()


def test_plain_sdk_target_accepts_our_records() -> None:
    CollectingSink.collected = []
    target = PlainSdkTarget(config={}, validate_config=False)
    target.listen(io.StringIO(_messages()))
    rows = CollectingSink.collected
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0]["name"] == 'quote " and \\ and \n'
    assert rows[0]["tags"] == ["a", "b"] and rows[0]["addr"] == {"city": "Oslo", "zip": 150}
    assert rows[1]["score"] == float("inf")
    # singer-sdk parses date-time strings into datetimes when conforming records.
    at = rows[0]["at"]
    parsed = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(at)
    assert parsed == dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert decimal.Decimal(str(rows[0]["price"])) == decimal.Decimal("10.50")


def test_our_target_reads_sdk_style_messages(tmp_path: Path) -> None:
    """singer-sdk taps write key order type/stream/record/version/time_extracted and
    `"type": "RECORD"` with a space; both routes into the decoder must work."""
    out = str(tmp_path)
    lines = [
        '{"type": "SCHEMA", "stream": "s", "schema": {"properties": {"id": {"type": "integer"},'
        ' "v": {"type": ["number", "null"]}}}, "key_properties": ["id"]}',
        '{"type": "RECORD", "stream": "s", "record": {"id": 1, "v": 1.5}, "version": 3,'
        ' "time_extracted": "2024-01-01T00:00:00+00:00"}',
        '{"record": {"id": 2, "v": null}, "stream": "s", "type": "RECORD"}',
        '{"type": "STATE", "value": {"bookmarks": {"s": {}}}}',
    ]
    target = TargetDativoParquet(config={"path": out})
    target.listen(io.StringIO("\n".join(lines) + "\n"))
    import pyarrow.dataset as ds

    table = ds.dataset(out + "/s", format="parquet").to_table().sort_by("id")
    assert table.to_pylist() == [{"id": 1, "v": 1.5}, {"id": 2, "v": None}]
