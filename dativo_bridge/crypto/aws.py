"""boto3 clients from Dativo's S3 settings, and key providers from encryption settings.

Credentials: explicit ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``
first, else ``aws_profile``, else boto3's default chain (environment, instance role...);
never logged. The same rule as target-dativo-parquet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dativo_bridge.crypto.keys import KeyProvider, LocalKeyProvider
from dativo_bridge.crypto.kms import KmsKeyProvider
from dativo_bridge.errors import ConfigError


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


def encryption_providers(
    config: Mapping[str, Any], session: Any | None = None
) -> list[KeyProvider]:
    """The keyring to encrypt with: KMS (``kms_key_id``) and/or a local key.

    With both, KMS generates the data key and the local key wraps a second copy, so either
    can decrypt.

    Raises:
        ConfigError: No key is configured.
        KeyProviderError: The local key cannot be loaded.
    """
    providers: list[KeyProvider] = []
    if config.get("kms_key_id"):
        providers.append(KmsKeyProvider(kms_client(config, session), str(config["kms_key_id"])))
    providers.extend(local_providers(config))
    if not providers:
        raise ConfigError("no encryption key: set kms_key_id, key_file or key_env")
    return providers


def local_providers(config: Mapping[str, Any]) -> list[KeyProvider]:
    """The local key from ``key_file`` or ``key_env`` (not both)."""
    if config.get("key_file") and config.get("key_env"):
        raise ConfigError("set key_file or key_env, not both")
    if config.get("key_file"):
        return [LocalKeyProvider.from_file(str(config["key_file"]))]
    if config.get("key_env"):
        return [LocalKeyProvider.from_env(str(config["key_env"]))]
    return []


def decryption_providers(
    config: Mapping[str, Any],
    kms_key_ids: Sequence[str] = (),
    session: Any | None = None,
) -> list[KeyProvider]:
    """The keyring to decrypt with.

    A local key if ``key_file``/``key_env`` is set; KMS if ``kms_key_ids`` are given (only
    those keys are accepted) or if there is no local key (discovery: the KMS key named in
    the header is used, subject to the caller's KMS permissions).
    """
    providers = local_providers(config)
    if kms_key_ids or not providers:
        providers.append(KmsKeyProvider(kms_client(config, session), None, kms_key_ids))
    return providers
