"""target-dativo-s3: the singer-sdk target around EncryptedS3Writer, imported when the
target first writes: ``--about`` needs only its settings."""

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.sdk import make_target
from target_dativo_s3.settings import CONFIG_JSONSCHEMA

TargetDativoS3 = make_target(
    DeferredClass(
        "target_dativo_s3.writer:EncryptedS3Writer", "target-dativo-s3", CONFIG_JSONSCHEMA
    )
)

__all__ = ["TargetDativoS3"]
