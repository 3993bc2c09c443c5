"""Helpers of the tap-dativo-rest tests: configs against the test server, and reads."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dativo_bridge.interfaces import StreamInfo
from tap_dativo_rest.reader import RestReader

from .server import ORDERS_SCHEMA, shared_server

SERVER = shared_server()

#: Fast retries so that failure tests stay quick.
FAST_RETRIES = {"max_retries": 3, "backoff_factor": 0.02, "max_backoff": 0.2}


def stream(path: str, **settings: Any) -> dict[str, Any]:
    """One stream named ``orders`` (declared schema unless overridden)."""
    return {
        "name": "orders",
        "path": path,
        "records_path": "$.data[*]",
        "primary_keys": ["id"],
        "schema": ORDERS_SCHEMA,
        **settings,
    }


def config(*streams: Mapping[str, Any], **settings: Any) -> dict[str, Any]:
    """A config for the test server."""
    return {"api_url": SERVER.url, "streams": list(streams), **FAST_RETRIES, **settings}


@dataclass
class Read:
    """What one read of every stream produced."""

    streams: list[StreamInfo]
    batches: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    bookmarks: dict[str, list[Any]] = field(default_factory=dict)
    seconds: float = 0.0
    reader: RestReader | None = None

    def table(self, name: str = "orders") -> pa.Table:
        """All batches of a stream as one table."""
        info = next(s for s in self.streams if s.name == name)
        return pa.Table.from_batches(self.batches[name], schema=info.schema)

    def ids(self, name: str = "orders") -> list[int]:
        """The ``id`` column of a stream."""
        return self.table(name).column("id").to_pylist()


def read_all(cfg: Mapping[str, Any], bookmark: Any | None = None) -> Read:
    """Open a RestReader, discover, read every stream (from ``bookmark``), close."""
    reader = RestReader()
    started = time.monotonic()
    reader.open(cfg)
    try:
        result = Read(list(reader.discover()), reader=reader)
        for info in result.streams:
            marks: list[Any] = []
            batches = []
            current = bookmark
            for batch in reader.read(info, bookmark):
                assert batch.schema == info.schema
                batches.append(batch)
                current = reader.bookmark(info, batch, current)
                marks.append(current)
            result.batches[info.name] = batches
            result.bookmarks[info.name] = marks
    finally:
        reader.close()
    result.seconds = time.monotonic() - started
    return result
