"""Singer BATCH with Arrow IPC, Parquet and JSONL files: every mapped type round-trips,
STATE follows the BATCH messages it covers and resumes, files are deleted after commit."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge import ArrowReader, StreamInfo, make_tap
from target_dativo_parquet.target import TargetDativoParquet
from tests.integration.test_writer_behaviour import ALL_TYPES

from .helpers import REPO, pipe, read_parquet_dir, script, states_in


class AllTypesReader(ArrowReader):
    name = "tap-all-types"
    config_jsonschema = {"type": "object", "properties": {}}
    is_sorted = True  # rows come in id order

    def discover(self) -> Sequence[StreamInfo]:
        schema = pa.schema([f.with_nullable(f.name != "id") for f in ALL_TYPES.schema])
        return [StreamInfo("types", schema, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        batch = pa.RecordBatch.from_arrays(ALL_TYPES.columns, schema=stream.schema)
        for i in range(batch.num_rows):
            if bookmark is None or batch.column("id")[i].as_py() > bookmark:
                yield batch.slice(i, 1)


TapAllTypes = make_tap(AllTypesReader)


def _run_tap(config: dict[str, Any], state: dict | None = None) -> str:
    buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(buffer):
        tap = TapAllTypes(config=config, state=state)
        tap.sync_all()
        buffer.flush()
    buffer.seek(0)
    return buffer.read()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "jsonl"])
def test_every_type_round_trips_through_batch_files(fmt: str, tmp_path: Path) -> None:
    batch_dir = tmp_path / "batches"
    config = {
        "batch_config": {
            "encoding": {"format": fmt},
            "batch_size": 2,
            "storage": {"root": batch_dir.as_uri()},
        }
    }
    output = _run_tap(config)
    messages = [json.loads(line) for line in output.splitlines()]
    kinds = [m["type"] for m in messages]
    assert "RECORD" not in kinds and kinds.count("BATCH") == 2  # 3 rows, 2 per file
    # Each BATCH is followed by the STATE covering exactly its rows.
    after_first = messages[kinds.index("BATCH") + 1]
    assert after_first["type"] == "STATE"
    assert after_first["value"]["bookmarks"]["types"]["replication_key_value"] == 2
    assert len(list(batch_dir.iterdir())) == 2

    out = tmp_path / "out"
    target = TargetDativoParquet(config={"path": str(out)})
    target_stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(target_stdout):
        target.listen(io.StringIO(output))
    target_stdout.seek(0)
    assert states_in(target_stdout.read())[-1]["bookmarks"]["types"]["replication_key_value"] == 3
    assert list(batch_dir.iterdir()) == [], "batch files must be deleted after the commit"
    table = read_parquet_dir(out / "types").sort_by("id")
    for got_row, want_row in zip(table.to_pylist(), ALL_TYPES.to_pylist(), strict=True):
        for name, want in want_row.items():
            got = got_row[name]
            if name == "j" and fmt == "jsonl":
                got, want = (
                    None if got is None else json.loads(got),
                    None if want is None else json.loads(want),
                )
            assert _same(want, got), (fmt, name, got, want)


def test_state_resumes_in_batch_mode(tmp_path: Path) -> None:
    config = {
        "batch_config": {
            "encoding": {"format": "arrow"},
            "batch_size": 1,
            "storage": {"root": str(tmp_path / "b")},
        }
    }
    first = [json.loads(line) for line in _run_tap(config).splitlines()]
    states = [m["value"] for m in first if m["type"] == "STATE"]
    middle = next(s for s in states if s["bookmarks"]["types"].get("replication_key_value") == 2)
    second = [json.loads(line) for line in _run_tap(config, state=middle).splitlines()]
    batches = [m for m in second if m["type"] == "BATCH"]
    assert len(batches) == 1  # only the row after the bookmark
    path = Path(batches[0]["manifest"][0].removeprefix("file://"))
    assert pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("id").to_pylist() == [3]


def test_csv_tap_batch_pipe_equals_record_pipe(tmp_path: Path) -> None:
    orders = str(REPO / "demo" / "orders.csv")
    for mode, extra in (
        ("records", {}),
        (
            "batches",
            {
                "batch_config": {
                    "encoding": {"format": "parquet"},
                    "storage": {"root": str(tmp_path / "b")},
                }
            },
        ),
    ):
        (tmp_path / f"{mode}.json").write_text(
            json.dumps(
                {"files": [{"stream": "orders", "path": orders, "key_properties": ["id"]}], **extra}
            )
        )
        (tmp_path / f"{mode}-t.json").write_text(json.dumps({"path": str(tmp_path / mode)}))
        command = (
            f"{script('tap-dativo-csv')} --config {mode}.json | "
            f"{script('target-dativo-parquet')} --config {mode}-t.json"
        )
        pipe(command, tmp_path, timeout=120)
    records = read_parquet_dir(tmp_path / "records" / "orders").sort_by("id")
    batches = read_parquet_dir(tmp_path / "batches" / "orders").sort_by("id")
    assert records.equals(batches)
    assert not any((tmp_path / "b").iterdir())


def test_state_resumes_in_record_mode() -> None:
    state = {"bookmarks": {"types": {"replication_key": "id", "replication_key_value": 2}}}
    messages = [json.loads(line) for line in _run_tap({}, state=state).splitlines()]
    records = [m["record"]["id"] for m in messages if m["type"] == "RECORD"]
    assert records == [3]
    assert messages[-1]["value"]["bookmarks"]["types"]["replication_key_value"] == 3


def test_target_cli_never_deletes_a_file_it_cannot_prove_a_dativo_tap_wrote(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "x" / "app.lock"
    lock.parent.mkdir()
    lock.write_bytes(b"")
    foreign = tmp_path / "x" / "export.arrow"
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    with pa.OSFile(str(foreign), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch({"id": pa.array([1, 2], pa.int64())}, schema=schema))
    head = {
        "type": "SCHEMA",
        "stream": "s",
        "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "key_properties": ["id"],
    }
    (tmp_path / "t.json").write_text(json.dumps({"path": str(tmp_path / "out")}))
    for manifest, ok in (([foreign.as_uri(), lock.as_uri()], False), ([foreign.as_uri()], True)):
        batch = {"type": "BATCH", "stream": "s", "encoding": {"format": "arrow"}}
        lines = [head, {**batch, "manifest": manifest}, {"type": "STATE", "value": {"n": 1}}]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
        command = f"{script('target-dativo-parquet')} --config t.json < in.jsonl"
        if ok:
            pipe(command, tmp_path, timeout=120)
        else:
            with pytest.raises(AssertionError, match=r"app\.lock"):
                pipe(command, tmp_path, timeout=120)
        assert lock.exists() and foreign.exists()
    assert read_parquet_dir(tmp_path / "out" / "s").column("id").to_pylist() == [1, 2]
