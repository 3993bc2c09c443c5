"""AWS for every S3 user (the Parquet and encrypted-S3 targets, the decrypt CLI): the S3
settings, boto3 sessions and clients, pyarrow's S3 filesystem, and errors that say which
request failed.

Credentials: explicit ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``
first, else ``aws_profile``, else boto3's default chain (environment, instance role...);
never logged. Every S3 (and KMS) request, through boto3 or pyarrow, is bounded by
``connect_timeout``, ``read_timeout`` and ``max_attempts`` (:class:`S3Timeouts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from dativo_bridge.errors import ConfigError

if TYPE_CHECKING:  # S3_SETTINGS is read by --about, which must not import pyarrow
    import pyarrow.fs as pafs

S3_SETTINGS: dict[str, Any] = {
    "endpoint_url": {"type": "string", "description": "S3-compatible endpoint (MinIO, ...)."},
    "region": {"type": "string", "description": "AWS region (else the environment's)."},
    "aws_access_key_id": {
        "type": "string",
        "secret": True,
        "description": "Access key id (else the AWS credential chain).",
    },
    "aws_secret_access_key": {
        "type": "string",
        "secret": True,
        "description": "Secret access key, with aws_access_key_id.",
    },
    "aws_session_token": {
        "type": "string",
        "secret": True,
        "description": "Session token of temporary credentials.",
    },
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
    import pyarrow.fs as pafs

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


def aws_session(config: Mapping[str, Any]) -> Any:
    """A boto3 session from the settings (region, explicit keys or a profile)."""
    import boto3

    options: dict[str, Any] = {}
    if config.get("region"):
        options["region_name"] = str(config["region"])
    if config.get("aws_access_key_id"):
        options["aws_access_key_id"] = str(config["aws_access_key_id"])
        options["aws_secret_access_key"] = str(config.get("aws_secret_access_key") or "")
        if config.get("aws_session_token"):
            options["aws_session_token"] = str(config["aws_session_token"])
    elif config.get("aws_profile"):
        options["profile_name"] = str(config["aws_profile"])
    try:
        return boto3.session.Session(**options)
    except Exception as exc:  # botocore ProfileNotFound and friends
        raise ConfigError(f"AWS session: {type(exc).__name__}: {exc}") from None


def s3_client(config: Mapping[str, Any], session: Any | None = None) -> Any:
    """An S3 client; ``endpoint_url`` selects an S3-compatible service."""
    return _client("s3", config.get("endpoint_url"), config, session)


def kms_client(config: Mapping[str, Any], session: Any | None = None) -> Any:
    """A KMS client; ``kms_endpoint_url`` selects a non-default endpoint."""
    return _client("kms", config.get("kms_endpoint_url"), config, session)


def _client(service: str, endpoint: Any, config: Mapping[str, Any], session: Any | None) -> Any:
    session = session or aws_session(config)
    try:
        return session.client(service, endpoint_url=str(endpoint) if endpoint else None)
    except Exception as exc:  # NoRegionError, invalid endpoint...
        raise ConfigError(f"AWS {service} client: {exc}") from None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key).

    Raises:
        ConfigError: Not an s3:// URI with a bucket and a key.
    """
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigError(f"an S3 URI needs a bucket and a key: {uri!r}")
    return bucket, key
