"""Where Parquet files go: a local directory or an S3 prefix, behind pyarrow.fs.

On S3, objects are deleted with boto3, never pyarrow: pyarrow's ``delete_file`` (and
``move``, a copy and a delete) writes a 0-byte ``<dir>/`` marker object for the parent
"directory". Nothing here creates directory markers.

Every S3 request, through boto3 or pyarrow, is bounded by ``connect_timeout``,
``read_timeout`` and ``max_attempts`` (:class:`dativo_bridge.aws.S3Timeouts`); a failure
names the endpoint, the operation and those bounds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pyarrow.fs as pafs

from dativo_bridge.aws import S3Timeouts, describe_s3_error, s3_filesystem, s3_session
from dativo_bridge.errors import ConfigError, WriteError
from dativo_bridge.fileio import WriteOnlyStream

logger = logging.getLogger("dativo.parquet")


class Storage:
    """A pyarrow filesystem and a root path inside it (``bucket/prefix`` on S3)."""

    def __init__(self, path: str, config: Mapping[str, Any]) -> None:
        self._config = config
        self._client: Any = None
        if path.startswith("s3://"):
            self.fs: pafs.FileSystem = s3_filesystem(config)
            self.root = path[len("s3://") :].rstrip("/")
            self.local = False
            self.display = path.rstrip("/")
        elif re.match(r"^[a-z][a-z0-9+.-]*://", path) and not path.startswith("file://"):
            raise ConfigError(f"unsupported path {path!r}: use a directory or s3://bucket/prefix")
        else:
            local = path[len("file://") :] if path.startswith("file://") else path
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(os.path.expanduser(local))
            self.local = True
            self.display = self.root

    def join(self, *parts: str) -> str:
        """A path under the root."""
        return "/".join([self.root, *parts])

    def makedirs(self, path: str) -> None:
        """Create a directory (no-op on S3)."""
        if self.local:
            self.fs.create_dir(path, recursive=True)

    def open_output(self, path: str) -> HashingSink:
        """A writable stream hashing what goes through it."""
        try:
            raw = self.fs.open_output_stream(path)
        except OSError as exc:
            raise self._failed("open_output_stream", path, exc) from exc
        return HashingSink(raw, None if self.local else partial(self._failed, "write", path))

    def _failed(self, operation: str, path: str, exc: BaseException) -> BaseException:
        """A pyarrow S3 failure as a WriteError naming the endpoint and the timeouts."""
        if self.local:
            return exc
        endpoint = self._config.get("endpoint_url") or "AWS S3"
        timeouts = S3Timeouts.from_config(self._config).describe()
        return WriteError(f"S3 {operation} of s3://{path} at {endpoint} failed ({timeouts}): {exc}")

    def publish(self, temp: str, final: str) -> None:
        """Make a finished file visible under its final name (rename; copy on S3)."""
        if self.local:
            with open(temp, "rb") as fh:
                os.fsync(fh.fileno())
            self.fs.move(temp, final)
            return
        try:
            self.fs.copy_file(temp, final)
        except OSError as exc:
            raise self._failed("copy_file", final, exc) from exc
        self.delete(temp)

    def delete(self, path: str) -> None:
        """Remove a file if it exists."""
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(path)
            return
        bucket, _, key = path.partition("/")
        try:
            self.s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            message = describe_s3_error(exc, self._client, "delete_object")
            raise WriteError(f"could not delete s3://{path}: {message}") from exc

    def s3_client(self) -> Any:
        """A boto3 client with the same settings as the pyarrow filesystem."""
        if self._client is None:
            from dativo_bridge.aws import s3_client

            self._client = s3_client(self._config, s3_session(self._config))
        return self._client

    def abort_uploads(self, prefix: str, abandoned: Callable[[str, dt.datetime], bool]) -> int:
        """Abort the unfinished multipart uploads under ``prefix`` (``bucket/key/``) for
        which ``abandoned(key, initiated)`` is true; returns how many were aborted."""
        bucket, _, key_prefix = prefix.partition("/")
        client = self.s3_client()
        aborted = 0
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=key_prefix
            )
            for page in pages:
                for upload in page.get("Uploads") or []:
                    key = str(upload["Key"])
                    # The prefix is checked here too: some S3 services ignore it.
                    if not key.startswith(key_prefix) or not abandoned(key, upload["Initiated"]):
                        continue
                    logger.info(
                        "aborting the unfinished upload of s3://%s/%s (its writer is gone)",
                        bucket,
                        upload["Key"],
                    )
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except Exception as exc:
            # Not fatal: the uploads are invisible; a lifecycle rule removes them too.
            logger.warning(
                "could not clean unfinished uploads under s3://%s: %s",
                prefix,
                describe_s3_error(exc, client, "list_multipart_uploads"),
            )
        return aborted

    def uri(self, path: str) -> str:
        """The user-facing location of ``path``."""
        return path if self.local else f"s3://{path}"


class HashingSink(WriteOnlyStream):
    """A file-like wrapper computing the sha256 and size of everything written.

    ``failed`` turns an OSError of the raw stream into the error to raise (on S3, one that
    names the endpoint and the timeouts).
    """

    def __init__(
        self, raw: Any, failed: Callable[[BaseException], BaseException] | None = None
    ) -> None:
        self._raw = raw
        self._failed = failed
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        try:
            self._raw.write(view)
        except OSError as exc:
            if self._failed is None:
                raise
            raise self._failed(exc) from exc
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError as exc:
            if self._failed is None:
                raise
            raise self._failed(exc) from exc

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)
