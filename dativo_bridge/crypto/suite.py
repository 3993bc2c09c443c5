"""Algorithm suite 0x0001: per-message keys, key commitment, frame IVs and AADs.

Modelled on the AWS Encryption SDK's committing suite (0x0478/0x0578): the data key never
encrypts anything itself; HKDF-SHA512 derives from it, salted with the message id, one
AES-256-GCM key for the header tag and the frames, and a separate commitment value.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dativo_bridge.crypto.errors import KeyCommitmentError
from dativo_bridge.crypto.format import (
    ALG_AES256_GCM_HKDF_SHA512_COMMIT,
    COMMITMENT_LEN,
    DATA_KEY_LEN,
    IV_LEN,
    MESSAGE_ID_LEN,
)

DERIVE_LABEL = b"DTVE-DERIVEKEY"
COMMIT_LABEL = b"DTVE-COMMITKEY"
FRAME_LABEL = b"DTVE-FRAME"
FINAL_LABEL = b"DTVE-FINAL"
HEADER_IV = bytes(IV_LEN)


def _hkdf(data_key: bytes, message_id: bytes, info: bytes) -> bytes:
    if len(data_key) != DATA_KEY_LEN or len(message_id) != MESSAGE_ID_LEN:
        raise ValueError("data key and message id must be 32 bytes each")
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=message_id, info=info).derive(data_key)


def derive(data_key: bytes, message_id: bytes, algorithm: int) -> tuple[AESGCM, bytes]:
    """The message's AES-GCM key and its key commitment value.

    Args:
        data_key: The 32-byte data key.
        message_id: The message's 32-byte random id.
        algorithm: The algorithm suite id (bound into the derivation).

    Returns:
        An AESGCM instance for the header tag and frames, and the 32-byte commitment.
    """
    if algorithm != ALG_AES256_GCM_HKDF_SHA512_COMMIT:
        raise ValueError(f"unsupported algorithm id 0x{algorithm:04x}")
    info = DERIVE_LABEL + struct.pack(">H", algorithm)
    key = _hkdf(data_key, message_id, info)
    commitment = _hkdf(data_key, message_id, COMMIT_LABEL)
    assert len(commitment) == COMMITMENT_LEN
    return AESGCM(key), commitment


def check_commitment(expected: bytes, actual: bytes) -> None:
    """Compare commitments in constant time.

    Raises:
        KeyCommitmentError: They differ.
    """
    if not hmac.compare_digest(expected, actual):
        raise KeyCommitmentError(
            "key commitment mismatch: the data key does not belong to this header"
        )


def frame_iv(sequence: int) -> bytes:
    """The 12-byte IV of frame ``sequence`` (1-based; 0 is the header's)."""
    return sequence.to_bytes(IV_LEN, "big")


def frame_aad(message_id: bytes, sequence: int, length: int, final: bool) -> bytes:
    """A frame's additional authenticated data.

    Binds the message id, whether the frame is the final one, its sequence number and its
    plaintext length, so frames cannot move between messages or positions, and a regular
    frame cannot pass for the final one.
    """
    label = FINAL_LABEL if final else FRAME_LABEL
    return message_id + label + struct.pack(">IQ", sequence, length)
