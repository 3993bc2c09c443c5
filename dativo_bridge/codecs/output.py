"""A Singer message stream written from a run's events: the sink that feeds a foreign
target's standard input (SCHEMA, RECORD and STATE lines, encoded column-wise)."""

from __future__ import annotations

from typing import IO, Any

import orjson
import pyarrow as pa

from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.schema import arrow_to_jsonschema


def schema_message(stream: StreamInfo) -> dict[str, Any]:
    """The SCHEMA message of a stream (with its bookmark property, if any)."""
    message: dict[str, Any] = {
        "type": "SCHEMA",
        "stream": stream.name,
        "schema": arrow_to_jsonschema(stream.schema),
        "key_properties": list(stream.key_properties),
    }
    if stream.replication_key:
        message["bookmark_properties"] = [stream.replication_key]
    return message


class SingerOutput:
    """Writes events as Singer messages, one per line, to a binary stream."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def schema(self, stream: StreamInfo) -> None:
        self.out.write(orjson.dumps(schema_message(stream)) + b"\n")

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        self.out.write(encode_records(batch, stream))

    def state(self, value: Any) -> None:
        self.out.write(orjson.dumps({"type": "STATE", "value": value}) + b"\n")

    def flush(self) -> None:
        self.out.flush()
