"""singer-sdk's standard tap and target suites, for the built-in plugins and for a tiny
reader/writer pair made with make_tap / make_target."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from singer_sdk.testing import SuiteConfig, get_tap_test_class, get_target_test_class

from dativo_bridge import ArrowReader, ArrowWriter, CommitResult, StreamInfo, make_tap, make_target
from tap_dativo_csv.tap import TapDativoCsv
from target_dativo_parquet.target import TargetDativoParquet

DEMO = Path(__file__).resolve().parents[2] / "demo" / "orders.csv"

TestTapDativoCsv = get_tap_test_class(
    TapDativoCsv,
    config={"files": [{"stream": "orders", "path": str(DEMO), "key_properties": ["id"]}]},
)

TestTargetDativoParquet = get_target_test_class(
    TargetDativoParquet,
    config={"path": tempfile.mkdtemp(prefix="dativo-sdk-suite-")},
)


class NumbersReader(ArrowReader):
    """The smallest useful reader: one stream of squares."""

    name = "tap-numbers"
    config_jsonschema = {"type": "object", "properties": {"count": {"type": "integer"}}}

    def discover(self) -> Sequence[StreamInfo]:
        schema = pa.schema([pa.field("n", pa.int64(), nullable=False), ("square", pa.int64())])
        return [StreamInfo("numbers", schema, ("n",), "n", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        start = int(bookmark or 0)
        for lo in range(start, int(self.config.get("count", 25)), 10):
            ns = list(range(lo, min(lo + 10, int(self.config.get("count", 25)))))
            batch = pa.record_batch(
                [pa.array(ns), pa.array([n * n for n in ns])],
                schema=pa.schema([("n", pa.int64()), ("square", pa.int64())]),
            )
            yield batch.select(stream.schema.names)


class MemoryWriter(ArrowWriter):
    """The smallest useful writer: one Parquet file per commit in a directory."""

    name = "target-memory"
    config_jsonschema = {
        "type": "object",
        "properties": {"dir": {"type": "string"}},
        "required": ["dir"],
    }

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.batches: list[pa.RecordBatch] = []
        self.commits = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def commit(self) -> CommitResult:
        if not self.batches:
            return CommitResult()
        assert self.stream is not None
        self.commits += 1
        table = pa.Table.from_batches(self.batches)
        folder = Path(self.config["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.stream.name.replace(':', '_')}-{self.commits}.parquet"
        pq.write_table(table, path)
        self.batches = []
        return CommitResult(paths=[str(path)], rows=table.num_rows)

    def update_schema(self, schema: pa.Schema) -> None:
        self.commit()
        assert self.stream is not None
        self.stream = StreamInfo(self.stream.name, schema, self.stream.key_properties)


TapNumbers = make_tap(NumbersReader)
TargetMemory = make_target(MemoryWriter)

TestTapNumbers = get_tap_test_class(
    TapNumbers, config={"count": 25}, suite_config=SuiteConfig(max_records_limit=15)
)
TestTargetMemory = get_target_test_class(
    TargetMemory, config={"dir": tempfile.mkdtemp(prefix="dativo-sdk-suite-")}
)
