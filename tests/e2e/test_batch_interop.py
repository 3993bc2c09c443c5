"""Arrow BATCH interop with singer-sdk's own encoder and decoder (meltano/sdk#3696).

The project's singer-sdk (0.54) has no arrow BATCH encoding; singer-sdk 0.55.0b7 from PyPI
has both sides (``contrib/batch_encoder_arrow.py``: ``ArrowBatcher``, and
``contrib/batch_decoder_arrow.py``: ``ArrowReader``, which reads with nanoarrow), so these
tests run the real thing in its own venv (``peer_venv``): a minimal singer-sdk tap whose
streams go out as the SDK's arrow BATCH files into target-dativo-parquet, and a Dativo tap's
arrow BATCH output into a minimal singer-sdk target whose ``BatchSink`` receives what the
SDK's reader made of our files. Files written by pyarrow to the same layout, with the edge
cases, are in tests/unit/test_batch_interop.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import subprocess
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.cases import ALL_TYPES

from .helpers import peer_venv, read_parquet_dir, script
from .test_batch_messages import TapAllTypes

# Pinned: the reader's behaviour (and its negative-decimal bug, below) is version specific.
SDK = ("singer-sdk==0.55.0b7", "pyarrow==26.0.1", "nanoarrow==0.9.0")

# A tap on singer-sdk's record path (ArrowBatcher: pa.Table.from_pylist per file, types
# inferred from the values) and its native Arrow path (get_record_batches: our types).
SDK_TAP = """
import datetime as dt, decimal, json
import pyarrow as pa
from singer_sdk import Stream, Tap
from singer_sdk import typing as th

UTC = dt.timezone.utc
ROWS = [
    {"id": 1, "amount": decimal.Decimal("12345.6789"),
     "at": dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "day": dt.date(2024, 1, 2),
     "name": "a", "tags": ["x", "y"], "doc": {"any": [1, 2], "k": "v"}},
    {"id": 2, "amount": None, "at": None, "day": None, "name": None, "tags": None,
     "doc": None},
    {"id": 3, "amount": decimal.Decimal("-0.0001"), "at": dt.datetime(1, 1, 1, tzinfo=UTC),
     "day": dt.date(9999, 12, 31), "name": "\\u00fc \\"q\\"", "tags": [], "doc": [3, 4]},
]
PROPERTIES = th.PropertiesList(
    th.Property("id", th.IntegerType, required=True),
    th.Property("amount", th.CustomType({"type": ["number", "null"], "multipleOf": 0.0001})),
    th.Property("at", th.DateTimeType),
    th.Property("day", th.DateType),
    th.Property("name", th.StringType),
    th.Property("tags", th.ArrayType(th.StringType)),
    th.Property("doc", th.CustomType({"type": ["object", "array", "null"]})),
)


class Records(Stream):
    name = "records"
    primary_keys = ("id",)
    schema = PROPERTIES.to_dict()

    def get_records(self, context):
        yield from ROWS


class Native(Stream):
    name = "native"
    primary_keys = ("id",)
    schema = PROPERTIES.to_dict()

    def get_record_batches(self, context):
        # our types; JSON as arrow.json text
        rows = [{**r, "doc": None if r["doc"] is None else json.dumps(r["doc"])} for r in ROWS]
        yield pa.Table.from_pylist(rows[:2], schema=SCHEMA)
        yield pa.Table.from_pylist(rows[2:], schema=SCHEMA)

    def get_records(self, context):
        yield from ROWS


SCHEMA = pa.schema([
    ("id", pa.int64()), ("amount", pa.decimal128(18, 4)), ("at", pa.timestamp("us", "UTC")),
    ("day", pa.date32()), ("name", pa.string()), ("tags", pa.list_(pa.string())),
    ("doc", pa.json_(pa.string())),
])


class TapSdkArrow(Tap):
    name = "tap-sdk-arrow"
    config_jsonschema = th.PropertiesList().to_dict()

    def discover_streams(self):
        return [Records(self), Native(self)]


if __name__ == "__main__":
    TapSdkArrow.cli()
"""

# Python values as JSON with their types kept, so the test can compare exactly.
TAGGED = """
import base64, datetime as dt, decimal, math

def tagged(value):
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "float:nan"
    if isinstance(value, float) and math.isinf(value):
        return "float:" + repr(value)
    if isinstance(value, decimal.Decimal):
        return "decimal:" + str(value)
    if isinstance(value, dt.datetime):
        return "datetime:" + value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return type(value).__name__ + ":" + value.isoformat()
    if isinstance(value, bytes):
        return "bytes:" + base64.b64encode(value).decode()
    return value
"""

SDK_TARGET = (
    TAGGED
    + """
import json
from singer_sdk import Target
from singer_sdk.sinks import BatchSink


class DumpSink(BatchSink):
    def process_batch(self, context):
        with open(self.config["out"], "a") as out:
            for record in context["records"]:
                out.write(json.dumps({"stream": self.stream_name, "record": tagged(record)}))
                out.write("\\n")


class TargetSdkDump(Target):
    name = "target-sdk-dump"
    config_jsonschema = {"type": "object", "properties": {"out": {"type": "string"}}}
    default_sink_class = DumpSink


if __name__ == "__main__":
    TargetSdkDump.cli()
"""
)

# The peer target's own tagging function (our source), so both sides tag values alike.
_namespace: dict[str, Any] = {}
exec(TAGGED, _namespace)
tagged = _namespace["tagged"]


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return peer_venv(SDK[0], "python", *SDK[1:])


def _run(command: list[str], cwd: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    return done.stdout


def _sdk_tap_output(
    sdk_python: Path, tmp_path: Path, root: str | None, encoding: dict | None = None
) -> str:
    """The SDK tap's messages: BATCH files under ``root`` (None: RECORD messages)."""
    tap = tmp_path / "sdk_tap.py"
    tap.write_text(SDK_TAP)
    config: dict[str, Any] = {}
    if root is not None:
        config = {
            "batch_config": {
                "encoding": encoding or {"format": "arrow"},
                "storage": {"root": root},
                "batch_size": 2,
            }
        }
    (tmp_path / "tap.json").write_text(json.dumps(config))
    return _run([str(sdk_python), str(tap), "--config", "tap.json"], tmp_path)


def _stream_lines(output: str, stream: str) -> str:
    """The tap's messages for one stream (and its STATE messages)."""
    lines = output.splitlines()
    return "".join(
        line + "\n" for line in lines if json.loads(line).get("stream") in (stream, None)
    )


def _into_parquet(messages: str, out: Path, cwd: Path, stream: str = "records") -> pa.Table:
    (cwd / "target.json").write_text(json.dumps({"path": str(out)}))
    _run([script("target-dativo-parquet"), "--config", "target.json"], cwd, stdin=messages)
    return read_parquet_dir(out / stream).sort_by("id")


@pytest.mark.parametrize("root_style", ["path", "url"])
def test_sdk_arrow_batches_load_as_their_records_do(
    sdk_python: Path, tmp_path: Path, root_style: str
) -> None:
    """The SDK's ArrowBatcher files (types inferred per file: decimal128(9, 4) in one file,
    a struct in one and a list in the other for the JSON column, an all-null column) give
    the table its RECORD messages give, and are never deleted (not a Dativo tap's).

    A root path with a space gives percent-encoded URIs (``%20``, ``%3D``); a ``file://``
    root is used as it is: the SDK makes a directory literally named ``sdk%20batches`` and
    names it so in the URIs. Both are found."""
    folder = tmp_path / "sdk batches"
    root = str(folder) if root_style == "path" else folder.as_uri()
    if root_style == "url":
        folder = tmp_path / "sdk%20batches"
    batched = _sdk_tap_output(sdk_python, tmp_path, root)
    messages = [json.loads(line) for line in batched.splitlines()]
    batches = [m for m in messages if m["type"] == "BATCH" and m["stream"] == "records"]
    assert [m["encoding"] for m in batches] == [{"format": "arrow"}] * 2  # 3 rows, 2 a file
    files = sorted(folder.iterdir())
    assert len(files) == 4 and all(f.suffix == ".arrow" for f in files)
    from_batches = _into_parquet(
        _stream_lines(batched, "records"), tmp_path / "from-batches", tmp_path
    )
    assert sorted(folder.iterdir()) == files  # foreign files are kept

    records = _sdk_tap_output(sdk_python, tmp_path, None)
    assert '"type":"BATCH"' not in records.replace(" ", "")
    from_records = _into_parquet(
        _stream_lines(records, "records"), tmp_path / "from-records", tmp_path
    )

    assert from_batches.schema == from_records.schema
    assert from_batches.equals(from_records), (from_batches.to_pylist(), from_records.to_pylist())
    rows = from_batches.to_pylist()
    # number + multipleOf 0.0001 is an exact decimal
    assert from_batches.schema.field("amount").type == pa.decimal128(38, 4)
    assert [r["amount"] for r in rows] == [
        decimal.Decimal("12345.6789"),
        None,
        decimal.Decimal("-0.0001"),
    ]
    assert rows[2]["at"] == dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    assert [None if r["doc"] is None else json.loads(r["doc"]) for r in rows] == [
        {"any": [1, 2], "k": "v"},
        None,
        [3, 4],
    ]


def test_sdk_parquet_batches_load_as_their_records_do(sdk_python: Path, tmp_path: Path) -> None:
    """The same reading rules hold for the SDK's ParquetBatcher files (gzip: Parquet's own
    codec, in files named ``.parquet.gz``)."""
    encoding = {"format": "parquet", "compression": "gzip"}
    batched = _sdk_tap_output(sdk_python, tmp_path, str(tmp_path / "b"), encoding)
    assert all(f.name.endswith(".parquet.gz") for f in (tmp_path / "b").iterdir())
    from_batches = _into_parquet(_stream_lines(batched, "records"), tmp_path / "fb", tmp_path)
    records = _sdk_tap_output(sdk_python, tmp_path, None)
    from_records = _into_parquet(_stream_lines(records, "records"), tmp_path / "fr", tmp_path)
    assert from_batches.equals(from_records), (from_batches.to_pylist(), from_records.to_pylist())


def test_sdk_native_arrow_batches_keep_their_types(sdk_python: Path, tmp_path: Path) -> None:
    """A tap on the SDK's native Arrow path (get_record_batches) writes our types; they pass
    through unchanged, negative decimals and year 1 included."""
    output = _sdk_tap_output(sdk_python, tmp_path, str(tmp_path / "batches"))
    native = _stream_lines(output, "native")
    assert '"BATCH"' in native and '"RECORD"' not in native
    table = _into_parquet(native, tmp_path / "out", tmp_path, stream="native")
    assert table.schema.field("amount").type == pa.decimal128(38, 4)
    rows = table.to_pylist()
    assert [r["amount"] for r in rows] == [
        decimal.Decimal("12345.6789"),
        None,
        decimal.Decimal("-0.0001"),
    ]
    assert rows[0]["at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert rows[2]["day"] == dt.date(9999, 12, 31) and rows[2]["name"] == 'ü "q"'
    assert json.loads(rows[2]["doc"]) == [3, 4] and rows[0]["tags"] == ["x", "y"]


def _dativo_tap_output(tmp_path: Path, compression: str | None) -> str:
    encoding: dict[str, str] = {"format": "arrow"}
    if compression:
        encoding["compression"] = compression
    config = {
        "batch_config": {
            "encoding": encoding,
            "batch_size": 2,
            "storage": {"root": (tmp_path / "our batches").as_uri()},
        }
    }
    buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(buffer):
        TapAllTypes(config=config).sync_all()
        buffer.flush()
    buffer.seek(0)
    return buffer.read()


def _read_by_sdk_target(sdk_python: Path, tmp_path: Path, messages: str) -> list[dict]:
    target = tmp_path / "sdk_target.py"
    target.write_text(SDK_TARGET)
    out = tmp_path / "dump.jsonl"
    (tmp_path / "target.json").write_text(json.dumps({"out": str(out)}))
    _run([str(sdk_python), str(target), "--config", "target.json"], tmp_path, stdin=messages)
    rows = [json.loads(line)["record"] for line in out.read_text().splitlines()]
    return sorted(rows, key=lambda r: r["id"])


def _expected_by_sdk() -> list[dict]:
    """ALL_TYPES as the SDK's reader gives it: arrow.json values decoded to JSON values."""
    rows = ALL_TYPES.to_pylist()
    for row in rows:
        row["j"] = None if row["j"] is None else json.loads(row["j"])
    return [tagged(row) for row in rows]


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_sdk_target_reads_a_dativo_taps_arrow_batches(
    sdk_python: Path, tmp_path: Path, compression: str | None
) -> None:
    """Our files and messages are the SDK's convention: its Target builds the encoding
    from our message, finds the files from our URIs (a space in the path) and its reader
    (nanoarrow) gives every value of every mapped type; IPC buffer compression included."""
    output = _dativo_tap_output(tmp_path, compression)
    batches = [json.loads(line) for line in output.splitlines() if '"BATCH"' in line]
    want = {"format": "arrow", **({"compression": compression} if compression else {})}
    assert [b["encoding"] for b in batches] == [want, want]
    assert all(b["manifest"][0].startswith("file:///") for b in batches)
    got = _read_by_sdk_target(sdk_python, tmp_path, output)
    expected = _expected_by_sdk()
    for got_row, want_row in zip(got, expected, strict=True):
        for name, value in want_row.items():
            if name == "dec" and value is not None and value.startswith("decimal:-"):
                continue  # nanoarrow 0.9.0 misreads negative decimals: the test below
            assert got_row[name] == value, (name, got_row[name], value)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="nanoarrow 0.9.0 (singer-sdk 0.55.0b7's arrow reader) reads negative decimal128 "
    "values as about 3.4E+30: an upstream bug; docs/batch-files.md warns about it",
)
def test_sdk_target_reads_negative_decimals_of_a_dativo_tap(
    sdk_python: Path, tmp_path: Path
) -> None:
    got = _read_by_sdk_target(sdk_python, tmp_path, _dativo_tap_output(tmp_path, None))
    assert got[2]["dec"] == "decimal:-1E-8"
