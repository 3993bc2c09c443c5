"""The server side of a log-based read: the checks that tell a user what is missing
(``wal_level``, the REPLICATION privilege, a publication, a replica identity), the
replication slot, and moving the slot only to LSNs the destination has made durable.

Names used in errors are the SQL a user runs; docs/cdc.md explains each setting.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from dativo_bridge.errors import ConfigError, ReadError
from tap_dativo_postgres.pgoutput import format_lsn, parse_lsn

logger = logging.getLogger("dativo.postgres")

_NAME = re.compile(r"[^a-z0-9_]+")


def default_slot_name(database: str, pipeline: str) -> str:
    """``dativo_<database>_<hash>``: one slot per database and pipeline (its state id, or
    the tap's name when no state id is known: the only default before state ids), within
    the 63 bytes PostgreSQL allows (slot names: lower-case letters, digits, underscores)."""
    digest = hashlib.sha1(f"{pipeline}\x00{database}".encode()).hexdigest()[:8]
    stem = _NAME.sub("_", database.lower()).strip("_")[:40] or "db"
    return f"dativo_{stem}_{digest}"


def pipeline_id(state_id: str | None, environ: Mapping[str, str]) -> str | None:
    """What tells this pipeline apart from others reading the same database: the state id
    ``dativo run`` gives the reader; in a tap started by Meltano, ``MELTANO_STATE_ID``
    when set, else the environment, the extractor's name and the state id suffix
    (Meltano passes its plugins neither the state id nor the loader's name; the suffix
    only as ``MELTANO_RUN_STATE_ID_SUFFIX``). None when nothing is known (a plain pipe)."""
    if state_id:
        return state_id
    if environ.get("MELTANO_STATE_ID"):
        return environ["MELTANO_STATE_ID"]
    extractor = environ.get("MELTANO_EXTRACTOR_NAME")
    if not extractor:
        return None
    parts = [
        "meltano",
        environ.get("MELTANO_ENVIRONMENT") or "",
        extractor,
        environ.get("MELTANO_RUN_STATE_ID_SUFFIX") or "",
    ]
    return ":".join(parts)


def choose_slot(
    conn: psycopg.Connection, database: str, tap_name: str, pipeline: str | None, resuming: bool
) -> str:
    """The pipeline's slot when the setting names none: the one derived from the database
    and ``pipeline``, except that a pipeline ``resuming`` from LSNs whose derived slot does
    not exist keeps the slot of the earlier default (derived from the tap's name) if that
    one exists: an existing pipeline is never moved to a fresh slot (which would have
    skipped the WAL since its state's LSN)."""
    legacy = default_slot_name(database, tap_name)
    if pipeline is None:
        return legacy
    derived = default_slot_name(database, pipeline)
    if derived == legacy:
        return derived
    exists = {
        name
        for (name,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name IN (%s, %s)",
            [derived, legacy],
        ).fetchall()
    }
    if resuming and derived not in exists and legacy in exists:
        logger.warning(
            "replication slot %s (the default before slots were derived from the state "
            "id) is kept for this pipeline, which resumes from it; set replication_slot: "
            "%s to keep it for good (docs/cdc.md, 'Slots')",
            legacy,
            legacy,
        )
        return legacy
    if legacy in exists:
        logger.info(
            "replication slot %s (the earlier default for %s) exists but this pipeline "
            "(%s) uses %s; if no other pipeline resumes from it, drop it, or it keeps WAL "
            "on the server: SELECT pg_drop_replication_slot('%s')",
            legacy,
            tap_name,
            pipeline,
            derived,
            legacy,
        )
    return derived


def dativo_slots(conn: psycopg.Connection) -> list[str]:
    """The logical slots of the current database whose names start with ``dativo_``."""
    return [
        name
        for (name,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() "
            "AND NOT temporary AND slot_name LIKE 'dativo%' ORDER BY slot_name"
        ).fetchall()
    ]


def check_server(conn: psycopg.Connection) -> None:
    """wal_level = logical and a role allowed to use replication slots.

    Raises:
        ConfigError: Either is missing, with the statement that fixes it.
    """
    row = conn.execute("SHOW wal_level").fetchone()
    level = row[0] if row else "unknown"
    if level != "logical":
        raise ConfigError(
            f"LOG_BASED replication needs wal_level = logical, but the server has {level}: "
            "run ALTER SYSTEM SET wal_level = logical (as a superuser) and restart the "
            "server (docs/cdc.md, 'Server settings')"
        )
    row = conn.execute(
        "SELECT current_user, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is None or not (row[1] or row[2]):
        user = row[0] if row else "the role"
        raise ConfigError(
            f"LOG_BASED replication needs a role with the REPLICATION attribute: run "
            f'ALTER ROLE "{user}" REPLICATION (as a superuser), or connect as a role that '
            "has it (docs/cdc.md, 'Privileges')"
        )


def check_replica_identity(
    conn: psycopg.Connection, schema: str, table: str, primary_key: Iterable[str]
) -> None:
    """A table whose changes can be mirrored exactly: REPLICA IDENTITY FULL, or DEFAULT
    with a primary key and no column that can be TOASTed (an unchanged TOASTed value is
    not in the WAL under DEFAULT, and must never become NULL).

    Raises:
        ConfigError: Otherwise, with the ALTER TABLE statement that fixes it.
    """
    row = conn.execute(
        "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        [schema, table],
    ).fetchone()
    identity = row[0] if row else "d"
    if identity == "f":
        return
    alter = f'ALTER TABLE "{schema}"."{table}" REPLICA IDENTITY FULL'
    keys = list(primary_key)
    if identity in ("n", "i") or not keys:
        what = {"n": "NOTHING", "i": "USING INDEX"}.get(identity, "DEFAULT without a primary key")
        raise ConfigError(
            f"table {schema}.{table} has REPLICA IDENTITY {what}: its updates and deletes "
            f"cannot be mirrored exactly. Run {alter} (docs/cdc.md, 'Replica identity')"
        )
    toastable = [
        name
        for (name,) in conn.execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 "
            "AND NOT a.attisdropped AND a.attlen = -1 AND a.attstorage <> 'p' "
            "ORDER BY a.attnum",
            [schema, table],
        ).fetchall()
        if name not in keys
    ]
    if toastable:
        raise ConfigError(
            f"table {schema}.{table} has REPLICA IDENTITY DEFAULT and column(s) "
            f"{', '.join(toastable)} whose values can be TOASTed: an update that leaves "
            "such a value unchanged does not carry it in the WAL, and it would be lost in "
            f"the mirror. Run {alter} (docs/cdc.md, 'Replica identity')"
        )


def ensure_publication(
    conn: psycopg.Connection, name: str, schema: str, table: str, *, ours: bool
) -> None:
    """The publication ``name`` publishes ``schema.table`` (all changes): created or
    extended when it is Dativo's default one and the role may, else a ConfigError with the
    SQL to run."""
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    row = conn.execute(
        "SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate "
        "FROM pg_publication WHERE pubname = %s",
        [name],
    ).fetchone()
    text_table = f'"{schema}"."{table}"'
    if row is None:
        if not ours:
            raise ConfigError(
                f"publication '{name}' does not exist: run CREATE PUBLICATION \"{name}\" "
                f"FOR TABLE {text_table} (docs/cdc.md, 'Publications')"
            )
        try:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(name), qualified
                )
            )
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError(
                f"cannot create publication '{name}' (the role must own {text_table}): run "
                f'CREATE PUBLICATION "{name}" FOR TABLE {text_table} as its owner, or name '
                "an existing one in the publication setting (docs/cdc.md, 'Publications')"
            ) from None
        logger.info("created publication %s for %s", name, text_table)
        return
    if not row[1]:
        raise ConfigError(
            f"publication '{name}' does not publish every kind of change: run ALTER "
            f"PUBLICATION \"{name}\" SET (publish = 'insert, update, delete, truncate')"
        )
    if row[0]:
        return
    member = conn.execute(
        "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s "
        "AND tablename = %s",
        [name, schema, table],
    ).fetchone()
    if member:
        return
    if not ours:
        raise ConfigError(
            f"publication '{name}' does not include {text_table}: run ALTER PUBLICATION "
            f"\"{name}\" ADD TABLE {text_table} (docs/cdc.md, 'Publications')"
        )
    try:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(name), qualified)
        )
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            f"cannot add {text_table} to publication '{name}': run ALTER PUBLICATION "
            f'"{name}" ADD TABLE {text_table} as the owner of both'
        ) from None
    logger.info("added %s to publication %s", text_table, name)


def slot_position(conn: psycopg.Connection, slot: str) -> int | None:
    """The slot's ``confirmed_flush_lsn`` (None when there is no such slot).

    Raises:
        ConfigError: The slot exists in another database or is not a pgoutput slot.
    """
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text, plugin, database, current_database() "
        "FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()
    if row is None:
        return None
    if row[1] != "pgoutput" or row[2] != row[3]:
        raise ConfigError(
            f"replication slot '{slot}' exists but is a {row[1]} slot of database {row[2]}: "
            "name another slot in the replication_slot setting"
        )
    return parse_lsn(row[0]) if row[0] else None


def create_slot(conn: psycopg.Connection, slot: str) -> int:
    """Create the logical slot ``slot`` (pgoutput); returns its confirmed position.

    Raises:
        ConfigError: The server refuses (no free slot, privileges), with its reason.
    """
    try:
        row = conn.execute(
            "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", [slot]
        ).fetchone()
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot create replication slot '{slot}': {str(exc).strip().splitlines()[0]} "
            "(docs/cdc.md, 'Slots')"
        ) from None
    assert row is not None
    logger.info("created replication slot %s at %s", slot, row[0])
    return parse_lsn(row[0])


def advance_slot(conn: psycopg.Connection, slot: str, lsn: int) -> int | None:
    """Move the slot forward to ``lsn`` (never back); returns its new position, or None
    when there is no such slot. Only ever called with an LSN the destination committed."""
    position = slot_position(conn, slot)
    if position is None or position >= lsn:
        return position
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [slot, format_lsn(lsn)])
    logger.info("replication slot %s confirmed up to %s", slot, format_lsn(lsn))
    return lsn


def slot_lag_bytes(conn: psycopg.Connection, slot: str) -> int | None:
    """WAL bytes the server keeps for the slot beyond its confirmed position (what a run
    summary reports as the lag), or None without the slot."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def check_not_ahead(slot: str, position: int | None, state_lsn: int, stream: str) -> None:
    """The slot must not have been confirmed past the state's LSN: the changes between
    were consumed by someone else and are gone.

    Raises:
        ReadError: It was.
    """
    if position is not None and position > state_lsn:
        raise ReadError(
            f"stream '{stream}': replication slot '{slot}' is confirmed up to "
            f"{format_lsn(position)}, past the state's LSN {format_lsn(state_lsn)}: the "
            "changes between were consumed by another reader of the slot and cannot be read "
            "again. Give each pipeline its own slot (replication_slot), then re-read the "
            "stream from a new snapshot (remove its bookmark from the state, or "
            "--full-refresh)"
        )


def replication_conninfo(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Connection keywords for a replication connection (``replication=database``)."""
    return {**kwargs, "replication": "database", "autocommit": True}


def wait_until_free(conn: psycopg.Connection, slot: str, timeout: float = 60.0) -> None:
    """Wait while another backend holds the slot (e.g. the one of a killed run, still
    finishing its decoding), up to ``timeout`` seconds.

    Raises:
        ReadError: It is still held, naming the backend's pid.
    """
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s "
            "AND active_pid IS NOT NULL AND active_pid <> pg_backend_pid()",
            [slot],
        ).fetchone()
        conn.commit()
        if row is None:
            return
        if time.monotonic() > deadline:
            raise ReadError(
                f"replication slot '{slot}' is in use by backend {row[0]} (another reader of "
                "the slot?); a slot serves one pipeline: stop the other reader, or give this "
                "pipeline its own replication_slot"
            )
        time.sleep(0.2)
