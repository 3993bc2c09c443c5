"""target-dativo-s3: the singer-sdk target around EncryptedS3Writer."""

from dativo_bridge import make_target
from target_dativo_s3.writer import EncryptedS3Writer

TargetDativoS3 = make_target(EncryptedS3Writer)

__all__ = ["TargetDativoS3"]
