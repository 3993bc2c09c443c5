"""target-dativo-iceberg: the singer-sdk target around IcebergWriter, imported when the
target first writes: ``--about`` needs only its settings."""

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.sdk import make_target
from target_dativo_iceberg.settings import CONFIG_JSONSCHEMA

TargetDativoIceberg = make_target(
    DeferredClass(
        "target_dativo_iceberg.writer:IcebergWriter", "target-dativo-iceberg", CONFIG_JSONSCHEMA
    )
)

__all__ = ["TargetDativoIceberg"]
