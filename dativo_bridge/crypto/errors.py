"""Errors of the envelope format: each says what failed, never key material or plaintext."""

from __future__ import annotations

from dativo_bridge.errors import DativoError


class CryptoError(DativoError):
    """Base class of every encryption and decryption error."""


class KeyProviderError(CryptoError):
    """A key could not be loaded, generated or wrapped (key file, env var, KMS)."""


class EncryptionError(CryptoError):
    """A message could not be encrypted (e.g. the frame counter would overflow)."""


class DecryptionError(CryptoError):
    """A message was rejected; no plaintext of an unauthenticated part was released."""


class MalformedMessageError(DecryptionError):
    """The bytes are not a well-formed message of a supported version and algorithm."""


class EncryptionContextError(DecryptionError):
    """The message's encryption context is not the one the caller expected."""


class DataKeyError(DecryptionError):
    """None of the given key providers could decrypt one of the message's data keys."""


class KeyCommitmentError(DecryptionError):
    """The data key does not match the header's key commitment."""


class HeaderAuthenticationError(DecryptionError):
    """The header's authentication tag does not verify: the header was modified."""


class FrameSequenceError(DecryptionError):
    """A frame is out of order, duplicated or missing."""


class FrameAuthenticationError(DecryptionError):
    """A frame's authentication tag does not verify: the frame was modified or moved."""


class TruncatedMessageError(DecryptionError):
    """The message ends early: inside the header, inside a frame, or before the final frame."""


class TrailingDataError(DecryptionError):
    """Bytes follow the final frame."""
