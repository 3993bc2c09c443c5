"""Streaming decryption: verify the header, then release plaintext frame by frame.

Order of checks: header structure; expected encryption context; data key unwrap (the
context is bound to it); key commitment (constant time); header tag. Only then are frames
read, and each frame's plaintext is released only after its tag verified, its sequence
number was the next one and (for the final frame) nothing follows it.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dativo_bridge.crypto.errors import (
    DataKeyError,
    EncryptionContextError,
    FrameAuthenticationError,
    FrameSequenceError,
    HeaderAuthenticationError,
    MalformedMessageError,
    TrailingDataError,
    TruncatedMessageError,
)
from dativo_bridge.crypto.format import FINAL_FRAME_MARKER, TAG_LEN, Header, read_header
from dativo_bridge.crypto.keys import KeyProvider
from dativo_bridge.crypto.suite import HEADER_IV, check_commitment, derive, frame_aad, frame_iv

_U32 = struct.Struct(">I")


class BinarySource(Protocol):
    """Anything with ``read(n)`` returning bytes (b"" at the end)."""

    def read(self, n: int = -1, /) -> Any:
        """Up to ``n`` bytes."""


def _check_expected(context: Mapping[str, str], expected: Mapping[str, str]) -> None:
    for key, value in sorted(expected.items()):
        if key not in context:
            raise EncryptionContextError(
                f"encryption context mismatch: the object has no '{key}' entry"
            )
        if context[key] != value:
            raise EncryptionContextError(
                f"encryption context mismatch: '{key}' is {context[key]!r} in the object, "
                f"expected {value!r} (was the object moved or swapped?)"
            )


class Decryptor:
    """Decrypts one message from a binary stream.

    Args:
        source: The ciphertext (a file, an S3 body, ``io.BytesIO``...), read sequentially.
        providers: Key providers to try on the header's data keys, in order.
        expected_context: Entries the message's encryption context must contain with these
            values (a subset check: the message may hold more entries).
    """

    def __init__(
        self,
        source: BinarySource,
        providers: Sequence[KeyProvider],
        expected_context: Mapping[str, str] | None = None,
    ) -> None:
        self._source = source
        self._providers = list(providers)
        self._expected = dict(expected_context or {})
        self._header: Header | None = None
        self._aead: AESGCM | None = None

    def _read_exact(self, n: int, what: str) -> bytes:
        chunks = []
        remaining = n
        while remaining:
            chunk = self._source.read(remaining)
            if not chunk:
                raise TruncatedMessageError(f"message truncated inside {what}")
            chunks.append(bytes(chunk))
            remaining -= len(chunk)
        return b"".join(chunks)

    def header(self) -> Header:
        """Read and fully verify the header (once); nothing of the body is read yet.

        Raises:
            DecryptionError: The header is malformed, has another context, no provider can
                unwrap a data key, the key commitment or the header tag does not verify.
        """
        if self._header is not None:
            return self._header
        header, body, tag = read_header(self._read_exact)
        _check_expected(header.context, self._expected)
        data_key = self._unwrap(header)
        aead, commitment = derive(data_key, header.message_id, header.algorithm)
        del data_key
        check_commitment(header.commitment, commitment)
        try:
            aead.decrypt(HEADER_IV, tag, body)
        except InvalidTag:
            raise HeaderAuthenticationError(
                "header authentication failed: the header was modified"
            ) from None
        self._aead = aead
        self._header = header
        return header

    def _unwrap(self, header: Header) -> bytes:
        failures: list[str] = []
        for edk in header.data_keys:
            for provider in self._providers:
                if not provider.matches(edk):
                    continue
                try:
                    return provider.unwrap(edk, header.context)
                except DataKeyError as exc:
                    failures.append(str(exc))
        if not self._providers:
            raise DataKeyError("no key provider given to decrypt the data key")
        stored = "; ".join(f"{e.provider_id} key {e.key_id}" for e in header.data_keys)
        tried = "; ".join(p.describe() for p in self._providers)
        if failures:
            raise DataKeyError("could not decrypt the data key: " + " | ".join(failures))
        raise DataKeyError(
            f"wrong key: the object's data key is wrapped by [{stored}], "
            f"but only [{tried}] was given"
        )

    def frames(self) -> Iterator[bytes]:
        """Plaintext, one authenticated frame at a time.

        Raises:
            DecryptionError: On the first frame that is out of order, fails authentication,
                is truncated, or when the final frame is missing or followed by more bytes.
        """
        header = self.header()
        aead = self._aead
        assert aead is not None
        frame_length = header.frame_length
        expected = 1
        while True:
            try:
                first = self._read_exact(4, f"frame {expected}")
            except TruncatedMessageError:
                raise TruncatedMessageError(
                    f"message truncated: the final frame is missing after frame {expected - 1}"
                ) from None
            (field,) = _U32.unpack(first)
            final = field == FINAL_FRAME_MARKER
            if final:
                (seq,) = _U32.unpack(self._read_exact(4, f"frame {expected}"))
                (length,) = _U32.unpack(self._read_exact(4, f"frame {expected}"))
                if length > frame_length:
                    raise MalformedMessageError(
                        f"final frame {expected} claims {length} bytes, more than the "
                        f"frame length {frame_length}"
                    )
                if length == 0 and expected != 1:
                    # The writer holds the last frame of plaintext back, so only an
                    # empty plaintext ends in an empty final frame (its only frame).
                    raise MalformedMessageError(
                        f"final frame {expected} is empty: only the sole frame of an empty "
                        "plaintext may be"
                    )
            else:
                seq, length = field, frame_length
            if seq != expected:
                raise FrameSequenceError(
                    f"frame {expected}: found sequence number {seq} "
                    "(frames reordered, duplicated or dropped)"
                )
            sealed = self._read_exact(length + TAG_LEN, f"frame {expected}")
            try:
                plaintext = aead.decrypt(
                    frame_iv(seq), sealed, frame_aad(header.message_id, seq, length, final)
                )
            except InvalidTag:
                raise FrameAuthenticationError(
                    f"frame {expected} failed authentication (modified, moved or from "
                    "another object)"
                ) from None
            if final:
                if self._source.read(1):
                    raise TrailingDataError(f"data follows the final frame {expected}")
                if plaintext:
                    yield plaintext
                return
            yield plaintext
            expected += 1

    def __iter__(self) -> Iterator[bytes]:
        return self.frames()


def decrypt_stream(
    source: BinarySource | bytes,
    providers: Sequence[KeyProvider],
    expected_context: Mapping[str, str] | None = None,
) -> Iterator[bytes]:
    """Decrypt a message, yielding plaintext one authenticated frame at a time.

    Nothing is read before the first ``next``. If the message is tampered with, the
    iterator raises a DecryptionError before yielding anything of the bad frame; frames
    before it (authentic, in order) may already have been yielded, so a consumer that needs
    all-or-nothing must discard its output when iteration raises.

    Args:
        source: A binary stream with ``read(n)``, or the whole message as bytes.
        providers: Key providers to try for the data key.
        expected_context: Entries the encryption context must contain.

    Yields:
        Plaintext chunks of at most the frame length.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    return Decryptor(stream, providers, expected_context).frames()


def decrypt_bytes(
    data: bytes,
    providers: Sequence[KeyProvider],
    expected_context: Mapping[str, str] | None = None,
) -> bytes:
    """Decrypt a whole message in memory; returns the plaintext only if all of it verified."""
    return b"".join(decrypt_stream(data, providers, expected_context))
