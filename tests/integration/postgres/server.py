"""A PostgreSQL server for the tests: DATIVO_TEST_PG_DSN if set, else one started from
the pgserver wheel in a temporary directory (once per test session), with
``wal_level = logical`` so that log-based (CDC) tests can create replication slots."""

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
            import psycopg
            from pgserver._commands import pg_ctl

            directory = tempfile.mkdtemp(prefix="dativo-pg-")
            server = pgserver.get_server(directory, cleanup_mode="stop")
            dsn = server.get_uri()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET wal_level = logical")
            # pg_ctl restart keeps the options pgserver started the server with.
            pg_ctl(
                ["-w", "restart", "-m", "fast"],
                pgdata=server.pgdata,
                user=server.system_user,
                timeout=30,
            )
            _server["dsn"] = dsn

            def stop() -> None:
                server.cleanup()
                shutil.rmtree(directory, ignore_errors=True)

            atexit.register(stop)
        return str(_server["dsn"])


def logical_decoding_missing() -> str | None:
    """Why the test server cannot run log-based (CDC) tests, or None when it can (an
    external DATIVO_TEST_PG_DSN server may not have ``wal_level = logical``)."""
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
    level = row[0] if row else "unknown"
    if level != "logical":
        return (
            f"the test server (DATIVO_TEST_PG_DSN) has wal_level = {level}; CDC tests need "
            "wal_level = logical"
        )
    return None


def fresh_schema(name: str) -> str:
    """(Re)create an empty schema ``name`` and return it."""
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name
