"""tap-dativo-csv: the singer-sdk tap around CsvReader."""

from dativo_bridge import make_tap
from taps.csv.reader import CsvReader

TapDativoCsv = make_tap(CsvReader)

__all__ = ["TapDativoCsv"]
