"""tap-dativo-csv: the singer-sdk tap around CsvReader."""

from dativo_bridge import make_tap
from dativo_bridge.discovery import with_catalog
from tap_dativo_csv.reader import CsvReader

TapDativoCsv = with_catalog(make_tap(CsvReader))

__all__ = ["TapDativoCsv"]
