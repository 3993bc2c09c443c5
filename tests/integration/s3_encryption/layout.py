"""An independent reader of the documented DTVE layout (docs/encryption-format.md), used to
find frame boundaries for the tampering tests and to check the format as documented."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

FINAL = 0xFFFFFFFF


@dataclass
class Frame:
    start: int
    end: int
    sequence: int
    final: bool
    length: int


@dataclass
class Layout:
    version: int
    algorithm: int
    message_id: bytes
    context: dict[str, str]
    data_keys: list[tuple[str, str, bytes]]
    frame_length: int
    commitment: bytes
    header_end: int  # offset just after the header tag
    frames: list[Frame]


def parse(message: bytes) -> Layout:
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        out = message[pos : pos + n]
        assert len(out) == n
        pos += n
        return out

    def u(n: int) -> int:
        return int.from_bytes(take(n), "big")

    assert take(4) == b"DTVE"
    version, algorithm, message_id = u(1), u(2), take(32)
    context_bytes = take(u(2))
    count = struct.unpack_from(">H", context_bytes)[0]
    cpos, context = 2, {}
    for _ in range(count):
        klen = struct.unpack_from(">H", context_bytes, cpos)[0]
        key = context_bytes[cpos + 2 : cpos + 2 + klen].decode()
        cpos += 2 + klen
        vlen = struct.unpack_from(">H", context_bytes, cpos)[0]
        context[key] = context_bytes[cpos + 2 : cpos + 2 + vlen].decode()
        cpos += 2 + vlen
    keys = []
    for _ in range(u(2)):
        provider = take(u(2)).decode()
        key_id = take(u(2)).decode()
        keys.append((provider, key_id, take(u(2))))
    frame_length, commitment = u(4), take(32)
    take(16)  # header tag
    header_end = pos
    frames = []
    while pos < len(message):
        start = pos
        field = u(4)
        if field == FINAL:
            seq, length = u(4), u(4)
            take(length + 16)
            frames.append(Frame(start, pos, seq, True, length))
            break
        take(frame_length + 16)
        frames.append(Frame(start, pos, field, False, frame_length))
    assert pos == len(message)
    return Layout(
        version, algorithm, message_id, context, keys, frame_length, commitment, header_end, frames
    )


def collect(chunks: Callable[[], Iterable[bytes]]) -> tuple[bytes, Exception | None]:
    """Everything the decryptor yielded before it stopped, and the error it raised."""
    out = bytearray()
    try:
        for chunk in chunks():
            out += chunk
    except Exception as exc:  # the tests check the exact type
        return bytes(out), exc
    return bytes(out), None


def region_of(layout: Layout, offset: int) -> Any:
    """'header', or the index of the frame holding ``offset``."""
    if offset < layout.header_end:
        return "header"
    for index, frame in enumerate(layout.frames):
        if frame.start <= offset < frame.end:
            return index
    raise AssertionError(offset)
