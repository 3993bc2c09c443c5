"""singer-sdk's standard target suite on target-dativo-s3 (moto's S3, a local key file)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from singer_sdk.testing import get_target_test_class

from target_dativo_s3.target import TargetDativoS3

from ..s3server import new_bucket
from .support import aws_settings, write_key

_KEY = write_key(Path(tempfile.mkdtemp(prefix="dativo-s3-suite-")) / "suite.key")

TestTargetDativoS3 = get_target_test_class(
    TargetDativoS3,
    config={**aws_settings(), "bucket": new_bucket("dativo-suite"), "key_file": str(_KEY)},
)
