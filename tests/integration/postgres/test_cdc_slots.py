"""The default replication slot of a LOG_BASED pipeline: derived from the database and the
pipeline's state id, so two pipelines reading one database never confirm each other's
slot, while a pipeline that resumes on the slot of the earlier default (derived from the
tap's name only) keeps it (docs/cdc.md, 'Slots')."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.dataset as ds
import pytest

from dativo_bridge import run
from dativo_bridge.errors import ReadError
from dativo_bridge.runner import RunResult
from dativo_bridge.state import LocalStateStore
from tap_dativo_postgres import slot as pgslot
from tap_dativo_postgres.reader import PostgresReader
from target_dativo_parquet.writer import ParquetWriter

from .server import fresh_schema, logical_decoding_missing, pg_dsn

SCHEMA = "dativo_cdc_slots"
STREAM = f"{SCHEMA}-items"
LOG_BASED = {f"{SCHEMA}-*": {"replication-method": "LOG_BASED"}}
TAP = PostgresReader.name
PIPELINES = ("test:slots-a", "test:slots-b", "test:slots-c")
PINNED = "dativo_test_slots_pinned"
#: A tap's environment under ``meltano --environment dev|prod run`` (what matters here).
MELTANO = {
    env: {"MELTANO_ENVIRONMENT": env, "MELTANO_EXTRACTOR_NAME": TAP} for env in ("dev", "prod")
}


def _database(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def _ours(dsn: str) -> list[str]:
    """Every slot (and default publication) name the tests of this module may create."""
    database = _database(dsn)
    pipelines = [*PIPELINES, *(str(pgslot.pipeline_id(None, e)) for e in MELTANO.values())]
    names = [pgslot.default_slot_name(database, p) for p in pipelines]
    return [*names, pgslot.default_slot_name(database, TAP), PINNED]


def _drop(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in _ours(dsn):
            if conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]
            ).fetchone():
                conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
            conn.execute(f'DROP PUBLICATION IF EXISTS "{name}"')


def _slots(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            name
            for (name,) in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s)",
                [_ours(dsn)],
            ).fetchall()
        }


@pytest.fixture()
def items() -> Iterator[str]:
    reason = logical_decoding_missing()
    if reason:
        pytest.skip(reason)
    dsn = pg_dsn()
    _drop(dsn)
    fresh_schema(SCHEMA)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id bigint PRIMARY KEY, v int NOT NULL)")
        conn.execute(f"ALTER TABLE {SCHEMA}.items REPLICA IDENTITY FULL")
        conn.execute(f"INSERT INTO {SCHEMA}.items SELECT g, 0 FROM generate_series(1, 50) g")
    yield dsn
    _drop(dsn)


class Pipeline:
    """Runs of one pipeline (its own state id and state store) into Parquet."""

    def __init__(self, dsn: str, path: Path, state_id: str, **config: Any) -> None:
        self.path = path
        self.state_id = state_id
        self.store = LocalStateStore(path / "state")
        self.config = {
            "dsn": dsn,
            "filter_schemas": [SCHEMA],
            "accelerator": "python",
            "max_parallelism": 1,
            **config,
        }
        self.count = 0

    def run(self) -> RunResult:
        self.count += 1
        return run(
            PostgresReader,
            ParquetWriter,
            source_config=self.config,
            destination_config={"path": str(self.path / f"out{self.count}")},
            state_store=self.store,
            state_id=self.state_id,
            metadata=LOG_BASED,
        )

    def changes(self) -> Counter[tuple[int, int, bool]]:
        """(id, v, deleted) of every row every run wrote, with how many times."""
        files = [
            str(p)
            for p in self.path.rglob("*.parquet")
            if STREAM in str(p) and not p.name.startswith(".")
        ]
        rows = ds.dataset(files).to_table().to_pylist()
        return Counter((r["id"], r["v"], r["_sdc_deleted_at"] is not None) for r in rows)


def _change(dsn: str, step: int) -> set[tuple[int, int, bool]]:
    """One round of changes (an update, an insert, a delete); returns the rows they log."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.items SET v = %s WHERE id = %s", [step, step])
        conn.execute(f"INSERT INTO {SCHEMA}.items VALUES (%s, %s)", [1000 + step, step])
        conn.execute(f"DELETE FROM {SCHEMA}.items WHERE id = %s", [20 + step])
    return {(step, step, False), (1000 + step, step, False), (20 + step, 0, True)}


def test_two_pipelines_on_one_database_get_their_own_slots(items: str, tmp_path: Path) -> None:
    database = _database(items)
    a = Pipeline(items, tmp_path / "a", PIPELINES[0])
    b = Pipeline(items, tmp_path / "b", PIPELINES[1])
    a.run()
    b.run()
    slot_a, slot_b = (pgslot.default_slot_name(database, p) for p in PIPELINES[:2])
    assert slot_a != slot_b
    assert _slots(items) == {slot_a, slot_b}
    expected = Counter({(i, 0, False): 1 for i in range(1, 51)})
    # a runs far ahead of b: four rounds of changes, a run after each.
    for step in range(1, 5):
        expected.update(_change(items, step))
        a.run()
    assert a.changes() == expected
    b.run()  # one run catches up on all four rounds
    assert b.changes() == expected
    a.run()
    b.run()  # nothing new: nothing written twice
    assert a.changes() == expected
    assert b.changes() == expected


def test_a_pipeline_on_the_earlier_default_slot_keeps_it(items: str, tmp_path: Path) -> None:
    database = _database(items)
    legacy = pgslot.default_slot_name(database, TAP)
    # A pipeline as the earlier default left it: its state holds an LSN on the slot
    # derived from the tap's name.
    old = Pipeline(items, tmp_path / "old", PIPELINES[0], replication_slot=legacy)
    old.run()
    expected = Counter({(i, 0, False): 1 for i in range(1, 51)})
    expected.update(_change(items, 1))
    old.config.pop("replication_slot")  # the setting was never given: the default
    old.run()
    assert _slots(items) == {legacy}  # no fresh slot that would have skipped the WAL
    expected.update(_change(items, 2))
    old.run()
    assert old.changes() == expected
    # A new pipeline beside it gets its own slot, not the earlier default.
    with psycopg.connect(items) as conn:
        copied = conn.execute(f"SELECT id, v FROM {SCHEMA}.items").fetchall()
    new = Pipeline(items, tmp_path / "new", PIPELINES[1])
    new.run()
    assert _slots(items) == {legacy, pgslot.default_slot_name(database, PIPELINES[1])}
    expected_new = Counter({(i, v, False): 1 for i, v in copied})
    round3 = _change(items, 3)
    expected.update(round3)
    expected_new.update(round3)
    old.run()
    new.run()
    assert old.changes() == expected
    assert new.changes() == expected_new


def test_a_resumed_pipeline_whose_slot_is_missing_names_the_slots_there(
    items: str, tmp_path: Path
) -> None:
    pinned = Pipeline(items, tmp_path / "p", PIPELINES[2], replication_slot=PINNED)
    pinned.run()
    pinned.config.pop("replication_slot")
    with pytest.raises(ReadError, match="does not exist") as caught:
        pinned.run()
    message = str(caught.value)
    assert PINNED in message and "replication_slot setting" in message
    assert pgslot.default_slot_name(_database(items), PIPELINES[2]) in message


def _singer_tap(
    path: Path,
    config: dict[str, Any],
    state: dict[str, Any] | None,
    env: dict[str, str],
    streams: tuple[str, ...] = (STREAM,),
) -> tuple[int | None, str]:
    """Run the Singer tap (as Meltano would, with ``env``); returns the LSN of its last
    STATE and its log."""
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    base = [
        sys.executable,
        "-c",
        "from tap_dativo_postgres.tap import TapDativoPostgres; TapDativoPostgres.cli()",
        "--config",
        str(path / "config.json"),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELTANO_")}
    environ = {**clean, **env}
    if not (path / "catalog.json").exists():
        out = subprocess.run(
            [*base, "--discover"], capture_output=True, check=True, text=True, env=environ
        )
        catalog = json.loads(out.stdout)
        for entry in catalog["streams"]:
            entry["replication_method"] = "LOG_BASED"
            for meta in entry["metadata"]:
                if not meta["breadcrumb"]:
                    meta["metadata"]["selected"] = entry["tap_stream_id"] in streams
        (path / "catalog.json").write_text(json.dumps(catalog))
    args = [*base, "--catalog", str(path / "catalog.json")]
    if state is not None:
        (path / "state.json").write_text(json.dumps(state))
        args += ["--state", str(path / "state.json")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=environ)
    assert out.returncode == 0, out.stderr[-3000:]
    states = [
        json.loads(line)["value"]
        for line in out.stdout.splitlines()
        if line.startswith('{"type":"STATE"') or line.startswith('{"type": "STATE"')
    ]
    entry = (states[-1].get("bookmarks") or {}).get(STREAM) or {} if states else {}
    return entry.get("replication_key_value"), out.stderr


def _lsn_state(lsn: int | None) -> dict[str, Any]:
    assert lsn is not None
    return {"bookmarks": {STREAM: {"replication_key": "_sdc_lsn", "replication_key_value": lsn}}}


def test_singer_taps_under_meltano(items: str, tmp_path: Path) -> None:
    database = _database(items)
    legacy = pgslot.default_slot_name(database, TAP)
    config = {"dsn": items, "filter_schemas": [SCHEMA], "accelerator": "python"}
    # A pipeline of the earlier default (its state on the slot named after the tap)...
    old_lsn, _ = _singer_tap(tmp_path / "old", {**config, "replication_slot": legacy}, None, {})
    _change(items, 1)
    # ... resumed by Meltano in environment prod: it keeps that slot.
    prod = MELTANO["prod"]
    resumed, log = _singer_tap(tmp_path / "old", config, _lsn_state(old_lsn), prod)
    assert resumed is not None and resumed > old_lsn
    assert _slots(items) == {legacy}, log
    # A new pipeline in another environment gets a slot of its own.
    dev = MELTANO["dev"]
    _, log = _singer_tap(tmp_path / "dev", config, None, dev)
    derived = pgslot.default_slot_name(database, str(pgslot.pipeline_id(None, dev)))
    assert _slots(items) == {legacy, derived}, log
    assert derived != pgslot.default_slot_name(database, str(pgslot.pipeline_id(None, prod)))


def test_singer_tap_decides_on_the_whole_state(items: str, tmp_path: Path) -> None:
    """A table added to a Meltano pipeline of the earlier default, read before the
    pipeline's resumed table: the slot is chosen on the whole STATE the tap was given, not
    on the first stream's bookmark (which would have moved the pipeline to a fresh slot)."""
    database = _database(items)
    legacy = pgslot.default_slot_name(database, TAP)
    config = {"dsn": items, "filter_schemas": [SCHEMA], "accelerator": "python"}
    old_lsn, _ = _singer_tap(tmp_path / "p", {**config, "replication_slot": legacy}, None, {})
    with psycopg.connect(items, autocommit=True) as conn:
        # Discovered (and read) before items.
        conn.execute(f"CREATE TABLE {SCHEMA}.aa_added (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {SCHEMA}.aa_added VALUES (1)")
    _change(items, 1)
    (tmp_path / "p" / "catalog.json").unlink()  # discover the new table
    both = (f"{SCHEMA}-aa_added", STREAM)
    resumed, log = _singer_tap(tmp_path / "p", config, _lsn_state(old_lsn), MELTANO["prod"], both)
    assert log.index("aa_added") < log.index(f"{STREAM}'")
    assert resumed is not None and resumed > old_lsn
    assert _slots(items) == {legacy}, log


def test_meltano_pipelines_are_told_apart_by_environment_and_suffix() -> None:
    dev = {"MELTANO_ENVIRONMENT": "dev", "MELTANO_EXTRACTOR_NAME": "tap-dativo-postgres"}
    prod = {**dev, "MELTANO_ENVIRONMENT": "prod"}
    suffixed = {**prod, "MELTANO_RUN_STATE_ID_SUFFIX": "eu"}
    ids = {pgslot.pipeline_id(None, env) for env in (dev, prod, suffixed)}
    assert len(ids) == 3
    assert pgslot.pipeline_id(None, {**dev, "MELTANO_STATE_ID": "x"}) == "x"
    assert pgslot.pipeline_id("dev:tap-to-target", dev) == "dev:tap-to-target"
    assert pgslot.pipeline_id(None, {}) is None
