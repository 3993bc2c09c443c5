"""target-dativo-parquet: the singer-sdk target around ParquetWriter, imported when the
target first writes: ``--about`` needs only its settings."""

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.sdk import make_target
from target_dativo_parquet.settings import CONFIG_JSONSCHEMA

TargetDativoParquet = make_target(
    DeferredClass(
        "target_dativo_parquet.writer:ParquetWriter", "target-dativo-parquet", CONFIG_JSONSCHEMA
    )
)

__all__ = ["TargetDativoParquet"]
