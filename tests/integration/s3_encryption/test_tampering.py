"""Every way to tamper with a message is rejected with a clear error, and no plaintext of an
unauthenticated part is ever released. Real AES-GCM / HKDF and moto's KMS; nothing mocked.

The message: 3 regular 64-byte frames and a final frame of 10 bytes, so every region of
the format is small enough to flip exhaustively."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from dativo_bridge.crypto import (
    DataKeyError,
    DecryptionError,
    EncryptionContextError,
    FrameAuthenticationError,
    FrameSequenceError,
    HeaderAuthenticationError,
    KeyCommitmentError,
    KeyProvider,
    KmsKeyProvider,
    LocalKeyProvider,
    MalformedMessageError,
    TrailingDataError,
    TruncatedMessageError,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
)
from dativo_bridge.crypto.format import Header, serialize_header
from dativo_bridge.crypto.suite import derive

from .layout import Layout, collect, parse, region_of

FRAME = 64
BLOCK = b"patient=0042;diagnosis=CONFIDENTIAL;ssn=123-45-6789;amount=1000"
PLAINTEXT = (BLOCK * 4)[: 3 * FRAME + 10]
CONTEXT = {
    "dativo:bucket": "records",
    "dativo:key": "clinic/visits/part-1.parquet.dtve",
    "dativo:stream": "visits",
    "tenant": "north",
}
HEADER_ERRORS = (
    MalformedMessageError,
    DataKeyError,
    KeyCommitmentError,
    HeaderAuthenticationError,
    TruncatedMessageError,
)
BODY_ERRORS = (
    FrameSequenceError,
    FrameAuthenticationError,
    TruncatedMessageError,
    MalformedMessageError,
    TrailingDataError,
)


def released(message: bytes, providers: Sequence[KeyProvider], **kwargs: Any) -> tuple[bytes, Any]:
    return collect(lambda: decrypt_stream(message, providers, **kwargs))


def frames_before(index: int) -> bytes:
    """The plaintext of the (authentic) regular frames before frame ``index``."""
    return PLAINTEXT[: min(index, 3) * FRAME]


@pytest.fixture(params=["local", "kms"])
def keyring(
    request: pytest.FixtureRequest, local: LocalKeyProvider, kms_provider: KmsKeyProvider
) -> list[KeyProvider]:
    return [local] if request.param == "local" else [kms_provider]


@pytest.fixture
def message(keyring: list[KeyProvider]) -> bytes:
    return encrypt_bytes(PLAINTEXT, keyring, CONTEXT, FRAME)


def test_layout_is_the_documented_one(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    assert (layout.version, layout.algorithm, layout.frame_length) == (1, 0x0001, FRAME)
    assert layout.context == CONTEXT
    assert [p for p, _, _ in layout.data_keys] == [keyring[0].provider_id]
    assert [(f.sequence, f.final, f.length) for f in layout.frames] == [
        (1, False, 64),
        (2, False, 64),
        (3, False, 64),
        (4, True, 10),
    ]
    assert decrypt_bytes(message, keyring, CONTEXT) == PLAINTEXT
    # Identical plaintext blocks never give identical ciphertext (per-message key, IV = seq).
    bodies = [message[f.start + 4 : f.start + 4 + FRAME] for f in layout.frames[:3]]
    assert len(set(bodies)) == 3


def test_every_single_byte_flip_is_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    masks = (0x01, 0xFF) if keyring[0].provider_id == "dativo-local" else (0x01,)
    for offset in range(len(message)):
        for mask in masks:
            tampered = bytearray(message)
            tampered[offset] ^= mask
            out, error = released(bytes(tampered), keyring)
            where = region_of(layout, offset)
            assert isinstance(error, DecryptionError), (offset, mask, error)
            if where == "header":
                assert isinstance(error, HEADER_ERRORS), (offset, mask, error)
                assert out == b"", (offset, mask)
            else:
                assert isinstance(error, BODY_ERRORS), (offset, mask, error)
                assert out == frames_before(where), (offset, mask, where)


def test_header_fields_fail_with_specific_errors(
    message: bytes, keyring: list[KeyProvider]
) -> None:
    layout = parse(message)
    tag_start = layout.header_end - 16
    commitment_start = tag_start - 32
    frame_length_start = commitment_start - 4
    cases = {
        0: MalformedMessageError,  # magic
        4: MalformedMessageError,  # version
        6: MalformedMessageError,  # algorithm id
        7: KeyCommitmentError,  # message id: another derived key and commitment
        38: KeyCommitmentError,
        frame_length_start + 3: HeaderAuthenticationError,
        commitment_start: KeyCommitmentError,
        tag_start: HeaderAuthenticationError,
        layout.header_end - 1: HeaderAuthenticationError,
    }
    for offset, expected in cases.items():
        tampered = bytearray(message)
        tampered[offset] ^= 0x01
        out, error = released(bytes(tampered), keyring)
        assert type(error) is expected, (offset, error)
        assert out == b""


def _frames(message: bytes, layout: Layout) -> list[bytes]:
    return [message[f.start : f.end] for f in layout.frames]


def _join(message: bytes, layout: Layout, frames: Iterable[bytes]) -> bytes:
    return message[: layout.header_end] + b"".join(frames)


def test_reordered_frames_are_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    f = _frames(message, layout)
    out, error = released(_join(message, layout, [f[1], f[0], f[2], f[3]]), keyring)
    assert isinstance(error, FrameSequenceError) and "frame 1" in str(error)
    assert out == b""
    out, error = released(_join(message, layout, [f[0], f[2], f[1], f[3]]), keyring)
    assert isinstance(error, FrameSequenceError) and out == frames_before(1)
    # Renumbering the moved frames does not help: the sequence is bound in IV and AAD.
    renumbered = [struct.pack(">I", 1) + f[1][4:], struct.pack(">I", 2) + f[0][4:], f[2], f[3]]
    out, error = released(_join(message, layout, renumbered), keyring)
    assert isinstance(error, FrameAuthenticationError) and out == b""
    # A regular frame cannot pass for the final one (label and length are in the AAD).
    as_final = struct.pack(">III", 0xFFFFFFFF, 3, FRAME) + f[2][4:]
    out, error = released(_join(message, layout, [f[0], f[1], as_final]), keyring)
    assert isinstance(error, FrameAuthenticationError) and out == frames_before(2)


def test_dropped_frames_are_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    f = _frames(message, layout)
    for index in range(len(f)):
        kept = f[:index] + f[index + 1 :]
        out, error = released(_join(message, layout, kept), keyring)
        expected = TruncatedMessageError if index == len(f) - 1 else FrameSequenceError
        assert isinstance(error, expected), (index, error)
        assert out == frames_before(index)


def test_duplicated_frames_are_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    f = _frames(message, layout)
    for index in range(len(f)):
        doubled = [*f[: index + 1], f[index], *f[index + 1 :]]
        out, error = released(_join(message, layout, doubled), keyring)
        expected = TrailingDataError if index == len(f) - 1 else FrameSequenceError
        assert isinstance(error, expected), (index, error)
        assert out == frames_before(index + 1)


def test_truncation_anywhere_is_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    layout = parse(message)
    boundaries = [layout.header_end] + [fr.end for fr in layout.frames[:-1]]
    for cut in boundaries:
        out, error = released(message[:cut], keyring)
        assert isinstance(error, TruncatedMessageError), (cut, error)
        assert "final frame is missing" in str(error)
        assert out == frames_before(boundaries.index(cut))
    for cut in range(len(message)):  # and every other length, inside header and frames
        out, error = released(message[:cut], keyring)
        assert isinstance(error, DecryptionError), (cut, error)
        whole = sum(1 for fr in layout.frames if fr.end <= cut)
        assert out == frames_before(whole), cut


def test_data_after_the_final_frame_is_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    for extra in (b"\x00", message):
        out, error = released(message + extra, keyring)
        assert isinstance(error, TrailingDataError)
        assert out == frames_before(3)  # the final frame's plaintext is withheld


def test_wrong_key_is_rejected(
    message: bytes, keyring: list[KeyProvider], other_key_file: Any, kms: Any, other_kms_key: str
) -> None:
    other_local = LocalKeyProvider.from_file(other_key_file)
    other_kms = KmsKeyProvider(kms, None, [other_kms_key])
    for wrong in ([other_local], [other_kms], []):
        out, error = released(message, wrong)
        assert isinstance(error, DataKeyError), (wrong, error)
        assert out == b""
    out, error = released(message, [other_local])
    assert "wrong key" in str(error)


def test_wrong_encryption_context_is_rejected(message: bytes, keyring: list[KeyProvider]) -> None:
    for expected in (
        {"dativo:key": "clinic/visits/part-2.parquet.dtve"},
        {"dativo:stream": "payments"},
        {"tenant": "south"},
        {"purpose": "billing"},
    ):
        out, error = released(message, keyring, expected_context=expected)
        assert isinstance(error, EncryptionContextError), (expected, error)
        assert "encryption context mismatch" in str(error)
        assert out == b""
    assert decrypt_bytes(message, keyring, {"tenant": "north"}) == PLAINTEXT


def test_rewritten_context_fails_the_data_key(message: bytes, keyring: list[KeyProvider]) -> None:
    """Changing a context value in place (same length) is caught by the key provider:
    KMS Decrypt or the local unwrap authenticates the context."""
    at = message.index(b"north")
    tampered = message[:at] + b"south" + message[at + 5 :]
    out, error = released(tampered, keyring, expected_context={"tenant": "south"})
    assert isinstance(error, DataKeyError), error
    assert out == b""


def test_header_swapped_between_objects_is_rejected(keyring: list[KeyProvider]) -> None:
    one = encrypt_bytes(PLAINTEXT, keyring, CONTEXT, FRAME)
    two = encrypt_bytes(PLAINTEXT[::-1], keyring, CONTEXT, FRAME)
    l1, l2 = parse(one), parse(two)
    for head, body in (
        (one[: l1.header_end], two[l2.header_end :]),
        (two[: l2.header_end], one[l1.header_end :]),
    ):
        out, error = released(head + body, keyring)
        assert isinstance(error, FrameAuthenticationError) and "frame 1" in str(error)
        assert out == b""
    # Splicing a frame of another message into the right position fails too.
    f1, f2 = _frames(one, l1), _frames(two, l2)
    out, error = released(_join(one, l1, [f1[0], f2[1], f1[2], f1[3]]), keyring)
    assert isinstance(error, FrameAuthenticationError) and out == frames_before(1)


def test_key_commitment_is_checked_before_the_header_tag(local: LocalKeyProvider) -> None:
    """A header whose data key was replaced by another valid data key (e.g. by someone who
    can wrap keys) fails key commitment, before the header tag or any frame is tried."""
    message = encrypt_bytes(PLAINTEXT, [local], CONTEXT, FRAME)
    layout = parse(message)
    _, substitute = local.generate(CONTEXT)
    header = Header(
        layout.algorithm,
        layout.message_id,
        layout.context,
        (substitute,),
        layout.frame_length,
        layout.commitment,
    )
    forged = serialize_header(header) + message[layout.header_end - 16 :]
    out, error = released(forged, [local])
    assert isinstance(error, KeyCommitmentError) and out == b""
    # The commitment itself is what HKDF derives from the data key and message id.
    data_key = local.unwrap(header.data_keys[0], CONTEXT)
    assert derive(data_key, layout.message_id, 1)[1] != layout.commitment


def test_errors_never_contain_keys_or_plaintext(key_file: Any, local: LocalKeyProvider) -> None:
    secret = key_file.read_bytes()
    forbidden = [secret.hex(), base64.b64encode(secret).decode(), "CONFIDENTIAL", "123-45"]
    message = encrypt_bytes(PLAINTEXT, [local], CONTEXT, FRAME)
    messages = set()
    for offset in range(len(message)):
        tampered = bytearray(message)
        tampered[offset] ^= 0x01
        _, error = released(bytes(tampered), [local])
        messages.add(str(error))
    for cut in range(len(message)):
        messages.add(str(released(message[:cut], [local])[1]))
    assert len(messages) > 10
    for text in messages:
        assert not any(f in text for f in forbidden), text


def test_empty_plaintext_round_trips_and_is_authenticated(local: LocalKeyProvider) -> None:
    message = encrypt_bytes(b"", [local], CONTEXT, FRAME)
    assert decrypt_bytes(message, [local]) == b""
    assert [f.length for f in parse(message).frames] == [0]
    out, error = released(message[: parse(message).header_end], [local])
    assert isinstance(error, TruncatedMessageError) and out == b""


@pytest.mark.parametrize("size", [1, FRAME - 1, FRAME, FRAME + 1, 2 * FRAME, 5 * FRAME + 3])
def test_sizes_around_frame_boundaries(local: LocalKeyProvider, size: int) -> None:
    plaintext = (BLOCK * 8)[:size]
    message = encrypt_bytes(plaintext, [local], CONTEXT, FRAME)
    chunks: Callable[[], Iterable[bytes]] = lambda: decrypt_stream(message, [local])  # noqa: E731
    out, error = collect(chunks)
    assert error is None and out == plaintext
    frames = parse(message).frames
    assert frames[-1].final and 1 <= frames[-1].length <= FRAME
    assert all(not f.final for f in frames[:-1])
