"""Meltano's state stores read and written directly, without Meltano installed: the
system database's ``state`` table (SQLite) and the ``file://`` backend's folders, with
Meltano's partial-over-completed merge, its lock, and atomic writes; and how `dativo run`
chooses a store for a project."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

from dativo_bridge.errors import ConfigError
from dativo_bridge.meltano_state import (
    FileStateStore,
    MeltanoCliStateStore,
    SystemDbStateStore,
    choose_state_store,
    merged,
)
from dativo_bridge.project import Project
from dativo_bridge.state import RUN_KEY, LocalStateStore

SID = "test:tap-a-to-target-b"

#: The table as Meltano 4's migrations create it in .meltano/meltano.db.
STATE_TABLE = """
CREATE TABLE state (
    state_id VARCHAR(900) NOT NULL,
    partial_state VARCHAR,
    completed_state VARCHAR,
    updated_at DATETIME,
    PRIMARY KEY (state_id),
    UNIQUE (state_id)
)
"""


def no_meltano(_name: str) -> None:
    """A PATH without Meltano on it."""
    return None


def _db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(STATE_TABLE)
    return path


def _rows(path: Path) -> list[tuple[str, dict, dict]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT state_id, partial_state, completed_state FROM state").fetchall()
    return [(sid, json.loads(p), json.loads(c)) for sid, p, c in rows]


def _project(root: Path, extra: dict | None = None) -> Project:
    data = {
        "default_environment": "test",
        "environments": [{"name": "test"}],
        "plugins": {"extractors": [{"name": "tap-a"}], "loaders": [{"name": "target-b"}]},
        **(extra or {}),
    }
    (root / "meltano.yml").write_text(yaml.safe_dump(data))
    return Project(root / "meltano.yml")


@pytest.fixture(autouse=True)
def _no_meltano_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MELTANO_"):
            monkeypatch.delenv(name)


def test_merge_is_meltanos_partial_over_completed() -> None:
    completed = {"singer_state": {"bookmarks": {"a": {"v": 1, "k": "x"}, "b": {"v": 2}}}}
    partial = {"singer_state": {"bookmarks": {"a": {"v": 5}}, "list": [1]}}
    assert merged(completed, partial) == {
        "singer_state": {"bookmarks": {"a": {"v": 5, "k": "x"}, "b": {"v": 2}}, "list": [1]}
    }
    assert completed["singer_state"]["bookmarks"]["a"]["v"] == 1  # not modified
    assert merged(None, None) == {}


def test_systemdb_reads_what_meltano_wrote_partial_merged_over_completed(tmp_path: Path) -> None:
    db = _db(tmp_path / ".meltano" / "meltano.db")
    completed = {"singer_state": {"bookmarks": {"orders": {"replication_key_value": 10}}}}
    partial = {"singer_state": {"bookmarks": {"items": {"replication_key_value": 3}}}}
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO state VALUES (?, ?, ?, NULL)",
            (SID, json.dumps(partial), json.dumps(completed)),
        )
    store = SystemDbStateStore(db)
    assert store.get(SID) == {
        "bookmarks": {
            "orders": {"replication_key_value": 10},
            "items": {"replication_key_value": 3},
        }
    }
    assert store.get("test:other-to-target") is None


def test_systemdb_put_is_a_completed_state_and_keeps_the_run_marker(tmp_path: Path) -> None:
    db = _db(tmp_path / "meltano.db")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO state VALUES (?, ?, ?, NULL)",
            (SID, json.dumps({"singer_state": {"old": 1}}), json.dumps({"singer_state": {}})),
        )
    store = SystemDbStateStore(db)
    value = {
        "bookmarks": {"orders": {"replication_key_value": "2026-01-01T00:00:00+00:00"}},
        RUN_KEY: {"streams": ["orders", "items"], "completed": ["orders"]},
    }
    store.put(SID, value)
    # Meltano's layout: the partial state emptied, the value under singer_state.
    [(sid, partial, completed)] = _rows(db)
    assert (sid, partial, completed["singer_state"]) == (SID, {}, value)
    assert store.get(SID) == value
    store.put(SID, {"bookmarks": {"orders": {"replication_key_value": "x"}}})
    assert RUN_KEY not in (store.get(SID) or {})
    store.clear(SID)
    assert _rows(db) == []
    assert store.get(SID) is None


def test_systemdb_without_the_state_table_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "meltano.db"
    sqlite3.connect(db).close()
    with pytest.raises(Exception, match="no Meltano state table"):
        SystemDbStateStore(db).get(SID)


def test_file_backend_layout_is_meltanos(tmp_path: Path) -> None:
    root = tmp_path / "state"
    folder = root / SID
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(
        json.dumps(
            {
                "completed": {"singer_state": {"bookmarks": {"a": {"v": 1}}}},
                "partial": {"singer_state": {"bookmarks": {"a": {"v": 2}, "b": {"v": 1}}}},
            }
        )
    )
    store = FileStateStore(root)
    assert store.get(SID) == {"bookmarks": {"a": {"v": 2}, "b": {"v": 1}}}
    value = {"bookmarks": {"a": {"v": 3}}, RUN_KEY: {"streams": ["a"], "completed": []}}
    store.put(SID, value)
    on_disk = json.loads((folder / "state.json").read_text())
    assert on_disk["partial"] == {} and on_disk["completed"]["singer_state"] == value
    assert sorted(p.name for p in folder.iterdir()) == ["state.json"], "lock or temp left"
    assert store.get(SID) == value
    store.clear(SID)
    assert not folder.exists()
    assert store.get(SID) is None


def test_file_backend_waits_for_a_fresh_lock_and_takes_over_a_stale_one(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path, lock_timeout_seconds=30, lock_retry_seconds=0.05)
    lock = tmp_path / SID / "lock"
    lock.parent.mkdir()
    lock.write_text(str(time.time()))  # another writer (Meltano) holds it now

    def release() -> None:
        time.sleep(0.5)
        lock.unlink()

    releaser = threading.Thread(target=release)
    started = time.monotonic()
    releaser.start()
    store.put(SID, {"bookmarks": {"a": {"v": 1}}})
    waited = time.monotonic() - started
    releaser.join()
    assert waited >= 0.45, "wrote while another writer held the lock"
    assert store.get(SID) == {"bookmarks": {"a": {"v": 1}}}
    assert not lock.exists()

    lock.write_text(str(time.time() - 60))  # left behind by a writer that died
    writer = threading.Thread(target=store.put, args=(SID, {"bookmarks": {"a": {"v": 2}}}))
    writer.daemon = True
    writer.start()
    writer.join(timeout=5)
    assert not writer.is_alive(), "waits forever for a stale lock"
    assert store.get(SID) == {"bookmarks": {"a": {"v": 2}}}
    assert not lock.exists()


def test_file_backend_write_that_fails_midway_leaves_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStateStore(tmp_path)
    store.put(SID, {"bookmarks": {"a": {"v": 1}}})

    def crash(*_args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.put(SID, {"bookmarks": {"a": {"v": 2}}})
    monkeypatch.undo()
    assert store.get(SID) == {"bookmarks": {"a": {"v": 1}}}
    assert sorted(p.name for p in (tmp_path / SID).iterdir()) == ["state.json"]


def test_empty_state_is_not_stored_as_meltano_does(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    store.put(SID, {"bookmarks": {"a": {"v": 1}}})
    store.put(SID, {})
    assert store.get(SID) == {"bookmarks": {"a": {"v": 1}}}


def test_a_project_without_meltano_keeps_the_local_store(tmp_path: Path) -> None:
    project = _project(tmp_path)
    store = choose_state_store(project, which=no_meltano)
    assert type(store) is LocalStateStore
    assert store.location(SID).startswith(str(tmp_path / ".dativo" / "state"))


def test_a_meltano_project_uses_its_system_database(tmp_path: Path) -> None:
    db = _db(tmp_path / ".meltano" / "meltano.db")
    project = _project(tmp_path)
    store = choose_state_store(project, which=no_meltano)
    assert isinstance(store, SystemDbStateStore) and store.database == db
    assert "systemdb" in store.describe(SID) and str(db) in store.describe(SID)
    # --state-dir and --state-store local force the local store.
    assert type(choose_state_store(project, state_dir=tmp_path / "s", which=no_meltano)) is (
        LocalStateStore
    )
    assert type(choose_state_store(project, mode="local", which=no_meltano)) is LocalStateStore
    with pytest.raises(ConfigError, match="--state-dir"):
        choose_state_store(project, mode="meltano", state_dir=tmp_path / "s")


def test_meltano_on_path_is_used_for_the_system_database(tmp_path: Path) -> None:
    (tmp_path / ".meltano").mkdir()
    project = _project(tmp_path)
    store = choose_state_store(project, which=lambda name: f"/opt/bin/{name}")
    assert isinstance(store, MeltanoCliStateStore)
    assert store.executable == "/opt/bin/meltano" and store.environment == "test"


def test_state_backend_from_meltano_yml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = "file://$MELTANO_PROJECT_ROOT/.meltano/state"
    project = _project(tmp_path, {"state_backend": {"uri": uri, "lock_timeout_seconds": 3}})
    store = choose_state_store(project, which=no_meltano)
    assert isinstance(store, FileStateStore)
    assert store.state_dir == f"{tmp_path}/.meltano/state"
    assert store.lock_timeout_seconds == 3
    assert store.location(SID) == f"{tmp_path}/.meltano/state/{SID}/state.json"
    # The variable wins over meltano.yml, as in Meltano.
    monkeypatch.setenv("MELTANO_STATE_BACKEND_URI", f"file://{tmp_path}/elsewhere")
    store = choose_state_store(
        _project(tmp_path, {"state_backend": {"uri": uri}}), which=no_meltano
    )
    assert isinstance(store, FileStateStore) and store.state_dir == f"{tmp_path}/elsewhere"


def test_meltano_store_continues_from_dativos_earlier_local_state(tmp_path: Path) -> None:
    legacy = LocalStateStore(tmp_path / ".dativo" / "state")
    legacy.put(SID, {"bookmarks": {"a": {"v": 7}}})
    store = SystemDbStateStore(_db(tmp_path / "meltano.db"), legacy=legacy)
    assert store.get(SID) == {"bookmarks": {"a": {"v": 7}}}
    store.put(SID, {"bookmarks": {"a": {"v": 8}}})
    assert legacy.get(SID) is None, "the local copy would come back after `meltano state clear`"
    assert store.get(SID) == {"bookmarks": {"a": {"v": 8}}}


def test_unreachable_meltano_store_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / ".meltano").mkdir()
    project = _project(tmp_path, {"database_uri": "postgresql://u:secret@db/meltano"})
    with pytest.raises(ConfigError, match="install Meltano") as info:
        choose_state_store(project, which=no_meltano)
    assert "secret" not in str(info.value)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(ConfigError, match="does not exist"):
        choose_state_store(_project(fresh), mode="meltano", which=no_meltano)


def test_a_run_marker_echoed_into_a_later_runs_state_is_dropped(tmp_path: Path) -> None:
    """An interrupted dativo run's marker says which streams it finished; a later meltano
    run with a tap that echoes its whole input state stores it again, with new bookmarks.
    The marker must not make the next dativo run skip those streams."""
    store = FileStateStore(tmp_path)
    marker = {"streams": ["a", "b"], "completed": ["a"]}
    store.put(SID, {"bookmarks": {"a": {"v": 1}}, RUN_KEY: marker})
    assert store.get(SID) == {"bookmarks": {"a": {"v": 1}}, RUN_KEY: marker}
    # What `meltano run` stores for the STATE its target printed: a new completed state.
    echoed = {"bookmarks": {"a": {"v": 9}, "b": {"v": 4}}, RUN_KEY: marker}
    (tmp_path / SID / "state.json").write_text(
        json.dumps({"completed": {"singer_state": echoed}, "partial": {}})
    )
    assert store.get(SID) == {"bookmarks": {"a": {"v": 9}, "b": {"v": 4}}}
    # The same in the system database, with a partial state merged over the marked one.
    db = SystemDbStateStore(_db(tmp_path / "meltano.db"))
    db.put(SID, {"bookmarks": {"a": {"v": 1}}, RUN_KEY: marker})
    with sqlite3.connect(db.database) as conn:
        conn.execute(
            "UPDATE state SET partial_state = ?",
            (json.dumps({"singer_state": {"bookmarks": {"b": {"v": 2}}}}),),
        )
    assert db.get(SID) == {"bookmarks": {"a": {"v": 1}, "b": {"v": 2}}}


def test_a_state_file_meltano_is_rewriting_is_read_once_it_is_whole(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path, lock_retry_seconds=0.2)
    folder = tmp_path / SID
    folder.mkdir()
    (folder / "state.json").write_text('{"completed": {"singer_sta')  # Meltano mid-write
    (folder / "lock").write_text(str(time.time()))

    def finish() -> None:
        time.sleep(0.1)
        (folder / "state.json").write_text(
            json.dumps({"completed": {"singer_state": {"bookmarks": {}, "x": 1}}, "partial": {}})
        )
        (folder / "lock").unlink()

    writer = threading.Thread(target=finish)
    writer.start()
    assert store.get(SID) == {"bookmarks": {}, "x": 1}
    writer.join()
    (folder / "state.json").write_text("{broken")  # no writer holds the lock: an error
    with pytest.raises(Exception, match="is not JSON"):
        store.get(SID)


def test_meltano_sys_dir_root_moves_the_system_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _db(tmp_path / "meltano-sys" / "meltano.db")
    monkeypatch.setenv("MELTANO_SYS_DIR_ROOT", "meltano-sys")  # relative to the project
    store = choose_state_store(_project(tmp_path), which=no_meltano)
    assert isinstance(store, SystemDbStateStore) and store.database == db
