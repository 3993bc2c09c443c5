"""tap-dativo-rest: the singer-sdk tap around RestReader."""

from dativo_bridge import make_tap
from dativo_bridge.discovery import with_catalog
from tap_dativo_rest.reader import RestReader

TapDativoRest = with_catalog(make_tap(RestReader))

__all__ = ["TapDativoRest"]
