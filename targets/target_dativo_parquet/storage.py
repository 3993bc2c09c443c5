"""Where Parquet files go: a local directory or an S3 prefix, behind pyarrow.fs.

On S3, objects are deleted with boto3, never pyarrow: pyarrow's ``delete_file`` (and
``move``, a copy and a delete) writes a 0-byte ``<dir>/`` marker object for the parent
"directory". Nothing here creates directory markers.

Every S3 request, through boto3 or pyarrow, is bounded by ``connect_timeout``,
``read_timeout`` and ``max_attempts`` (:class:`S3Timeouts`); a failure names the endpoint,
the operation and those bounds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
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
    "connect_timeout": {
        "type": "number",
        "default": 10,
        "description": "Seconds to wait for a connection to S3 (and KMS).",
    },
    "read_timeout": {
        "type": "number",
        "default": 60,
        "description": "Seconds to wait for S3 (and KMS) to answer; then the attempt fails.",
    },
    "max_attempts": {
        "type": "integer",
        "default": 3,
        "description": "Attempts per S3 (and KMS) request, the first included.",
    },
}


@dataclass(frozen=True)
class S3Timeouts:
    """The bounds of every S3 request: a request gives up after ``attempts`` attempts of at
    most ``connect`` seconds to connect and ``read`` seconds without an answer each."""

    connect: float = 10.0
    read: float = 60.0
    attempts: int = 3

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> S3Timeouts:
        """The bounds from the settings (defaults where unset).

        Raises:
            ConfigError: A timeout is not a positive number or attempts not at least 1.
        """
        values: dict[str, Any] = {}
        for setting, name in (("connect_timeout", "connect"), ("read_timeout", "read")):
            raw = config.get(setting)
            if raw is None:
                continue
            try:
                values[name] = float(raw)
            except (TypeError, ValueError):
                values[name] = -1.0
            if not values[name] > 0:
                raise ConfigError(f"{setting} must be a positive number of seconds, not {raw!r}")
        raw = config.get("max_attempts")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise ConfigError(f"max_attempts must be an integer of at least 1, not {raw!r}")
            values["attempts"] = raw
        return cls(**values)

    def botocore(self) -> Any:
        """The botocore client config with these bounds (standard retry mode)."""
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect,
            read_timeout=self.read,
            retries={"total_max_attempts": self.attempts, "mode": "standard"},
        )

    def describe(self) -> str:
        """``connect_timeout 10s, read_timeout 60s, 3 attempts``."""
        plural = "" if self.attempts == 1 else "s"
        return (
            f"connect_timeout {self.connect:g}s, read_timeout {self.read:g}s, "
            f"{self.attempts} attempt{plural}"
        )


def s3_session(config: Mapping[str, Any]) -> Any:
    """A boto3 session whose clients (S3, KMS) are bounded by :class:`S3Timeouts`."""
    from dativo_bridge.crypto.aws import aws_session

    session = aws_session(config)
    # boto3 has no public setter; every client of the session takes this default config.
    session._session.set_default_client_config(S3Timeouts.from_config(config).botocore())
    return session


def describe_s3_error(exc: BaseException, client: Any, operation: str) -> str:
    """One line for a failed boto3 call: the operation, the endpoint and the cause, with the
    timeouts when the endpoint did not answer in time."""
    import botocore.exceptions as bce

    meta = getattr(client, "meta", None)
    endpoint = getattr(meta, "endpoint_url", None) or "S3"
    config = getattr(meta, "config", None)
    timeouts = S3Timeouts(
        getattr(config, "connect_timeout", None) or S3Timeouts.connect,
        getattr(config, "read_timeout", None) or S3Timeouts.read,
        int((getattr(config, "retries", None) or {}).get("total_max_attempts") or 1),
    )
    name = _operation_name(operation)
    if isinstance(exc, bce.ConnectTimeoutError):
        cause = f"could not connect within the timeouts ({timeouts.describe()})"
    elif isinstance(exc, bce.ReadTimeoutError):
        cause = f"no answer within the timeouts ({timeouts.describe()})"
    elif isinstance(exc, bce.EndpointConnectionError | bce.ConnectionClosedError):
        cause = f"connection failed ({timeouts.describe()}): {exc}"
    else:
        response = getattr(exc, "response", None)
        code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
        cause = str(code) if code else f"{type(exc).__name__}: {exc}"
    return f"S3 {name} at {endpoint} failed: {cause}"


def _operation_name(operation: str) -> str:
    """``upload_part`` -> ``UploadPart`` (the name S3's documentation uses)."""
    return "".join(part.capitalize() for part in operation.split("_"))


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
    timeouts = S3Timeouts.from_config(config)
    # request_timeout is curl's low-speed limit on Linux: no byte for that long fails.
    options["connect_timeout"] = timeouts.connect
    options["request_timeout"] = timeouts.read
    options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=timeouts.attempts)
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
            from dativo_bridge.crypto.aws import s3_client

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


class HashingSink:
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

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False
