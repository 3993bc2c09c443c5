"""A PostgreSQL server for the tests: DATIVO_TEST_PG_DSN if set, else one started from
the pgserver wheel in a temporary directory (once per test session)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from typing import Any

_lock = threading.Lock()
_server: dict[str, Any] = {}


def pg_dsn() -> str:
    """The DSN of the test server, starting it on first use."""
    external = os.environ.get("DATIVO_TEST_PG_DSN")
    if external:
        return external
    with _lock:
        if "dsn" not in _server:
            import pgserver

            directory = tempfile.mkdtemp(prefix="dativo-pg-")
            server = pgserver.get_server(directory, cleanup_mode="stop")
            _server["dsn"] = server.get_uri()

            def stop() -> None:
                server.cleanup()
                shutil.rmtree(directory, ignore_errors=True)

            atexit.register(stop)
        return str(_server["dsn"])


def fresh_schema(name: str) -> str:
    """(Re)create an empty schema ``name`` and return it."""
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name
