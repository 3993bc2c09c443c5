"""tap-dativo-rest: the singer-sdk tap around RestReader (imported when the tap first reads:
``--about`` needs only its settings)."""

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.discovery import with_catalog
from dativo_bridge.sdk import make_tap
from tap_dativo_rest.config import CONFIG_JSONSCHEMA

TapDativoRest = with_catalog(
    make_tap(
        DeferredClass("tap_dativo_rest.reader:RestReader", "tap-dativo-rest", CONFIG_JSONSCHEMA)
    )
)

__all__ = ["TapDativoRest"]
