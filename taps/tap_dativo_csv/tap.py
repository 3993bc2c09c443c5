"""tap-dativo-csv: the singer-sdk tap around CsvReader (imported when the tap first reads:
``--about`` needs only its settings)."""

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.discovery import with_catalog
from dativo_bridge.sdk import make_tap
from tap_dativo_csv.settings import CONFIG_JSONSCHEMA

TapDativoCsv = with_catalog(
    make_tap(DeferredClass("tap_dativo_csv.reader:CsvReader", "tap-dativo-csv", CONFIG_JSONSCHEMA))
)

__all__ = ["TapDativoCsv"]
