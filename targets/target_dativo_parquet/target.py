"""target-dativo-parquet: the singer-sdk target around ParquetWriter."""

from dativo_bridge import make_target
from target_dativo_parquet.writer import ParquetWriter

TargetDativoParquet = make_target(ParquetWriter)

__all__ = ["TargetDativoParquet"]
