"""The reader-side rules every path shares: batches match their declaration, sorted streams
are checked, unsorted ones release their bookmark only at the end, and a resumed string
bookmark compares as the key's type."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.errors import ReaderContractError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.reading import check_batch, checked_batches

UTC_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [pa.field("id", pa.int64(), nullable=False), ("at", UTC_TS), ("name", pa.string())]
)
STREAM = StreamInfo("s", SCHEMA, ("id",), "at", "INCREMENTAL")


def _batch(
    ids: list[Any],
    at: list[Any],
    names: list[Any] | None = None,
    types: dict[str, pa.DataType] | None = None,
) -> Any:
    types = types or {}
    return pa.record_batch(
        [
            pa.array(ids, types.get("id", pa.int64())),
            pa.array(at, types.get("at", UTC_TS)),
            pa.array(names or [None] * len(ids), types.get("name", pa.string())),
        ],
        names=["id", "at", "name"],
    )


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_exact_batch_passes_unchanged() -> None:
    batch = pa.RecordBatch.from_pylist([{"id": 1, "at": T0, "name": "a"}], schema=SCHEMA)
    assert check_batch(STREAM, batch) is batch


@pytest.mark.parametrize(
    ("batch", "column"),
    [
        (_batch(["1"], [T0], types={"id": pa.string()}), "id"),  # a string in an integer key
        (
            _batch([1], [T0.replace(tzinfo=None)], types={"at": pa.timestamp("us")}),
            "at",
        ),  # naive in zoned
        (_batch([1.5], [T0], types={"id": pa.float64()}), "id"),
        (_batch([1], [T0], [1], types={"name": pa.int64()}), "name"),
    ],
)
def test_type_mismatch_names_stream_and_column(batch: pa.RecordBatch, column: str) -> None:
    with pytest.raises(ReaderContractError, match=f"stream 's', column '{column}'"):
        check_batch(STREAM, batch)


def test_null_in_a_key_property_is_refused() -> None:
    with pytest.raises(ReaderContractError, match=r"row 1 .* key property 'id'"):
        check_batch(STREAM, _batch([1, None], [T0, T0]))


def test_missing_column_is_refused() -> None:
    batch = pa.record_batch([pa.array([1], pa.int64())], names=["id"])
    with pytest.raises(ReaderContractError, match=r"lacks declared column\(s\) \['at', 'name'\]"):
        check_batch(STREAM, batch)


def test_safe_casts_are_applied() -> None:
    batch = pa.record_batch(
        [pa.array([1], pa.int32()), pa.array([T0], UTC_TS), pa.nulls(1)],
        names=["id", "at", "name"],
    )
    out = check_batch(STREAM, batch)
    assert out.schema == SCHEMA
    assert out.to_pylist() == [{"id": 1, "at": T0, "name": None}]
    extra = batch.append_column("more", pa.array([1]))
    assert check_batch(STREAM, extra).schema == SCHEMA  # extra columns are dropped


def test_unsafe_integer_casts_are_refused() -> None:
    schema = pa.schema([pa.field("id", pa.int32(), nullable=False), ("at", UTC_TS)])
    stream = StreamInfo("s", schema, ("id",), "at", "INCREMENTAL")
    batch = pa.record_batch([pa.array([1], pa.int64()), pa.array([T0], UTC_TS)], names=["id", "at"])
    with pytest.raises(ReaderContractError, match="type int64"):
        check_batch(stream, batch)
    unsigned = pa.record_batch(
        [pa.array([1], pa.uint32()), pa.array([T0], UTC_TS)], names=["id", "at"]
    )
    with pytest.raises(ReaderContractError):
        check_batch(stream, unsigned)


class _ListReader(ArrowReader):
    def __init__(self, batches: list[pa.RecordBatch], sorted_: bool) -> None:
        super().__init__()
        self._batches = batches
        self.is_sorted = sorted_  # type: ignore[misc]

    def discover(self) -> Sequence[StreamInfo]:
        return [STREAM]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        yield from self._batches


def _at(hours: list[int]) -> pa.RecordBatch:
    return _batch(list(range(len(hours))), [T0 + dt.timedelta(hours=h) for h in hours])


def test_sorted_stream_releases_after_each_batch() -> None:
    reader = _ListReader([_at([1, 2]), _at([2, 3]), _at([5])], sorted_=True)
    released = [b for _, b in checked_batches(reader, STREAM, None) if b is not None]
    assert released == [T0 + dt.timedelta(hours=h) for h in (2, 3, 5)]


def test_sorted_stream_going_backwards_fails_before_releasing_it() -> None:
    reader = _ListReader([_at([5, 6]), _at([1, 2])], sorted_=True)
    seen = []
    with pytest.raises(ReaderContractError, match="went back"):
        for _, released in checked_batches(reader, STREAM, None):
            seen.append(released)
    assert seen == [T0 + dt.timedelta(hours=6)]


def test_unsorted_stream_releases_only_at_its_end() -> None:
    reader = _ListReader([_at([9]), _at([5]), _at([1])], sorted_=False)
    released = [b for _, b in checked_batches(reader, STREAM, None)]
    assert released == [None, None, None, T0 + dt.timedelta(hours=9)]


def test_resumed_string_bookmark_never_moves_backwards() -> None:
    """STATE keeps a date-time bookmark as ISO text; a batch below it must not lower it."""
    reader = _ListReader([_at([1])], sorted_=True)
    stored = (T0 + dt.timedelta(hours=3)).isoformat()
    assert reader.bookmark(STREAM, _at([1]), stored) == stored
    later = reader.bookmark(STREAM, _at([4]), stored)
    assert later == T0 + dt.timedelta(hours=4)
    naive = pa.schema([("id", pa.int64()), ("at", pa.timestamp("us")), ("name", pa.string())])
    stream = StreamInfo("s", naive, (), "at", "INCREMENTAL")
    batch = pa.RecordBatch.from_pylist([{"id": 1, "at": dt.datetime(2026, 1, 1)}], schema=naive)
    assert reader.bookmark(stream, batch, "2026-01-02T00:00:00") == "2026-01-02T00:00:00"
    assert reader.bookmark(stream, batch, 5) == dt.datetime(2026, 1, 1)  # unreadable: the batch's
