"""Client-side envelope encryption (the DTVE format) and its key providers.

Encrypt with :class:`Encryptor` (streaming) or :func:`encrypt_bytes`; decrypt with
:func:`decrypt_stream` / :func:`iter_plaintext` (streaming, frame by frame) or
:func:`read_encrypted_parquet` (Arrow batches). The format is described in
docs/encryption-format.md.
"""

from dativo_bridge.crypto.aws import decryption_providers, encryption_providers
from dativo_bridge.crypto.decrypt import Decryptor, decrypt_bytes, decrypt_stream
from dativo_bridge.crypto.encrypt import Encryptor, encrypt_bytes
from dativo_bridge.crypto.errors import (
    CryptoError,
    DataKeyError,
    DecryptionError,
    EncryptionContextError,
    EncryptionError,
    FrameAuthenticationError,
    FrameSequenceError,
    HeaderAuthenticationError,
    KeyCommitmentError,
    KeyProviderError,
    MalformedMessageError,
    TrailingDataError,
    TruncatedMessageError,
)
from dativo_bridge.crypto.format import DEFAULT_FRAME_LENGTH, EncryptedDataKey, Header
from dativo_bridge.crypto.keys import KeyProvider, LocalKeyProvider
from dativo_bridge.crypto.kms import KmsKeyProvider
from dativo_bridge.crypto.reading import (
    iter_plaintext,
    open_encrypted_parquet,
    read_encrypted_parquet,
    read_encrypted_table,
)

__all__ = [
    "DEFAULT_FRAME_LENGTH",
    "CryptoError",
    "DataKeyError",
    "DecryptionError",
    "Decryptor",
    "EncryptedDataKey",
    "EncryptionContextError",
    "EncryptionError",
    "Encryptor",
    "FrameAuthenticationError",
    "FrameSequenceError",
    "Header",
    "HeaderAuthenticationError",
    "KeyCommitmentError",
    "KeyProvider",
    "KeyProviderError",
    "KmsKeyProvider",
    "LocalKeyProvider",
    "MalformedMessageError",
    "TrailingDataError",
    "TruncatedMessageError",
    "decrypt_bytes",
    "decrypt_stream",
    "decryption_providers",
    "encrypt_bytes",
    "encryption_providers",
    "iter_plaintext",
    "open_encrypted_parquet",
    "read_encrypted_parquet",
    "read_encrypted_table",
]
