"""`dativo run --full-refresh` replaces what the destination holds for each stream instead
of adding a second copy (Parquet and Iceberg), and the state starts over."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from target_dativo_iceberg.writer import open_catalog

from .helpers import REPO, dativo_run, read_parquet_dir, write_project


@pytest.mark.parametrize("target", ["target-dativo-parquet", "target-dativo-iceberg"])
def test_full_refresh_replaces_instead_of_duplicating(target: str, tmp_path: Path) -> None:
    shutil.copy(REPO / "demo" / "orders.csv", tmp_path / "orders.csv")
    config = (
        {"path": str(tmp_path / "out")}
        if target == "target-dativo-parquet"
        else {"warehouse": str(tmp_path / "wh")}
    )
    project = write_project(
        tmp_path,
        [
            {
                "name": "tap-dativo-csv",
                "config": {
                    "files": [{"stream": "orders", "path": "orders.csv", "key_properties": ["id"]}]
                },
            }
        ],
        [{"name": target, "config": config}],
    )

    def rows() -> list[int]:
        if target == "target-dativo-parquet":
            return sorted(read_parquet_dir(tmp_path / "out" / "orders").column("id").to_pylist())
        table = open_catalog(config).load_table("singer.orders")
        return sorted(table.scan().to_arrow().column("id").to_pylist())

    state = ["--state-dir", str(tmp_path / "state")]
    dativo_run(project, "tap-dativo-csv", target, *state)
    first = rows()
    assert len(first) == 5
    dativo_run(project, "tap-dativo-csv", target, *state)  # incremental: nothing new
    assert rows() == first
    for _ in range(2):
        dativo_run(project, "tap-dativo-csv", target, *state, "--full-refresh")
        assert rows() == first, "a full refresh added a second copy"
