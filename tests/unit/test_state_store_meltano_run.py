"""The runner's run marker kept in Meltano's stores: a run that stops midway saves which
streams it finished, and the rerun does not read them again; once another run has changed
the state (a `meltano run` whose tap echoed the marker), the marker no longer counts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from dativo_bridge import ArrowReader, StreamInfo, run
from dativo_bridge.errors import DativoError
from dativo_bridge.meltano_state import FileStateStore, MeltanoStateStore, SystemDbStateStore
from dativo_bridge.state import RUN_KEY
from target_dativo_parquet.writer import ParquetWriter

from .test_state_store_meltano import STATE_TABLE

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])
SID = "test:tap-two-to-target-dativo-parquet"


class _Stop(DativoError):
    pass


class TwoStreams(ArrowReader):
    """FULL_TABLE `whole` (ids 1-300), then INCREMENTAL `growing` (ids 1-500, batches of
    100) that stops after `stop_after` batches."""

    name = "tap-two"
    is_sorted = True
    stop_after: ClassVar[int | None] = None

    def discover(self) -> Sequence[StreamInfo]:
        return [
            StreamInfo("whole", SCHEMA, ("id",)),
            StreamInfo("growing", SCHEMA, ("id",), "id", "INCREMENTAL"),
        ]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        if stream.name == "whole":
            yield pa.record_batch([pa.array(range(1, 301), pa.int64())], schema=SCHEMA)
            return
        start = int(bookmark) if bookmark is not None else 1
        for n, lo in enumerate(range(start, 501, 100)):
            if self.stop_after is not None and n == self.stop_after:
                raise _Stop("the source went away")
            ids = pa.array(range(lo, min(lo + 100, 501)), pa.int64())
            yield pa.record_batch([ids], schema=SCHEMA)


def _ids(folder: Path) -> list[int]:
    files = [str(p) for p in folder.rglob("*.parquet") if not p.name.startswith(".")]
    return sorted(ds.dataset(files).to_table().column("id").to_pylist()) if files else []


def _file_store(root: Path) -> MeltanoStateStore:
    return FileStateStore(root / "state")


def _db_store(root: Path) -> MeltanoStateStore:
    with sqlite3.connect(root / "meltano.db") as conn:
        conn.execute(STATE_TABLE)
    return SystemDbStateStore(root / "meltano.db")


def _meltano_stores(store: MeltanoStateStore, value: dict[str, Any]) -> None:
    """What `meltano run` stores for a STATE its target printed: a new completed state."""
    completed = json.dumps({"singer_state": value})
    if isinstance(store, FileStateStore):
        path = Path(store.key(SID, "state.json"))
        path.write_text(json.dumps({"completed": {"singer_state": value}, "partial": {}}))
    else:
        assert isinstance(store, SystemDbStateStore)
        with sqlite3.connect(store.database) as conn:
            conn.execute("UPDATE state SET completed_state = ?, partial_state = '{}'", (completed,))


@pytest.mark.parametrize("make_store", [_file_store, _db_store], ids=["file", "systemdb"])
def test_run_marker_in_meltanos_store(
    make_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path)
    out = tmp_path / "out"
    common: dict[str, Any] = {
        "state_store": store,
        "state_id": SID,
        "destination_config": {"path": str(out)},
        "checkpoint_rows": 1,
    }
    monkeypatch.setattr(TwoStreams, "stop_after", 2)
    with pytest.raises(_Stop):
        run(TwoStreams, ParquetWriter, **common)
    saved = store.get(SID)
    assert saved is not None and saved[RUN_KEY]["completed"] == ["whole"]

    monkeypatch.setattr(TwoStreams, "stop_after", None)
    resumed = run(TwoStreams, ParquetWriter, **common)
    assert "whole" not in resumed.streams or resumed.streams["whole"].rows == 0
    assert _ids(out / "whole") == list(range(1, 301)), "read a finished stream again"
    assert set(_ids(out / "growing")) == set(range(1, 501))
    assert RUN_KEY not in (store.get(SID) or {})

    # Stopped again; then a `meltano run` whose tap echoes its input state (marker
    # included) stores newer bookmarks. The next dativo run is a new run: `whole` is read.
    monkeypatch.setattr(TwoStreams, "stop_after", 0)
    with pytest.raises(_Stop):
        run(TwoStreams, ParquetWriter, **common)
    marked = store.get(SID)
    assert marked is not None and marked[RUN_KEY]["completed"] == ["whole"]
    echoed = {**marked, "bookmarks": {"growing": {"replication_key_value": 500}}}
    _meltano_stores(store, echoed)
    monkeypatch.setattr(TwoStreams, "stop_after", None)
    after = run(TwoStreams, ParquetWriter, **common)
    assert after.streams["whole"].rows == 300
