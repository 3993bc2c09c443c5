"""tap-dativo-postgres --discover imports psycopg (it connects) but not pyarrow.compute,
the codecs or stream maps, which only reading needs (issue 22; the unit test of the same
name checks --about)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.unit.test_startup_imports import _RUN, ENTRY_POINTS, _loaded

from .server import fresh_schema, pg_dsn

SCHEMA = "dativo_startup"


def test_discover_needs_no_pyarrow_compute(tmp_path: Path) -> None:
    fresh_schema(SCHEMA)
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.one (id int8 PRIMARY KEY, name text, day date)")
        conn.execute(f"INSERT INTO {SCHEMA}.one VALUES (1, 'a', '2026-01-02')")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dsn": pg_dsn(), "filter_schemas": [SCHEMA]}), encoding="utf-8")
    module, attr = ENTRY_POINTS["tap-dativo-postgres"]
    loaded, out = _loaded(_RUN, module, attr, "--config", str(config), "--discover")
    assert [s["tap_stream_id"] for s in json.loads(out)["streams"]] == [f"{SCHEMA}-one"]
    assert "psycopg" in loaded
    for name in ("pyarrow.compute", "dativo_bridge.codecs.encode", "dativo_bridge.maps"):
        assert name not in loaded, f"tap-dativo-postgres --discover imports {name}"
