"""tap-dativo-postgres: the singer-sdk tap around PostgresReader."""

from dativo_bridge import make_tap
from tap_dativo_postgres.reader import PostgresReader

TapDativoPostgres = make_tap(PostgresReader)

__all__ = ["TapDativoPostgres"]
