"""Where Parquet files go: a local directory or an S3 prefix, behind pyarrow.fs.

On S3, objects are deleted with boto3, never pyarrow: pyarrow's ``delete_file`` (and
``move``, a copy and a delete) writes a 0-byte ``<dir>/`` marker object for the parent
"directory". Nothing here creates directory markers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from dativo_bridge.errors import ConfigError, WriteError

logger = logging.getLogger("dativo.parquet")

S3_SETTINGS: dict[str, Any] = {
    "endpoint_url": {"type": "string", "description": "S3-compatible endpoint (MinIO, ...)."},
    "region": {"type": "string"},
    "aws_access_key_id": {"type": "string", "secret": True},
    "aws_secret_access_key": {"type": "string", "secret": True},
    "aws_session_token": {"type": "string", "secret": True},
    "aws_profile": {"type": "string", "description": "Named profile for credentials."},
}


def s3_filesystem(config: Mapping[str, Any]) -> pafs.S3FileSystem:
    """An S3 filesystem from the settings; credentials explicit, from a profile, or from
    the environment's default chain (never logged)."""
    options: dict[str, Any] = {}
    endpoint = config.get("endpoint_url")
    if endpoint:
        parsed = urlparse(str(endpoint))
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    if config.get("region"):
        options["region"] = str(config["region"])
    key, secret, token = (
        config.get("aws_access_key_id"),
        config.get("aws_secret_access_key"),
        config.get("aws_session_token"),
    )
    if config.get("aws_profile") and not key:
        import boto3

        credentials = boto3.Session(profile_name=str(config["aws_profile"])).get_credentials()
        if credentials is None:
            raise ConfigError(f"AWS profile {config['aws_profile']!r} has no credentials")
        frozen = credentials.get_frozen_credentials()
        key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
    if key:
        options["access_key"] = str(key)
        options["secret_key"] = str(secret or "")
        if token:
            options["session_token"] = str(token)
    return pafs.S3FileSystem(**options)


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
        return HashingSink(self.fs.open_output_stream(path))

    def publish(self, temp: str, final: str) -> None:
        """Make a finished file visible under its final name (rename; copy on S3)."""
        if self.local:
            with open(temp, "rb") as fh:
                os.fsync(fh.fileno())
            self.fs.move(temp, final)
            return
        self.fs.copy_file(temp, final)
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
            raise WriteError(f"could not delete s3://{path}: {_s3_error(exc)}") from exc

    def s3_client(self) -> Any:
        """A boto3 client with the same settings as the pyarrow filesystem."""
        if self._client is None:
            from dativo_bridge.crypto.aws import s3_client

            self._client = s3_client(self._config)
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
                "could not clean unfinished uploads under s3://%s: %s", prefix, _s3_error(exc)
            )
        return aborted

    def uri(self, path: str) -> str:
        """The user-facing location of ``path``."""
        return path if self.local else f"s3://{path}"


def _s3_error(exc: Exception) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code or type(exc).__name__)


class HashingSink:
    """A file-like wrapper computing the sha256 and size of everything written."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False
