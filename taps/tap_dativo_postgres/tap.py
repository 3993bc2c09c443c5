"""tap-dativo-postgres: the singer-sdk tap around PostgresReader (imported, with psycopg,
when the tap first connects: ``--about`` needs only its settings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.discovery import with_catalog
from dativo_bridge.sdk import make_tap
from tap_dativo_postgres.settings import CONFIG_JSONSCHEMA

if TYPE_CHECKING:
    from dativo_bridge.discovery import SqlDetails
    from dativo_bridge.interfaces import ArrowReader, StreamInfo


def _sql_details(reader: ArrowReader, info: StreamInfo) -> SqlDetails | None:
    """tap_dativo_postgres.catalog.sql_details, imported with the reader (psycopg)."""
    from tap_dativo_postgres.catalog import sql_details

    return sql_details(reader, info)


TapDativoPostgres = with_catalog(
    make_tap(
        DeferredClass(
            "tap_dativo_postgres.reader:PostgresReader", "tap-dativo-postgres", CONFIG_JSONSCHEMA
        )
    ),
    _sql_details,
)

__all__ = ["TapDativoPostgres"]
