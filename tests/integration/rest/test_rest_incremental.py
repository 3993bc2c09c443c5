"""Incremental reads: the bookmark goes out in bookmark_param, STATE moves at page
boundaries, and a run resumes from the last page boundary."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from tap_dativo_rest.reader import RestReader
from target_dativo_parquet.writer import ParquetWriter

from .common import SERVER, config, read_all, stream
from .server import make_order

pytestmark = pytest.mark.integration


def _incremental(dataset: str, **settings: Any) -> dict[str, Any]:
    return config(
        stream(
            "/cursor",
            params={"ds": dataset, "limit": 4},
            replication_key="updated_at",
            bookmark_param="updated_since",
            pagination={"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
        ),
        **settings,
    )


def _sent_bookmarks(dataset: str) -> list[str | None]:
    return [r.query.get("updated_since") for r in SERVER.state.log if r.query.get("ds") == dataset]


def test_second_run_sends_the_bookmark_and_gets_only_new_rows(tmp_path: Path) -> None:
    SERVER.state.set_dataset("inc-two-runs", [make_order(i) for i in range(1, 11)])
    cfg = _incremental("inc-two-runs")

    first = run(
        RestReader,
        ParquetWriter,
        source_config=cfg,
        destination_config={"path": str(tmp_path / "one")},
    )
    assert first.rows == 10
    assert first.state["bookmarks"]["orders"] == {
        "replication_key": "updated_at",
        "replication_key_value": "2024-01-01T10:00:00+00:00",
    }
    assert _sent_bookmarks("inc-two-runs") == [None, None, None]  # pages of 4, 4, 2

    SERVER.state.add_records("inc-two-runs", [make_order(i) for i in range(11, 14)])
    second = run(
        RestReader,
        ParquetWriter,
        source_config=cfg,
        destination_config={"path": str(tmp_path / "two")},
        state=first.state,
    )
    assert second.rows == 3
    assert _sent_bookmarks("inc-two-runs")[3:] == ["2024-01-01T10:00:00+00:00"]
    landed = ds.dataset(str(tmp_path / "two"), format="parquet").to_table()
    assert sorted(landed.column("id").to_pylist()) == [11, 12, 13]
    assert second.state["bookmarks"]["orders"]["replication_key_value"] == (
        "2024-01-01T13:00:00+00:00"
    )


def test_start_date_is_the_first_bookmark() -> None:
    SERVER.state.set_dataset("inc-start", [make_order(i) for i in range(1, 11)])
    result = read_all(_incremental("inc-start", start_date="2024-01-01T07:00:00Z"))
    assert result.ids() == [8, 9, 10]
    assert _sent_bookmarks("inc-start") == ["2024-01-01T07:00:00Z"]


def test_bookmark_moves_at_each_page_and_a_run_resumes_from_a_page_boundary() -> None:
    SERVER.state.set_dataset("inc-resume", [make_order(i) for i in range(1, 11)])
    cfg = _incremental("inc-resume")
    full = read_all(cfg)
    hours = [dt.datetime(2024, 1, 1, h, tzinfo=dt.UTC) for h in (4, 8, 10)]
    assert full.bookmarks["orders"] == hours  # after each page: the max updated_at so far

    # A run that died after its second page restarts from that page's bookmark (as STATE
    # said) and reads only the rest.
    resumed = read_all(cfg, bookmark="2024-01-01T08:00:00+00:00")
    assert resumed.ids() == [9, 10]
    assert _sent_bookmarks("inc-resume")[-1] == "2024-01-01T08:00:00+00:00"
