"""The runner at its edges: a finished FULL_TABLE stream is not read again when a run is
resumed, readers that break their declaration fail instead of losing rows, and the Singer
tap path checks batches and writes binary values as its SCHEMA says."""

from __future__ import annotations

import base64
import decimal
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from dativo_bridge import ArrowReader, ArrowWriter, StreamInfo, make_tap, run
from dativo_bridge.errors import DativoError, ReaderContractError
from dativo_bridge.schema import JSON_TYPE
from dativo_bridge.state import LocalStateStore
from target_dativo_iceberg.writer import IcebergWriter, open_catalog
from target_dativo_parquet.writer import ParquetWriter

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())])


def _rows(ids: Sequence[int]) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(list(ids), pa.int64()), pa.array([f"r{i}" for i in ids])], schema=SCHEMA
    )


class _Crash(DativoError):
    pass


class TwoStreamReader(ArrowReader):
    """A FULL_TABLE stream `whole` (300 rows) then an INCREMENTAL stream `growing` (1000
    rows in batches of 100) that crashes after `crash_after` of its batches."""

    name = "tap-two"
    is_sorted = True
    crash_after: ClassVar[int | None] = None

    def discover(self) -> Sequence[StreamInfo]:
        return [
            StreamInfo("whole", SCHEMA, ("id",)),
            StreamInfo("growing", SCHEMA, ("id",), "id", "INCREMENTAL"),
        ]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        if stream.name == "whole":
            yield _rows(range(1, 151))
            yield _rows(range(151, 301))
            return
        start = int(bookmark) if bookmark is not None else 1
        for n, lo in enumerate(range(start, 1001, 100)):
            if self.crash_after is not None and n == self.crash_after:
                raise _Crash("the source went away")
            yield _rows(range(lo, min(lo + 100, 1001)))


def _ids(folder: Path) -> list[int]:
    files = [str(p) for p in folder.rglob("*.parquet") if not p.name.startswith(".")]
    return sorted(ds.dataset(files).to_table().column("id").to_pylist()) if files else []


@pytest.mark.parametrize("writer", [ParquetWriter, IcebergWriter])
def test_resumed_run_does_not_read_a_finished_full_table_stream_again(
    writer: type[ArrowWriter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStateStore(tmp_path / "state")
    destination = (
        {"path": str(tmp_path / "out")}
        if writer is ParquetWriter
        else {"warehouse": str(tmp_path / "wh")}
    )
    common: dict[str, Any] = {
        "state_store": store,
        "state_id": "t:two",
        "destination_config": destination,
        "checkpoint_rows": 1,  # every batch committed: the run's last STATE adds no rows
    }

    def ids(stream: str) -> list[int]:
        if writer is ParquetWriter:
            return _ids(tmp_path / "out" / stream)
        table = open_catalog(destination).load_table(f"singer.{stream}")
        return sorted(table.scan().to_arrow().column("id").to_pylist())

    monkeypatch.setattr(TwoStreamReader, "crash_after", 4)
    with pytest.raises(_Crash):
        run(TwoStreamReader, writer, **common)
    assert ids("whole") == list(range(1, 301))
    saved = store.get("t:two")
    assert saved is not None and saved["dativo_run"]["completed"] == ["whole"]

    monkeypatch.setattr(TwoStreamReader, "crash_after", None)
    resumed = run(TwoStreamReader, writer, **common)
    assert "whole" not in resumed.streams or resumed.streams["whole"].rows == 0
    assert ids("whole") == list(range(1, 301)), "appended a second time"
    growing = ids("growing")
    assert set(growing) == set(range(1, 1001))
    # Parquet may repeat the bookmark's key group; Iceberg with keys drops it.
    assert len(growing) - 1000 <= (1 if writer is ParquetWriter else 0)
    assert "dativo_run" not in resumed.state, "a finished run leaves no run marker"

    # The next run is a new run: the FULL_TABLE stream is read again, as Singer says
    # (also when the destination's last snapshot carried the finished run's marker).
    again = run(TwoStreamReader, writer, **common)
    assert again.streams["whole"].rows == 300


class NewestFirstReader(ArrowReader):
    """Declares sorted batches but yields the newest first."""

    name = "tap-newest-first"
    is_sorted = True

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("events", SCHEMA, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        for hi in range(1000, 0, -100):
            if self.config.get("crash_at") == hi:
                raise _Crash("crashed mid-stream")
            yield _rows(range(hi - 99, hi + 1))


class HonestNewestFirstReader(NewestFirstReader):
    """The same order, declared unsorted."""

    name = "tap-newest-first-unsorted"
    is_sorted = False


def test_sorted_reader_going_backwards_fails_and_records_nothing_wrong(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    with pytest.raises(ReaderContractError, match="went back from 1000 to 801"):
        run(
            NewestFirstReader,
            ParquetWriter,
            destination_config={"path": str(tmp_path / "out")},
            state_store=store,
            state_id="t:nf",
            checkpoint_rows=1,
            checkpoint_seconds=0,
        )
    saved = store.get("t:nf")
    # The state that was released covers rows 901-1000 only as their own maximum; nothing
    # said "every row up to 1000 is delivered" for rows that were never read.
    assert saved is None or saved["bookmarks"]["events"]["replication_key_value"] <= 1000
    assert _ids(tmp_path / "out" / "events") == list(range(901, 1001))


def test_unsorted_reader_crash_then_resume_loses_nothing(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    common: dict[str, Any] = {
        "destination_config": {"path": str(tmp_path / "out")},
        "state_store": store,
        "state_id": "t:unsorted",
        "checkpoint_rows": 1,
        "checkpoint_seconds": 0,
    }
    with pytest.raises(_Crash):
        run(HonestNewestFirstReader, ParquetWriter, source_config={"crash_at": 500}, **common)
    saved = store.get("t:unsorted") or {}
    assert "events" not in saved.get("bookmarks", {}), "an unsorted stream moved its bookmark"
    run(HonestNewestFirstReader, ParquetWriter, **common)
    assert set(_ids(tmp_path / "out" / "events")) == set(range(1, 1001))
    assert store.get("t:unsorted")["bookmarks"]["events"]["replication_key_value"] == 1000


class WrongTypeReader(ArrowReader):
    """Yields a string where its schema declares an integer key."""

    name = "tap-wrong-type"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("things", SCHEMA, ("id",))]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array(["7"]), pa.array(["x"])], names=["id", "v"])


def test_batch_not_matching_its_schema_fails_in_process(tmp_path: Path) -> None:
    with pytest.raises(ReaderContractError, match="stream 'things', column 'id'"):
        run(WrongTypeReader, ParquetWriter, destination_config={"path": str(tmp_path)})
    assert not list(tmp_path.rglob("*.parquet"))


def test_batch_not_matching_its_schema_fails_on_the_singer_path(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    tap = make_tap(WrongTypeReader)(config={})
    with pytest.raises(ReaderContractError, match="stream 'things', column 'id'"):
        tap.sync_all()
    out = capfdbinary.readouterr().out
    assert b'"RECORD"' not in out


BLOB = pa.schema(
    [pa.field("id", pa.int64(), nullable=False), ("data", pa.binary()), ("doc", JSON_TYPE)]
)
VALUES = [b"\xff" * 10, b"\x00\x01\x02", b"", None]
DOCS = ['{"a": 12345678901234567.89}', "[1, 2]", "null", None]


class BlobReader(ArrowReader):
    name = "tap-blob"

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("blobs", BLOB, ("id",))]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch(
            [
                pa.array(range(len(VALUES)), pa.int64()),
                pa.array(VALUES, pa.binary()),
                pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(DOCS)),
            ],
            schema=BLOB,
        ).select(stream.schema.names)


@pytest.mark.parametrize(
    "maps",
    [
        None,
        {"blobs": {"__filter__": "True"}},
        {"blobs": {"copy": "id"}},
    ],
)
def test_binary_and_json_columns_as_their_schema_says_with_and_without_stream_maps(
    maps: dict[str, Any] | None, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    config: dict[str, Any] = {"stream_maps": maps} if maps else {}
    make_tap(BlobReader)(config=config).sync_all()
    lines = [
        json.loads(line, parse_float=decimal.Decimal)
        for line in capfdbinary.readouterr().out.splitlines()
    ]
    schema = next(m for m in lines if m["type"] == "SCHEMA")
    assert schema["schema"]["properties"]["data"].get("contentEncoding") == "base64"
    records = [m["record"] for m in lines if m["type"] == "RECORD"]
    decoded = [None if r["data"] is None else base64.b64decode(r["data"]) for r in records]
    assert decoded == VALUES
    docs = [r.get("doc") for r in records[:3]]
    assert docs == [{"a": decimal.Decimal("12345678901234567.89")}, [1, 2], None]


class GrowingReader(ArrowReader):
    """One incremental stream of `count` rows."""

    name = "tap-growing"
    is_sorted = True

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("growing", SCHEMA, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        start = int(bookmark) if bookmark is not None else 1
        count = int(self.config.get("count", 1000))
        for lo in range(start, count + 1, 100):
            yield _rows(range(lo, min(lo + 100, count + 1)))


@pytest.mark.parametrize("writer", [ParquetWriter, IcebergWriter])
def test_overwrite_replaces_with_the_whole_source_even_an_empty_one(
    writer: type[ArrowWriter], tmp_path: Path
) -> None:
    destination: dict[str, Any] = (
        {"path": str(tmp_path / "out")}
        if writer is ParquetWriter
        else {"warehouse": str(tmp_path / "wh")}
    )
    common: dict[str, Any] = {
        "state_store": LocalStateStore(tmp_path / "state"),
        "state_id": "t:ow",
        "checkpoint_rows": 100,
    }

    def ids() -> list[int]:
        if writer is ParquetWriter:
            return _ids(tmp_path / "out" / "growing")
        table = open_catalog(destination).load_table("singer.growing")
        return sorted(table.scan().to_arrow().column("id").to_pylist())

    run(GrowingReader, writer, destination_config=destination, **common)
    assert ids() == list(range(1, 1001))
    overwrite = {**destination, "load_method": "overwrite"}
    # A stored bookmark would make the overwrite keep only the rows after it.
    result = run(
        GrowingReader, writer, source_config={"count": 1200}, destination_config=overwrite, **common
    )
    assert result.rows == 1200
    assert ids() == list(range(1, 1201))
    run(GrowingReader, writer, source_config={"count": 0}, destination_config=overwrite, **common)
    assert ids() == [], "an overwrite with an empty source left the old rows"
