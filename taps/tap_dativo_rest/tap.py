"""tap-dativo-rest: the singer-sdk tap around RestReader."""

from dativo_bridge import make_tap
from tap_dativo_rest.reader import RestReader

TapDativoRest = make_tap(RestReader)

__all__ = ["TapDativoRest"]
