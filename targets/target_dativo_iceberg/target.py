"""target-dativo-iceberg: the singer-sdk target around IcebergWriter."""

from dativo_bridge import make_target
from target_dativo_iceberg.writer import IcebergWriter

TargetDativoIceberg = make_target(IcebergWriter)

__all__ = ["TargetDativoIceberg"]
