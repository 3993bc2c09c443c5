"""`meltano state` as dativo calls it, against a stand-in `meltano` executable that keeps
the state in a JSON file and logs its calls: the arguments, and that STATEs coming faster
than one Meltano start per `min_interval` are written newest-only, and never lost."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from dativo_bridge.meltano_state import MeltanoCliStateStore, StateStoreError

SID = "test:tap-a-to-target-b"

FAKE = """#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.log", "a") as log:
    log.write(json.dumps(args) + "\\n")
store = here / "state.json"
states = json.loads(store.read_text()) if store.exists() else {{}}
command = args[args.index("state") + 1]
sid = args[-1]
if command == "get":
    print(json.dumps(states.get(sid, {{}})))
elif command == "set":
    value = json.loads(pathlib.Path(args[args.index("--input-file") + 1]).read_text())
    if "fail" in json.dumps(value):
        print("backend unreachable", file=sys.stderr)
        sys.exit(1)
    states[sid] = value
    store.write_text(json.dumps(states))
elif command == "clear":
    states.pop(sid, None)
    store.write_text(json.dumps(states))
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    exe = tmp_path / "bin" / "meltano"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    return exe


def _calls(fake: Path) -> list[list[str]]:
    log = fake.parent / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _sets(fake: Path) -> list[list[str]]:
    return [c for c in _calls(fake) if "set" in c]


def _store(fake: Path, tmp_path: Path, interval: float) -> MeltanoCliStateStore:
    store = MeltanoCliStateStore(fake, tmp_path, "test", "systemdb", "sqlite:///x")
    store.min_interval = interval
    return store


def test_calls_meltano_state_in_the_project_and_environment(fake: Path, tmp_path: Path) -> None:
    store = _store(fake, tmp_path, 0)
    value = {"bookmarks": {"a": {"replication_key_value": 1}}}
    store.put(SID, value)
    assert store.get(SID) == value
    store.clear(SID)
    assert store.get(SID) is None
    calls = _calls(fake)
    assert calls[0][:5] == ["--environment", "test", "state", "set", "--force"]
    assert calls[0][5] == "--input-file" and calls[0][-1] == SID
    assert [c[3] for c in calls] == ["set", "get", "clear", "get"]


def test_states_in_quick_succession_are_written_newest_only(fake: Path, tmp_path: Path) -> None:
    store = _store(fake, tmp_path, 60)
    for n in range(1, 6):
        store.put(SID, {"bookmarks": {"a": {"v": n}}})
    assert len(_sets(fake)) == 1, "Meltano started for every STATE"
    store.flush()
    assert len(_sets(fake)) == 2
    assert store.get(SID) == {"bookmarks": {"a": {"v": 5}}}

    # A waiting state is written when the interval is over, without a flush.
    store = _store(fake, tmp_path, 0.5)
    store.put(SID, {"bookmarks": {"a": {"v": 6}}})
    store.put(SID, {"bookmarks": {"a": {"v": 7}}})
    deadline = time.monotonic() + 10
    while len(_sets(fake)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_sets(fake)) == 4
    assert json.loads((fake.parent / "state.json").read_text())[SID]["singer_state"] == {
        "bookmarks": {"a": {"v": 7}}
    }


def test_a_waiting_state_that_fails_to_save_is_an_error_at_flush(
    fake: Path, tmp_path: Path
) -> None:
    store = _store(fake, tmp_path, 60)
    store.put(SID, {"bookmarks": {"a": {"v": 1}}})
    store.put(SID, {"bookmarks": {"a": {"v": "fail"}}})
    with pytest.raises(StateStoreError, match="backend unreachable"):
        store.flush()
    with pytest.raises(StateStoreError, match="backend unreachable"):
        _store(fake, tmp_path, 0).put(SID, {"bookmarks": {"a": {"v": "fail"}}})
