"""tap-dativo-csv: the singer-sdk tap around CsvReader."""

from dativo_bridge import make_tap
from tap_dativo_csv.reader import CsvReader

TapDativoCsv = make_tap(CsvReader)

__all__ = ["TapDativoCsv"]
