"""The same CSV -> Parquet job three ways: shell pipe, `dativo run`, and the Python API."""

from __future__ import annotations

import csv
import gzip
import json
import random
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from dativo_bridge import run
from dativo_bridge.state import LocalStateStore
from tap_dativo_csv.reader import CsvReader
from target_dativo_parquet.writer import ParquetWriter

from .helpers import dativo_run, env, read_parquet_dir, script, states_in, write_project

ROWS = 30_000

DECLARED = {
    "type": "object",
    "properties": {
        "sku": {"type": "string"},
        "price": {
            "type": ["string", "null"],
            "format": "x-singer.decimal",
            "precision": 12,
            "scale": 2,
        },
        "launched": {"type": ["string", "null"], "format": "date"},
        "ratio": {"type": ["number", "null"]},
    },
}


def _make_sources(folder: Path) -> list[dict]:
    rng = random.Random(7)
    folder.mkdir()
    names = ["Ada", 'Grace "Amazing" Hopper', "Edsger, W.", "Zoë", "李", "new\nline"]
    for part in range(3):
        with open(folder / f"people-{part}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "name", "score", "active", "seen_at"])
            for i in range(part * ROWS // 3, (part + 1) * ROWS // 3):
                writer.writerow(
                    [
                        i,
                        rng.choice(names),
                        rng.uniform(-1e6, 1e6),
                        rng.choice(["true", "false"]),
                        f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T0{rng.randint(0, 9)}:00:00Z",
                    ]
                )
    with gzip.open(folder / "products.csv.gz", "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "price", "launched", "ratio"])
        for i in range(500):
            writer.writerow(
                [
                    f"sku-{i}",
                    f"{i * 3.17:.2f}" if i % 7 else "",
                    "2024-02-29",
                    "nan" if i == 3 else ("inf" if i == 4 else i / 7),
                ]
            )
    return [
        {"stream": "people", "path": str(folder / "people-*.csv"), "key_properties": ["id"]},
        {
            "stream": "products",
            "path": str(folder / "products.csv.gz"),
            "key_properties": ["sku"],
            "schema": DECLARED,
        },
    ]


def _sorted(table: pa.Table, key: str) -> list[dict]:
    return table.sort_by(key).to_pylist()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("job")
    files = _make_sources(root / "data")
    tap_config = {"files": files, "block_size_mb": 0.25}
    return {"root": root, "tap_config": tap_config}


def _pipe(job: dict, out: Path) -> str:
    (job["root"] / "tap.json").write_text(json.dumps(job["tap_config"]))
    (job["root"] / "target.json").write_text(json.dumps({"path": str(out)}))
    command = (
        f"{script('tap-dativo-csv')} --config {job['root'] / 'tap.json'} | "
        f"{script('target-dativo-parquet')} --config {job['root'] / 'target.json'}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_shell_pipe_and_dativo_run_land_the_same_rows(job: dict) -> None:
    pipe_out = job["root"] / "out-pipe"
    stdout = _pipe(job, pipe_out)
    pipe_states = states_in(stdout)
    assert pipe_states, "the target printed no STATE"

    bridge_out = job["root"] / "out-bridge"
    project = write_project(
        job["root"],
        [{"name": "tap-dativo-csv", "config": job["tap_config"]}],
        [{"name": "target-dativo-parquet", "config": {"path": str(bridge_out)}}],
    )
    state_dir = job["root"] / "state"
    done = dativo_run(
        project, "tap-dativo-csv", "target-dativo-parquet", "--state-dir", str(state_dir), "--json"
    )
    summary = json.loads(done.stdout)
    assert summary["rows"] == ROWS + 500

    for stream, key in (("people", "id"), ("products", "sku")):
        piped = read_parquet_dir(pipe_out / stream)
        bridged = read_parquet_dir(bridge_out / stream)
        assert piped.num_rows == bridged.num_rows
        # The Parquet schemas agree, types included (decimal, date, tz-aware timestamps).
        assert piped.schema.remove_metadata() == bridged.schema.remove_metadata(), stream
        assert _sorted(piped, key) == _sorted(bridged, key) or stream == "products"
    products = read_parquet_dir(bridge_out / "products")
    assert products.schema.field("price").type == pa.decimal128(12, 2)
    assert products.schema.field("launched").type == pa.date32()
    piped_products = read_parquet_dir(pipe_out / "products").sort_by("sku").to_pylist()
    bridged_products = products.sort_by("sku").to_pylist()
    for a, b in zip(piped_products, bridged_products, strict=True):
        if a["ratio"] != a["ratio"]:  # NaN survives both ways
            assert b["ratio"] != b["ratio"]
            a = {**a, "ratio": None}
            b = {**b, "ratio": None}
        assert a == b
    stored = LocalStateStore(state_dir).get("test:tap-dativo-csv-to-target-dativo-parquet")
    assert stored == pipe_states[-1] == summary["state"]


def test_python_api_matches(job: dict, tmp_path: Path) -> None:
    result = run(
        CsvReader,
        ParquetWriter,
        source_config=job["tap_config"],
        destination_config={"path": str(tmp_path / "py")},
    )
    assert result.rows == ROWS + 500
    assert read_parquet_dir(tmp_path / "py" / "people").num_rows == ROWS
    assert result.state["bookmarks"]["people"]["replication_key"] == "_sdc_modified_at"
    again = run(
        CsvReader,
        ParquetWriter,
        source_config=job["tap_config"],
        destination_config={"path": str(tmp_path / "py")},
        state=result.state,
    )
    assert again.rows == 0, "an unchanged source must not be read again"


def test_demo_command_from_readme(tmp_path: Path) -> None:
    """The README's demo job: the repository's meltano.yml, sample CSV -> Parquet (in a
    copy, so the test never writes into the user's output/)."""
    import shutil

    from .helpers import REPO

    for name in ("meltano.yml", "demo", "catalogs"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)

    done = subprocess.run(
        [
            script("dativo"),
            "run",
            "tap-dativo-csv",
            "target-dativo-parquet",
            "--full-refresh",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Data landed in:" in done.stdout
    assert read_parquet_dir(tmp_path / "output" / "parquet" / "orders").num_rows == 5
