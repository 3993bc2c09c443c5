"""Streaming encryption: a writable file object that emits header and frames to a sink."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from dativo_bridge.crypto.errors import EncryptionError, KeyProviderError
from dativo_bridge.crypto.format import (
    ALG_AES256_GCM_HKDF_SHA512_COMMIT,
    DEFAULT_FRAME_LENGTH,
    FINAL_FRAME_MARKER,
    MAX_DATA_KEYS,
    MAX_FRAME_LENGTH,
    MAX_HEADER_BYTES,
    MAX_SEQUENCE,
    MESSAGE_ID_LEN,
    TAG_LEN,
    Header,
)
from dativo_bridge.crypto.keys import KeyProvider
from dativo_bridge.crypto.suite import HEADER_IV, derive, frame_aad, frame_iv
from dativo_bridge.fileio import WriteOnlyStream

_U32 = struct.Struct(">I")


class BinarySink(Protocol):
    """Anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> Any:
        """Accept bytes."""


def check_context(context: Mapping[str, str]) -> dict[str, str]:
    """The context as a plain dict of strings (raises ValueError otherwise)."""
    out: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValueError("encryption context keys and values must be strings (keys non-empty)")
        out[key] = value
    return out


class Encryptor(WriteOnlyStream):
    """Encrypts everything written to it into one message, written to ``sink`` as it goes.

    The header is written on creation; a regular frame is written as soon as more than one
    frame of plaintext is buffered (the last frame is held back until ``close`` so it can be
    marked final). Memory: one frame plus the chunk being written.

    Args:
        sink: Receives the ciphertext (header, then frames).
        providers: The keyring; the first generates the data key, the others wrap it too.
        context: The encryption context (authenticated, stored in clear in the header).
        frame_length: Plaintext bytes per frame.
        _random: The source of the message id, ``os.urandom``. Tests only: the test
            vectors of docs/encryption-format.md inject fixed bytes here.

    Raises:
        EncryptionError: The header would be longer than MAX_HEADER_BYTES (its tag
            included); nothing is written then.
    """

    def __init__(
        self,
        sink: BinarySink,
        providers: Sequence[KeyProvider],
        context: Mapping[str, str],
        frame_length: int = DEFAULT_FRAME_LENGTH,
        *,
        _random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not providers:
            raise KeyProviderError("encryption needs at least one key provider")
        if len(providers) > MAX_DATA_KEYS:
            raise KeyProviderError(f"at most {MAX_DATA_KEYS} key providers")
        if not 1 <= frame_length <= MAX_FRAME_LENGTH:
            raise ValueError(f"frame length must be 1..{MAX_FRAME_LENGTH} bytes")
        self._sink = sink
        self._frame_length = frame_length
        context = check_context(context)
        data_key, first = providers[0].generate(context)
        edks = [first] + [p.wrap(data_key, context) for p in providers[1:]]
        self._message_id = bytes(_random(MESSAGE_ID_LEN))
        if len(self._message_id) != MESSAGE_ID_LEN:
            raise EncryptionError("the random source returned a message id of the wrong size")
        self._aead, commitment = derive(
            data_key, self._message_id, ALG_AES256_GCM_HKDF_SHA512_COMMIT
        )
        del data_key  # only the derived key is kept (Python cannot wipe memory)
        self.header = Header(
            ALG_AES256_GCM_HKDF_SHA512_COMMIT,
            self._message_id,
            context,
            tuple(edks),
            frame_length,
            commitment,
        )
        body = self.header.body()
        if len(body) + TAG_LEN > MAX_HEADER_BYTES:
            raise EncryptionError(
                f"the message header would be {len(body) + TAG_LEN} bytes, more than "
                f"{MAX_HEADER_BYTES} (readers refuse it): fewer key providers or a smaller "
                "encryption context"
            )
        tag = self._aead.encrypt(HEADER_IV, b"", body)
        assert len(tag) == TAG_LEN
        self._pending = bytearray()
        self._closed = False
        self._abandoned = False
        self._sequence = 0
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0
        self._emit(body + tag)

    def _emit(self, data: bytes) -> None:
        self._sink.write(data)
        self.ciphertext_bytes += len(data)

    def _frame(self, plaintext: bytes | memoryview, final: bool) -> None:
        self._sequence += 1
        if self._sequence > MAX_SEQUENCE:
            raise EncryptionError("message has too many frames: use a larger frame length")
        seq = self._sequence
        sealed = self._aead.encrypt(
            frame_iv(seq), plaintext, frame_aad(self._message_id, seq, len(plaintext), final)
        )
        if final:
            head = _U32.pack(FINAL_FRAME_MARKER) + _U32.pack(seq) + _U32.pack(len(plaintext))
        else:
            head = _U32.pack(seq)
        self._emit(head + sealed)

    @property
    def closed(self) -> bool:
        """Whether the message is finished (or abandoned)."""
        return self._closed

    def flush(self) -> None:
        """Nothing to do: complete frames are already in the sink."""

    def write(self, data: Any) -> int:
        """Encrypt ``data`` (bytes-like); frames are written to the sink once complete."""
        if self._abandoned:
            return memoryview(data).nbytes  # discarded: lets a Parquet writer close cleanly
        if self._closed:
            raise ValueError("write to a closed Encryptor")
        view = memoryview(data).cast("B")
        size = len(view)
        frame = self._frame_length
        pos = 0
        while pos < size:
            if len(self._pending) == frame:
                # More plaintext follows, so the buffered frame is not the final one.
                self._frame(bytes(self._pending), final=False)
                self._pending.clear()
            if not self._pending and size - pos > frame:
                self._frame(view[pos : pos + frame], final=False)
                pos += frame
                continue
            take = min(frame - len(self._pending), size - pos)
            self._pending += view[pos : pos + take]
            pos += take
        self.plaintext_bytes += size
        return size

    def tell(self) -> int:
        """Plaintext bytes written so far."""
        return self.plaintext_bytes

    def close(self) -> None:
        """Write the final frame (idempotent). The sink is not closed."""
        if self._closed:
            return
        self._closed = True
        self._frame(bytes(self._pending), final=True)
        self._pending.clear()

    def abandon(self) -> None:
        """Drop buffered plaintext without finishing the message (it stays invalid).

        Later writes are discarded, so whatever feeds this encryptor can be closed.
        """
        self._closed = True
        self._abandoned = True
        self._pending.clear()


def encrypt_bytes(
    plaintext: bytes,
    providers: Sequence[KeyProvider],
    context: Mapping[str, str],
    frame_length: int = DEFAULT_FRAME_LENGTH,
) -> bytes:
    """Encrypt a whole plaintext in memory (for small payloads and tests).

    Args:
        plaintext: The bytes to encrypt.
        providers: The keyring (first provider generates the data key).
        context: The encryption context.
        frame_length: Plaintext bytes per frame.

    Returns:
        The complete message.
    """
    out = io.BytesIO()
    encryptor = Encryptor(out, providers, context, frame_length)
    encryptor.write(plaintext)
    encryptor.close()
    return out.getvalue()
