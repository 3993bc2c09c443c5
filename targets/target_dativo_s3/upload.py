"""A multipart upload as a writable sink: one part buffered, completed only on commit."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from dativo_bridge.aws import describe_s3_error
from dativo_bridge.errors import WriteError

logger = logging.getLogger("dativo.s3")

MIN_PART_SIZE = 5 * 1024 * 1024
_CHECKSUM_FIELDS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


class MultipartUpload:
    """Streams bytes to one S3 object through a multipart upload.

    Bytes are buffered until a part is full (``part_size``, at least 5 MiB), then uploaded.
    ``finish`` uploads the last part; the object becomes visible only on ``complete``.
    ``abort`` (or a failure) cancels the upload: nothing becomes visible.

    Args:
        client: A boto3 S3 client.
        bucket: The bucket.
        key: The object key.
        part_size: Bytes per part (the last may be smaller).
        metadata: User metadata for the object (must not describe the plaintext).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("S3 parts must be at least 5 MiB")
        self._client = client
        self.bucket = bucket
        self.key = key
        self._part_size = part_size
        self._metadata = dict(metadata or {})
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.max_buffered = 0
        self.state = "open"

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    def write(self, data: bytes) -> int:
        """Append ciphertext; a part is uploaded once the buffer holds ``part_size`` bytes."""
        if self.state != "open":
            raise WriteError(f"{self.uri}: write after the upload was {self.state}")
        self._buffer += data
        self.size += len(data)
        self.sha256.update(data)
        self.max_buffered = max(self.max_buffered, len(self._buffer))
        if len(self._buffer) >= self._part_size:
            self._upload_part()
        return len(data)

    def _call(self, what: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, what)(**kwargs)
        except Exception as exc:
            # The client's timeouts bound each call (dativo_bridge.aws.S3Timeouts).
            message = describe_s3_error(exc, self._client, what)
            raise WriteError(f"{self.uri}: {message}") from exc

    def _upload_part(self) -> None:
        if self._upload_id is None:
            created = self._call(
                "create_multipart_upload",
                Bucket=self.bucket,
                Key=self.key,
                ContentType="application/octet-stream",
                Metadata=self._metadata,
            )
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        response = self._call(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(self._buffer),
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        part.update({f: response[f] for f in _CHECKSUM_FIELDS if response.get(f)})
        self._parts.append(part)
        self._buffer = bytearray()

    def finish(self) -> None:
        """Upload the last part; the object is still invisible until ``complete``."""
        if self.state != "open":
            return
        if self._buffer or not self._parts:
            self._upload_part()
        self.state = "finished"

    def complete(self) -> None:
        """Make the object visible (CompleteMultipartUpload)."""
        self.finish()
        if self.state == "completed":
            return
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self.state = "completed"

    def abort(self) -> None:
        """Cancel the upload: uploaded parts are discarded, no object appears."""
        if self.state in ("completed", "aborted"):
            return
        self.state = "aborted"
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )
        except Exception:
            logger.warning(
                "could not abort the multipart upload of %s (ciphertext only; a bucket "
                "lifecycle rule AbortIncompleteMultipartUpload removes it)",
                self.uri,
            )
