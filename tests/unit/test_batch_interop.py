"""Arrow BATCH files in singer-sdk's layout (meltano/sdk#3696), written here by pyarrow
directly: the layout its ``ArrowBatcher`` writes (``pa.Table.from_pylist`` of a file's
records, ``pa.ipc.new_file``, one file per BATCH message named ``<tap>--<stream>-<uuid>=<n>
.arrow``, the message ``{"format": "arrow"}``, the types inferred from the values). The
SDK's own encoder and decoder run in tests/e2e/test_batch_interop.py; these are the edge
cases, fast: several files in one manifest, a file with no rows, an empty file, IPC buffer
compression, decimals, timestamps and nested values, and files that do not fit the SCHEMA.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from dativo_bridge.batch_files import BatchFileWriter, BatchSettings
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.delivery import StreamWriters
from dativo_bridge.errors import ConfigError, DecodeError
from dativo_bridge.interfaces import ArrowWriter, CommitResult

UTC = dt.UTC
PROPERTIES: dict[str, Any] = {
    "id": {"type": "integer"},
    "amount": {
        "type": ["string", "null"],
        "format": "x-singer.decimal",
        "precision": 18,
        "scale": 4,
    },
    "ratio": {"type": ["number", "null"]},
    "at": {"type": ["string", "null"], "format": "date-time"},
    "day": {"type": ["string", "null"], "format": "date"},
    "name": {"type": ["string", "null"]},
    "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    "point": {
        "type": ["object", "null"],
        "properties": {"x": {"type": ["integer", "null"]}, "y": {"type": ["string", "null"]}},
    },
    "doc": {},
}
ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "amount": decimal.Decimal("12345678901234.5678"),
        "ratio": 0.5,
        "at": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        "day": dt.date(1, 1, 1),
        "name": 'é "q"',
        "tags": ["a", "b"],
        "point": {"y": "p", "x": 1},  # fields in another order than the SCHEMA's
        "doc": {"n": decimal.Decimal("1.10"), "when": dt.date(2024, 1, 1), "l": [None, True]},
    },
    {
        "id": 2,
        "amount": decimal.Decimal("-0.0001"),
        "ratio": None,
        "at": None,
        "day": dt.date(9999, 12, 31),
        "name": None,
        "tags": [],
        "point": None,
        "doc": [1, 2],
    },
]


class Collected(ArrowWriter):
    """Keeps committed rows in memory."""

    rows: list[dict[str, Any]] = []

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[dict[str, Any]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.extend(batch.to_pylist())

    def commit(self) -> CommitResult:
        Collected.rows.extend(self._pending)
        done = CommitResult(rows=len(self._pending))
        self._pending = []
        return done


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Collected.rows = []


def sdk_file(root: Path, rows: list[dict[str, Any]], n: int = 1, **options: Any) -> Path:
    """A file as singer-sdk's ArrowBatcher writes it (``options``: IpcWriteOptions)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"tap-x--s-{uuid.uuid4()}={n}.arrow"
    table = pa.Table.from_pylist(rows)
    with (
        pa.OSFile(str(path), "wb") as sink,
        ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(**options)) as writer,
    ):
        writer.write_table(table)
    return path


def load(
    manifests: list[list[str]], properties: dict[str, Any] | None = None, **encoding: Any
) -> list[dict[str, Any]]:
    """The rows a target commits from these BATCH messages (sorted by id)."""
    schema = {"type": "object", "properties": properties or PROPERTIES, "required": ["id"]}
    lines: list[dict[str, Any]] = [
        {"type": "SCHEMA", "stream": "s", "schema": schema, "key_properties": ["id"]}
    ]
    lines += [
        {
            "type": "BATCH",
            "stream": "s",
            "encoding": {"format": "arrow", **encoding},
            "manifest": m,
        }
        for m in manifests
    ]
    lines.append({"type": "STATE", "value": {"done": True}})
    data = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    writers = StreamWriters(Collected, {}, lambda state: None)
    SingerInput(writers).process(io.BytesIO(data))
    writers.finish()
    return sorted(Collected.rows, key=lambda r: r["id"])


def test_several_sdk_files_in_one_manifest_mean_what_their_records_mean(tmp_path: Path) -> None:
    """Each file has its own inferred types (decimal128(18, 4) then (5, 4), a struct then a
    list for the JSON column, nulls-only columns); all land in the SCHEMA's types."""
    first, second = sdk_file(tmp_path, ROWS[:1], 1), sdk_file(tmp_path, ROWS[1:], 2)
    assert ipc.open_file(str(second)).schema.field("ratio").type == pa.null()
    rows = load([[first.as_uri(), second.as_uri()]])
    assert [r["amount"] for r in rows] == [
        decimal.Decimal("12345678901234.5678"),
        decimal.Decimal("-0.0001"),
    ]
    assert rows[0]["at"] == dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    assert [r["day"] for r in rows] == [dt.date(1, 1, 1), dt.date(9999, 12, 31)]
    assert rows[0]["point"] == {"x": 1, "y": "p"} and rows[1]["point"] is None
    assert [r["tags"] for r in rows] == [["a", "b"], []]
    assert rows[0]["name"] == 'é "q"' and rows[1]["ratio"] is None
    # JSON values as a RECORD carries them: numbers exact, dates as ISO text.
    assert rows[0]["doc"] == '{"n":1.10,"when":"2024-01-01","l":[null,true]}'
    assert json.loads(rows[1]["doc"]) == [1, 2]
    assert first.exists() and second.exists()  # not a Dativo tap's files: kept


@pytest.mark.parametrize("codec", [None, "zstd", "lz4"])
def test_ipc_buffer_compression_is_read(tmp_path: Path, codec: str | None) -> None:
    path = sdk_file(tmp_path, ROWS[:1] * 1000, compression=codec)
    encoding = {"compression": codec} if codec else {}
    rows = load([[path.as_uri()]], **encoding)
    assert len(rows) == 1000 and rows[0]["amount"] == ROWS[0]["amount"]


def test_a_file_with_no_rows_loads_nothing_and_an_empty_file_is_an_error(
    tmp_path: Path,
) -> None:
    schema = pa.schema([("id", pa.int64())])
    no_rows = tmp_path / "no-rows.arrow"
    with pa.OSFile(str(no_rows), "wb") as sink, ipc.new_file(sink, schema):
        pass
    assert load([[no_rows.as_uri()]]) == []
    empty = tmp_path / "empty.arrow"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match=r"empty\.arrow.*empty file"):
        load([[no_rows.as_uri(), empty.as_uri()]])


def test_columns_the_file_lacks_are_null_and_extra_columns_are_dropped(tmp_path: Path) -> None:
    path = sdk_file(tmp_path, [{"id": 5, "name": "n", "unknown": 1}])
    (row,) = load([[path.as_uri()]])
    assert row == {**dict.fromkeys(PROPERTIES), "id": 5, "name": "n"}


def test_text_in_the_schemas_formats_is_parsed(tmp_path: Path) -> None:
    """A tap whose records hold ISO text and decimal text (as RECORD messages do)."""
    path = sdk_file(
        tmp_path,
        [{"id": 1, "amount": "-1.5", "at": "2024-01-02T03:04:05.5+02:00", "day": "2024-01-02"}],
    )
    (row,) = load([[path.as_uri()]])
    assert row["amount"] == decimal.Decimal("-1.5000")
    assert row["at"] == dt.datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=UTC)
    assert row["day"] == dt.date(2024, 1, 2)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([{"id": "one"}], "column 'id' has type string, not int64"),
        ([{"id": 1, "name": 5}], "column 'name' has type int64, not string"),
        ([{"id": 1, "tags": "a,b"}], "column 'tags' has type string, not list"),
        ([{"id": 1, "at": "yesterday"}], "column 'at' (string) cannot be read as timestamp"),
        ([{"id": 1, "amount": 0.1 + 0.2}], "column 'amount': 0.30000000000000004"),
        ([{"id": 1, "amount": decimal.Decimal("1.00001")}], "column 'amount' (decimal128(6, 5))"),
    ],
)
def test_a_file_that_does_not_fit_the_schema_is_an_error_naming_it(
    tmp_path: Path, rows: list[dict[str, Any]], reason: str
) -> None:
    good = sdk_file(tmp_path, [{"id": 9}])
    bad = sdk_file(tmp_path, rows, 2)
    with pytest.raises(DecodeError) as caught:
        load([[good.as_uri(), bad.as_uri()]])
    message = str(caught.value)
    assert bad.as_uri() in message and "stream 's'" in message and reason in message, message
    assert Collected.rows == [] and good.exists() and bad.exists()


def test_dictionary_map_and_partial_struct_columns_are_read(tmp_path: Path) -> None:
    """Types other writers produce: a categorical (dictionary) column, a map into a JSON
    column, a struct without one of the SCHEMA's fields."""
    path = tmp_path / "other-writer.arrow"
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2]),
            "name": pa.array(["b", "a"]).dictionary_encode(),
            "doc": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
            "point": pa.array([{"x": 3}, None], pa.struct([("x", pa.int64())])),
        }
    )
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    rows = load([[path.as_uri()]])
    assert [r["name"] for r in rows] == ["b", "a"]
    assert [r["doc"] for r in rows] == ['{"k":1}', None]
    assert [r["point"] for r in rows] == [{"x": 3, "y": None}, None]


def test_a_float_that_a_decimal_holds_exactly_is_read(tmp_path: Path) -> None:
    path = sdk_file(tmp_path, [{"id": 1, "amount": 2.5}, {"id": 2, "amount": -0.125}])
    assert [r["amount"] for r in load([[path.as_uri()]])] == [
        decimal.Decimal("2.5000"),
        decimal.Decimal("-0.1250"),
    ]


def test_gzipped_files_and_ipc_streams_are_named_for_what_they_are(tmp_path: Path) -> None:
    path = sdk_file(tmp_path, ROWS[:1])
    gzipped = tmp_path / "whole.arrow"
    gzipped.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(DecodeError, match="gzip file"):
        load([[gzipped.as_uri()]], compression="gzip")
    stream = tmp_path / "stream.arrow"
    table = pa.Table.from_pylist(ROWS[:1])
    with pa.OSFile(str(stream), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(DecodeError, match="an Arrow IPC stream, not an Arrow IPC file"):
        load([[stream.as_uri()]])


def test_a_manifest_path_that_is_literal_is_found(tmp_path: Path) -> None:
    """singer-sdk writes a ``file://`` root's path as it is: ``a%20b`` is a real folder."""
    path = sdk_file(tmp_path / "a%20b", ROWS[:1])
    assert [r["id"] for r in load([["file://" + str(path)]])] == [1]


def test_a_dativo_tap_writes_the_sdk_layout(tmp_path: Path) -> None:
    """Uncompressed by default, ``{"format": "arrow"}``, a file:// URI of the path as it is,
    an IPC file of the stream's own types."""
    settings = BatchSettings.parse(
        {"encoding": {"format": "arrow"}, "storage": {"root": str(tmp_path / "a b")}}
    )
    assert settings.encoding() == {"format": "arrow"}
    schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
    writer = BatchFileWriter(settings, "s", schema)
    writer.write(pa.record_batch({"id": [1], "s": ["x" * 10_000]}, schema=schema))
    uri = writer.close()
    assert uri == "file://" + str(writer.path) and " " in uri and writer.path.suffix == ".arrow"
    assert writer.path.stat().st_size > 10_000  # no buffer compression
    assert ipc.open_file(str(writer.path)).read_all().column("s").to_pylist() == ["x" * 10_000]
    zstd = BatchSettings.parse({"encoding": {"format": "arrow", "compression": "zstd"}})
    assert zstd.encoding() == {"format": "arrow", "compression": "zstd"}
    assert BatchSettings.parse({"encoding": {"format": "arrow", "compression": "lz4"}})
    with pytest.raises(ConfigError, match="arrow files support compression"):
        BatchSettings.parse({"encoding": {"format": "arrow", "compression": "gzip"}})


def test_a_dativo_tap_file_under_an_odd_root_round_trips_and_is_deleted(tmp_path: Path) -> None:
    """``%``, ``#``, ``?`` are escaped, a space is not: the target finds the file from the
    URI, reads it and, as a Dativo tap's own file, deletes it after the commit."""
    root = tmp_path / "50%off #1? ü"
    settings = BatchSettings.parse(
        {"encoding": {"format": "arrow"}, "storage": {"root": str(root)}}
    )
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    writer = BatchFileWriter(settings, "s", schema)
    writer.write(pa.record_batch({"id": [4]}, schema=schema))
    uri = writer.close()
    assert "50%25off %231%3F ü" in uri
    assert [r["id"] for r in load([[uri]], {"id": {"type": "integer"}})] == [4]
    assert not writer.path.exists()
