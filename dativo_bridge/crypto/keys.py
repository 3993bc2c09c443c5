"""Key providers: who makes, wraps and unwraps a message's data key.

A message has one random 32-byte data key. The first provider of an encryption keyring
generates it; every provider stores a wrapped copy in the header. To decrypt, the first
provider that recognizes a wrapped copy (provider id and key id) unwraps it.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import logging
import os
import shlex
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dativo_bridge.crypto.errors import DataKeyError, KeyProviderError
from dativo_bridge.crypto.format import DATA_KEY_LEN, IV_LEN, EncryptedDataKey, serialize_context

logger = logging.getLogger("dativo.crypto")

LOCAL_PROVIDER_ID = "dativo-local"
_WRAP_LABEL = b"DTVE-LOCAL-WRAP"
_FINGERPRINT_LABEL = b"DTVE-LOCAL-KEY-ID\x00"


class KeyProvider(abc.ABC):
    """Generates, wraps and unwraps data keys under one key-encryption key."""

    provider_id: str

    @abc.abstractmethod
    def generate(self, context: Mapping[str, str]) -> tuple[bytes, EncryptedDataKey]:
        """A new random data key and its wrapped copy, bound to ``context``."""

    @abc.abstractmethod
    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> EncryptedDataKey:
        """A wrapped copy of an existing data key, bound to ``context``."""

    @abc.abstractmethod
    def matches(self, edk: EncryptedDataKey) -> bool:
        """Whether this provider may try to unwrap ``edk``."""

    @abc.abstractmethod
    def unwrap(self, edk: EncryptedDataKey, context: Mapping[str, str]) -> bytes:
        """The data key in ``edk``.

        Raises:
            DataKeyError: The key is wrong, ``edk`` was modified or the context differs.
        """

    def describe(self) -> str:
        """A short, non-secret description for error messages."""
        return self.provider_id


def new_key_command(directory: Path) -> str:
    """A shell command that writes a new 32-byte key to a file that does not exist yet
    in ``directory`` (and, with noclobber, refuses to write over one that appeared)."""
    name = "dativo.key"
    n = 1
    while (directory / name).exists():
        n += 1
        name = f"dativo-{n}.key"
    path = name if directory == Path() else shlex.quote(str(directory / name))
    return f"(set -C; umask 077; head -c {DATA_KEY_LEN} /dev/urandom > {path})"


class LocalKeyProvider(KeyProvider):
    """A 32-byte key-encryption key held in this process (from a key file or env var).

    The data key is wrapped with AES-256-GCM under it: a random 12-byte IV, the encryption
    context (serialized canonically) as additional authenticated data. Its key id is a
    fingerprint (a truncated SHA-256 of a label and the key), never the key.

    Args:
        key: The 32-byte key.
        _random: The source of data keys and wrapping IVs, ``os.urandom``. Tests only:
            the test vectors of docs/encryption-format.md inject fixed bytes here.
    """

    provider_id = LOCAL_PROVIDER_ID

    def __init__(self, key: bytes, *, _random: Callable[[int], bytes] = os.urandom) -> None:
        if len(key) != DATA_KEY_LEN:
            raise KeyProviderError(
                f"a local key must be exactly {DATA_KEY_LEN} bytes, got {len(key)}"
            )
        self._aead = AESGCM(bytes(key))
        self._random = _random
        self.key_id = "sha256:" + hashlib.sha256(_FINGERPRINT_LABEL + bytes(key)).hexdigest()[:32]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Load a key file holding exactly 32 raw bytes.

        Raises:
            KeyProviderError: The file cannot be read or does not hold 32 bytes.
        """
        file = Path(path).expanduser()
        try:
            mode = file.stat().st_mode
            data = file.read_bytes()
        except OSError as exc:
            raise KeyProviderError(f"cannot read key file {file}: {exc.strerror}") from None
        if len(data) != DATA_KEY_LEN:
            raise KeyProviderError(
                f"key file {file} holds {len(data)} bytes; a local key must be exactly "
                f"{DATA_KEY_LEN} raw random bytes. To decrypt, pass the key file the data "
                "was written with; to make a new key for writing: "
                f"{new_key_command(file.parent)}"
            )
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("key file %s is readable by other users; chmod 600 it", file)
        return cls(data)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> LocalKeyProvider:
        """Load a key from an environment variable holding 32 bytes in base64.

        Raises:
            KeyProviderError: The variable is unset, not base64 or not 32 bytes.
        """
        env = os.environ if environ is None else environ
        value = env.get(name)
        if not value:
            raise KeyProviderError(f"environment variable {name} (the local key) is not set")
        try:
            data = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyProviderError(f"environment variable {name} is not valid base64") from None
        if len(data) != DATA_KEY_LEN:
            raise KeyProviderError(
                f"environment variable {name} decodes to {len(data)} bytes; a local key must "
                f"be exactly {DATA_KEY_LEN} bytes (e.g. head -c 32 /dev/urandom | base64)"
            )
        return cls(data)

    def _aad(self, context: Mapping[str, str]) -> bytes:
        return _WRAP_LABEL + self.key_id.encode() + serialize_context(context)

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, EncryptedDataKey]:
        data_key = bytes(self._random(DATA_KEY_LEN))
        if len(data_key) != DATA_KEY_LEN:
            raise KeyProviderError("the random source returned a data key of the wrong size")
        return data_key, self.wrap(data_key, context)

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> EncryptedDataKey:
        iv = bytes(self._random(IV_LEN))
        if len(iv) != IV_LEN:
            raise KeyProviderError("the random source returned an IV of the wrong size")
        wrapped = iv + self._aead.encrypt(iv, data_key, self._aad(context))
        return EncryptedDataKey(self.provider_id, self.key_id, wrapped)

    def matches(self, edk: EncryptedDataKey) -> bool:
        return edk.provider_id == self.provider_id and edk.key_id == self.key_id

    def unwrap(self, edk: EncryptedDataKey, context: Mapping[str, str]) -> bytes:
        iv, sealed = edk.wrapped[:IV_LEN], edk.wrapped[IV_LEN:]
        if len(iv) != IV_LEN:
            raise DataKeyError(f"local data key {edk.key_id}: too short")
        try:
            data_key = self._aead.decrypt(iv, sealed, self._aad(context))
        except InvalidTag:
            raise DataKeyError(
                f"local data key {edk.key_id} failed authentication "
                "(modified header or different encryption context)"
            ) from None
        if len(data_key) != DATA_KEY_LEN:
            raise DataKeyError(f"local data key {edk.key_id}: wrong length")
        return data_key

    def describe(self) -> str:
        return f"{self.provider_id} key {self.key_id}"
