"""tap-dativo-postgres --discover imports psycopg (it connects) but not the codecs or stream
maps, and its COPY modules do not import pyarrow.compute, which only reading needs (issue
22; the unit test of the same name checks --about)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.unit.test_startup_imports import _RUN, ENTRY_POINTS

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_startup"

#: _RUN, also printing which of our modules first imported pyarrow.compute (if any).
_RUN_TRACED = (
    """\
import sys, traceback
class _Trace:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow.compute":
            sys.meta_path.remove(self)
            ours = [f.filename for f in traceback.extract_stack()
                    if "/tap_dativo_" in f.filename or "/dativo_bridge/" in f.filename]
            sys.__stderr__.write("\\nPC_BY " + (ours[-1] if ours else "?") + "\\n")
        return None
sys.meta_path.insert(0, _Trace())
"""
    + _RUN
)


def _run(*args: str) -> tuple[set[str], str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_TRACED, *args], capture_output=True, text=True, timeout=60
    )
    marker = done.stderr.rpartition("\nMODULES ")
    assert marker[1], done.stderr
    return set(json.loads(marker[2])), done.stdout, marker[0]


def test_discover_needs_no_codecs_nor_pyarrow_compute_for_copy(tmp_path: Path) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.one (id int8 PRIMARY KEY, name text, day date)")
        conn.execute(f"INSERT INTO {SCHEMA}.one VALUES (1, 'a', '2026-01-02')")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dsn": pg_dsn(), "filter_schemas": [SCHEMA]}), encoding="utf-8")
    module, attr = ENTRY_POINTS["tap-dativo-postgres"]
    loaded, out, err = _run(module, attr, "--config", str(config), "--discover")
    assert [s["tap_stream_id"] for s in json.loads(out)["streams"]] == [f"{SCHEMA}-one"]
    assert "psycopg" in loaded
    for name in ("dativo_bridge.codecs.encode", "dativo_bridge.maps"):
        assert name not in loaded, f"tap-dativo-postgres --discover imports {name}"
    # The reader also imports its LOG_BASED change decoder (cdc.py), which may need
    # pyarrow.compute at import; the COPY path's modules, the interfaces and the SDK
    # glue must not.
    first = err.rpartition("\nPC_BY ")[2].split("\n")[0] if "\nPC_BY " in err else None
    assert first is None or first.endswith("tap_dativo_postgres/cdc.py"), (
        f"tap-dativo-postgres --discover imports pyarrow.compute from {first}"
    )
