"""AWS KMS as a key provider: GenerateDataKey / Encrypt / Decrypt with the encryption context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dativo_bridge.crypto.errors import DataKeyError, KeyProviderError
from dativo_bridge.crypto.format import DATA_KEY_LEN, EncryptedDataKey
from dativo_bridge.crypto.keys import KeyProvider

KMS_PROVIDER_ID = "aws-kms"


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


class KmsKeyProvider(KeyProvider):
    """Data keys from AWS KMS, bound to the encryption context.

    KMS authenticates the encryption context with the wrapped key: Decrypt with any other
    context fails.

    Args:
        client: A boto3 KMS client.
        key_id: The KMS key that encrypts (id, ARN or alias). Needed only to encrypt.
        allowed_key_ids: To decrypt, accept only data keys of these KMS keys (key ids or
            ARNs). Empty means discovery: the key named in the header is used, which is
            safe only when the caller's KMS permissions are the boundary.
    """

    provider_id = KMS_PROVIDER_ID

    def __init__(
        self, client: Any, key_id: str | None = None, allowed_key_ids: Sequence[str] = ()
    ) -> None:
        self._client = client
        self.key_id = key_id
        self.allowed_key_ids = tuple(allowed_key_ids)

    def _require_key(self) -> str:
        if not self.key_id:
            raise KeyProviderError("encrypting with KMS needs a KMS key id (kms_key_id)")
        return self.key_id

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, EncryptedDataKey]:
        key_id = self._require_key()
        try:
            response = self._client.generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext=dict(context)
            )
        except Exception as exc:
            raise KeyProviderError(
                f"KMS GenerateDataKey with key {key_id} failed: {_error_code(exc)}"
            ) from None
        data_key = bytes(response["Plaintext"])
        if len(data_key) != DATA_KEY_LEN:
            raise KeyProviderError("KMS returned a data key of the wrong length")
        edk = EncryptedDataKey(
            self.provider_id, str(response["KeyId"]), bytes(response["CiphertextBlob"])
        )
        return data_key, edk

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> EncryptedDataKey:
        key_id = self._require_key()
        try:
            response = self._client.encrypt(
                KeyId=key_id, Plaintext=data_key, EncryptionContext=dict(context)
            )
        except Exception as exc:
            raise KeyProviderError(
                f"KMS Encrypt with key {key_id} failed: {_error_code(exc)}"
            ) from None
        return EncryptedDataKey(
            self.provider_id, str(response["KeyId"]), bytes(response["CiphertextBlob"])
        )

    def matches(self, edk: EncryptedDataKey) -> bool:
        if edk.provider_id != self.provider_id:
            return False
        if not self.allowed_key_ids:
            return True
        return any(
            edk.key_id == allowed or edk.key_id.endswith("/" + allowed)
            for allowed in self.allowed_key_ids
        )

    def unwrap(self, edk: EncryptedDataKey, context: Mapping[str, str]) -> bytes:
        try:
            response = self._client.decrypt(
                CiphertextBlob=edk.wrapped, EncryptionContext=dict(context), KeyId=edk.key_id
            )
        except Exception as exc:
            raise DataKeyError(
                f"KMS Decrypt with key {edk.key_id} failed: {_error_code(exc)} "
                "(wrong key, modified header or different encryption context)"
            ) from None
        if str(response.get("KeyId")) != edk.key_id:
            raise DataKeyError(f"KMS decrypted the data key with another key than {edk.key_id}")
        data_key = bytes(response["Plaintext"])
        if len(data_key) != DATA_KEY_LEN:
            raise DataKeyError("KMS returned a data key of the wrong length")
        return data_key

    def describe(self) -> str:
        if self.allowed_key_ids:
            return f"{self.provider_id} keys {', '.join(self.allowed_key_ids)}"
        return f"{self.provider_id} (key id from the header)"
