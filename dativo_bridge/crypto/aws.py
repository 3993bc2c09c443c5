"""Key providers from encryption settings: KMS (a client from :mod:`dativo_bridge.aws`,
the same credentials and timeouts as S3) and/or a local key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dativo_bridge.aws import kms_client
from dativo_bridge.crypto.keys import KeyProvider, LocalKeyProvider
from dativo_bridge.crypto.kms import KmsKeyProvider
from dativo_bridge.errors import ConfigError


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
