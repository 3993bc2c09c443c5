"""Readers used by the end-to-end tests, loaded by `dativo run` from an allowed directory."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from dativo_bridge import ArrowReader, DativoError, StreamInfo

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("payload", pa.string())])


class SlowCounterReader(ArrowReader):
    """`total` rows in batches of `batch_rows`, sleeping `pause` seconds between batches."""

    name = "tap-slow-counter"
    is_sorted = True
    config_jsonschema = {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "batch_rows": {"type": "integer"},
            "pause": {"type": "number"},
        },
    }

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("counter", SCHEMA, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        total = int(self.config["total"])
        size = int(self.config["batch_rows"])
        start = int(bookmark) if bookmark is not None else 1
        for lo in range(start, total + 1, size):
            ids = pa.array(range(lo, min(lo + size, total + 1)), pa.int64())
            payload = pa.array([f"row-{i}" for i in ids.to_pylist()])
            yield pa.record_batch([ids, payload], schema=SCHEMA)
            time.sleep(float(self.config.get("pause", 0)))


class LeakyReader(ArrowReader):
    """Fails with an error message that contains its secret token."""

    name = "tap-leaky"
    config_jsonschema = {
        "type": "object",
        "properties": {
            "api_token": {"type": "string", "secret": True},
            "endpoint": {"type": "string"},
        },
    }

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("leaky", SCHEMA, ("id",))]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1], pa.int64()), pa.array(["x"])], schema=SCHEMA)
        raise DativoError(
            f"request to {self.config['endpoint']}?token={self.config['api_token']} failed"
        )
