"""Bad Singer input through SingerInput + StreamWriters + a real ParquetWriter.

Every case must fail with a DecodeError that names the line (and the stream, property and
expected type where known), and must leave nothing behind: no Parquet file (not even a
hidden in-progress one) and no STATE released, even when good rows and a STATE preceded it.
"""

from __future__ import annotations

import decimal
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from singer_sdk.exceptions import MissingKeyPropertiesError, RecordsWithoutSchemaException

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.messages import DEFAULT_MAX_LINE_BYTES, SingerInput
from dativo_bridge.delivery import StreamWriters
from dativo_bridge.errors import DecodeError, MissingKeyPropertyError, RecordBeforeSchemaError
from dativo_bridge.schema import jsonschema_to_arrow
from target_dativo_parquet.writer import ParquetWriter

ORDERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "qty": {"type": ["integer", "null"]},
        "name": {"type": ["string", "null"]},
        "amount": {
            "type": ["string", "null"],
            "format": "x-singer.decimal",
            "precision": 10,
            "scale": 2,
        },
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "day": {"type": ["string", "null"], "format": "date"},
        "at": {"type": ["string", "null"], "format": "time"},
        "score": {"type": ["number", "null"]},
        "meta": {"type": ["object", "null"], "properties": {"a": {"type": ["integer", "null"]}}},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}
FILES = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "blob": {"type": ["string", "null"], "contentEncoding": "base64"},
    },
}
GOOD = {
    "id": 1,
    "qty": 2,
    "name": "a",
    "amount": "1.50",
    "created_at": "2024-01-02T03:04:05.000006+00:00",
    "day": "2024-01-02",
    "at": "03:04:05.5",
    "score": 1.5,
    "meta": {"a": 1},
    "tags": ["x", "y"],
}


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def rec(record: Any, stream: str = "orders") -> str:
    return msg(type="RECORD", stream=stream, record=record)


def bad(**changes: Any) -> str:
    return rec({**GOOD, "id": 99, **changes})


PRELUDE = [
    msg(type="SCHEMA", stream="orders", schema=ORDERS, key_properties=["id"]),
    msg(type="SCHEMA", stream="files", schema=FILES, key_properties=["id"]),
    rec(GOOD),
    rec({"id": 2}),
    rec({"id": 1, "blob": "AP8="}, "files"),
    msg(type="STATE", value={"bookmark": 1}),
]
BAD_LINE = len(PRELUDE) + 1  # the bad line comes right after the prelude
TRAILER = [rec({**GOOD, "id": 3}), msg(type="STATE", value={"bookmark": 2})]


def run(
    tmp_path: Path, lines: Sequence[str | bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[Any]:
    """Feed ``lines`` through the target's pipeline; return the states released."""
    states: list[Any] = []
    writers = StreamWriters(
        ParquetWriter,
        {"path": str(tmp_path / "out")},
        states.append,
        checkpoint_rows=10**9,
        checkpoint_seconds=1e9,
    )
    singer_input = SingerInput(writers, max_line_bytes=max_line_bytes)
    data = b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines)
    try:  # what ArrowTarget does: process, flush, finish; close on any error
        singer_input.process(io.BytesIO(data))
        singer_input.flush()
        writers.finish()
    except BaseException:
        writers.close()
        raise
    return states


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@dataclass
class Case:
    name: str
    lines: list[str | bytes]
    line: int = BAD_LINE
    stream: str | None = "orders"
    expected: str | None = None  # a fragment of DecodeError.expected
    field: str | None = None
    reason: str | None = None  # a fragment of the message
    error: type[Exception] = DecodeError
    prelude: bool = True
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


CASES = [
    Case(
        "truncated-record",
        ['{"type":"RECORD","stream":"orders","record":{"id":3,"na'],
        reason="malformed JSON",
    ),
    Case(
        "truncated-state",
        ['{"type":"STATE","value":{"a":'],
        stream=None,
        reason="malformed JSON",
        expected="a Singer message",
    ),
    Case("not-json", ["this is not json"], stream=None, reason="malformed JSON"),
    Case(
        "json-array",
        ["[1, 2, 3]"],
        stream=None,
        reason="not a Singer message",
        expected="a JSON object with a 'type'",
    ),
    Case(
        "no-type", [msg(stream="orders", record=GOOD)], stream=None, reason="not a Singer message"
    ),
    Case(
        "unknown-type",
        [msg(type="RECORDS", stream="orders")],
        stream=None,
        reason="unknown message type 'RECORDS'",
        expected="RECORD, SCHEMA, STATE",
    ),
    Case(
        "record-without-stream",
        [msg(type="RECORD", record=GOOD)],
        stream=None,
        expected="a stream name",
    ),
    Case(
        "record-before-schema",
        [rec(GOOD)],
        line=1,
        prelude=False,
        error=RecordBeforeSchemaError,
        expected="a SCHEMA message",
    ),
    Case(
        "record-unknown-stream", [rec(GOOD, "nope")], stream="nope", error=RecordBeforeSchemaError
    ),
    Case("string-for-integer", [bad(qty="seven")], expected="integer (int64)", field="qty"),
    Case("float-for-integer", [bad(qty=1.5)], expected="integer (int64)", field="qty"),
    Case("int64-overflow", [bad(qty=2**63)], expected="integer (int64)", field="qty"),
    Case("boolean-for-string", [bad(name=True)], expected="string", field="name"),
    Case("number-for-string", [bad(name=12)], expected="string", field="name"),
    Case("boolean-for-number", [bad(score=False)], expected="number", field="score"),
    Case(
        "bad-date-time",
        [bad(created_at="2024-02-30T00:00:00Z")],
        expected="date-time",
        field="created_at",
    ),
    Case(
        "date-time-not-a-string",
        [bad(created_at=1700000000)],
        expected="date-time",
        field="created_at",
    ),
    Case("bad-date", [bad(day="2024-13-01")], expected="date string", field="day"),
    Case("bad-time", [bad(at="24:61:00")], expected="time string", field="at"),
    Case(
        "decimal-scale",
        [bad(amount="1.234")],
        field="amount",
        expected="decimal string with precision 10 and scale 2",
    ),
    Case(
        "decimal-precision",
        [bad(amount="123456789.12")],
        field="amount",
        expected="decimal string with precision 10 and scale 2",
    ),
    Case("decimal-not-a-number", [bad(amount="12,50")], field="amount", expected="decimal"),
    Case(
        "invalid-base64",
        [rec({"id": 5, "blob": "not base64!"}, "files")],
        stream="files",
        expected="base64 string",
        field="blob",
    ),
    Case("array-for-struct", [bad(meta=[1, 2])], expected="object", field="meta"),
    Case("bad-struct-field", [bad(meta={"a": "x"})], expected="integer", field="meta.a"),
    Case("object-for-array", [bad(tags={"a": 1})], expected="array", field="tags"),
    Case("bad-array-item", [bad(tags=["ok", 3])], expected="string", field="tags[]"),
    Case(
        "missing-key",
        [rec({k: v for k, v in GOOD.items() if k != "id"})],
        error=MissingKeyPropertyError,
        field="id",
        expected="integer",
    ),
    Case("null-key", [bad(id=None)], error=MissingKeyPropertyError, field="id"),
    Case("record-not-object", [rec([1, 2])], expected="object", reason="no 'record' object"),
    Case("record-missing", [msg(type="RECORD", stream="orders")], expected="object"),
    Case(
        "schema-no-properties",
        [msg(type="SCHEMA", stream="empty", schema={"type": "object", "properties": {}})],
        stream="empty",
        reason="at least one property",
    ),
    Case(
        "schema-unknown-type",
        [
            msg(
                type="SCHEMA",
                stream="odd",
                schema={"type": "object", "properties": {"x": {"type": "money"}}},
            )
        ],
        stream="odd",
        reason="'money'",
    ),
    Case(
        "schema-not-object",
        [msg(type="SCHEMA", stream="odd", schema="object")],
        stream=None,
        expected="a Singer SCHEMA message",
    ),
    Case(
        "invalid-utf8-in-state",
        [b'{"type":"STATE","value":{"k":"\xff\xfe"}}'],
        stream=None,
        reason="malformed JSON",
    ),
    Case(
        "invalid-utf8-in-record",
        [b'{"type":"RECORD","stream":"orders","record":{"id":7,"name":"a\xff\xfeb"}}'],
    ),
    Case(
        "line-too-long",
        [rec({**GOOD, "name": "x" * 10_000})],
        stream=None,
        max_line_bytes=4096,
        reason="longer than max_line_bytes (4096 bytes)",
        expected="one Singer message per line",
    ),
]


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.name) for c in CASES],
)
def test_bad_input_fails_precisely_and_leaves_nothing(tmp_path: Path, case: Case) -> None:
    lines = (PRELUDE if case.prelude else []) + case.lines + TRAILER
    states: list[Any] = []
    with pytest.raises(case.error) as info:
        states = run(tmp_path, lines, max_line_bytes=case.max_line_bytes)
    exc = info.value
    text = str(exc)
    assert isinstance(exc, DecodeError)
    assert exc.line_number == case.line
    assert text.startswith(f"line {case.line}")
    assert exc.stream == case.stream
    if case.stream is not None:
        assert f"stream '{case.stream}'" in text
    if case.expected is not None:
        assert exc.expected is not None and case.expected in exc.expected
        assert text.endswith(f"(expected {exc.expected})")
    if case.field is not None:
        assert exc.field == case.field
        assert f"property '{case.field}'" in text
    if case.reason is not None:
        assert case.reason in text
    assert states == []
    assert files_under(tmp_path) == []


def test_error_classes_are_also_the_sdk_exceptions(tmp_path: Path) -> None:
    with pytest.raises(RecordsWithoutSchemaException):
        run(tmp_path, [rec(GOOD)])
    with pytest.raises(MissingKeyPropertiesError):
        run(tmp_path, [*PRELUDE, rec({"qty": 1})])
    assert files_under(tmp_path) == []


def test_orders_stream_takes_the_fast_path() -> None:
    assert RecordDecoder("orders", jsonschema_to_arrow(ORDERS), ["id"]).uses_fast_path
    assert not RecordDecoder("files", jsonschema_to_arrow(FILES), ["id"]).uses_fast_path


def test_good_input_commits_and_releases_the_last_state(tmp_path: Path) -> None:
    """The control: the same pipeline without a bad line writes files and releases STATE."""
    states = run(tmp_path, PRELUDE + TRAILER)
    assert states == [{"bookmark": 2}]
    files = files_under(tmp_path)
    assert [p.parent.name for p in files] == ["files", "orders"]
    assert all(p.suffix == ".parquet" and not p.name.startswith(".") for p in files)
    orders = pq.read_table(files[1])
    assert orders.column("id").to_pylist() == [1, 2, 3]
    assert orders.column("amount").to_pylist()[0] == decimal.Decimal("1.50")
    assert pq.read_table(files[0]).column("blob").to_pylist() == [b"\x00\xff"]


def test_pending_in_progress_file_is_removed_on_error(tmp_path: Path) -> None:
    states: list[Any] = []
    writers = StreamWriters(
        ParquetWriter,
        {"path": str(tmp_path)},
        states.append,
        checkpoint_rows=10**9,
        checkpoint_seconds=1e9,
    )
    singer_input = SingerInput(writers)
    for number, line in enumerate(PRELUDE, start=1):
        singer_input.process_line(line.encode(), number)
    hidden = files_under(tmp_path)
    assert len(hidden) == 2 and all(p.name.endswith(".parquet.inprogress") for p in hidden)
    assert states == []  # the STATE waits for a commit
    singer_input.process_line(bad(qty="x").encode(), BAD_LINE)
    with pytest.raises(DecodeError, match=f"line {BAD_LINE}, stream 'orders', property 'qty'"):
        singer_input.flush()
    writers.close()
    assert files_under(tmp_path) == []
    assert states == []
