"""tap-dativo-postgres: the singer-sdk tap around PostgresReader."""

from dativo_bridge import make_tap
from dativo_bridge.discovery import with_catalog
from tap_dativo_postgres.catalog import sql_details
from tap_dativo_postgres.reader import PostgresReader

TapDativoPostgres = with_catalog(make_tap(PostgresReader), sql_details)

__all__ = ["TapDativoPostgres"]
