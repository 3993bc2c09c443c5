"""The Dativo envelope (DTVE) wire format: constants, header serialization and parsing.

Every integer is unsigned big-endian. See docs/encryption-format.md for the full layout.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dativo_bridge.crypto.errors import MalformedMessageError, TruncatedMessageError

MAGIC = b"DTVE"
VERSION = 1
#: AES-256-GCM, 12-byte IV, 16-byte tag, HKDF-SHA512 key derivation, HKDF-SHA512 commitment.
ALG_AES256_GCM_HKDF_SHA512_COMMIT = 0x0001
SUPPORTED_ALGORITHMS = frozenset({ALG_AES256_GCM_HKDF_SHA512_COMMIT})

MESSAGE_ID_LEN = 32
DATA_KEY_LEN = 32
COMMITMENT_LEN = 32
IV_LEN = 12
TAG_LEN = 16

DEFAULT_FRAME_LENGTH = 1024 * 1024
MAX_FRAME_LENGTH = 64 * 1024 * 1024
MAX_DATA_KEYS = 16
#: The whole header, from the magic to the end of the header tag (tag included).
MAX_HEADER_BYTES = 1024 * 1024

#: The sequence-number field value that marks the final frame.
FINAL_FRAME_MARKER = 0xFFFFFFFF
MAX_SEQUENCE = 0xFFFFFFFE

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class EncryptedDataKey:
    """One wrapped copy of the message's data key.

    Attributes:
        provider_id: Who can unwrap it (``aws-kms`` or ``dativo-local``).
        key_id: Which key of that provider (a KMS key ARN, a local key fingerprint).
        wrapped: The data key encrypted under that key (opaque to the format).
    """

    provider_id: str
    key_id: str
    wrapped: bytes


@dataclass(frozen=True)
class Header:
    """A message header (everything before the body).

    Attributes:
        algorithm: Algorithm suite id.
        message_id: 32 random bytes, unique per message.
        context: The encryption context (authenticated, not secret).
        data_keys: The wrapped data keys.
        frame_length: Plaintext bytes per regular frame.
        commitment: The key commitment value.
        version: Format version.
    """

    algorithm: int
    message_id: bytes
    context: Mapping[str, str]
    data_keys: tuple[EncryptedDataKey, ...]
    frame_length: int
    commitment: bytes
    version: int = VERSION

    def body(self) -> bytes:
        """The serialized header without its authentication tag (the tag's AAD)."""
        return serialize_header(self)


def _text(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _blob(value: bytes, what: str) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return _U16.pack(len(value)) + value


def serialize_context(context: Mapping[str, str]) -> bytes:
    """The canonical bytes of an encryption context: pairs sorted by UTF-8 key bytes.

    Args:
        context: String keys and values.

    Returns:
        ``count(u16) (key_len(u16) key value_len(u16) value)*``.
    """
    pairs = sorted((str(k).encode("utf-8"), str(v).encode("utf-8")) for k, v in context.items())
    if len(pairs) > 0xFFFF:
        raise ValueError("encryption context has more than 65535 entries")
    out = [_U16.pack(len(pairs))]
    for key, value in pairs:
        if not key:
            raise ValueError("encryption context keys must not be empty")
        out.append(_blob(key, "an encryption context key"))
        out.append(_blob(value, "an encryption context value"))
    data = b"".join(out)
    if len(data) > 0xFFFF:
        raise ValueError("the serialized encryption context is longer than 65535 bytes")
    return data


def serialize_header(header: Header) -> bytes:
    """The header fields (without the tag) in their wire order."""
    if not 1 <= len(header.data_keys) <= MAX_DATA_KEYS:
        raise ValueError(f"a message needs 1 to {MAX_DATA_KEYS} data keys")
    context = serialize_context(header.context)
    parts = [
        MAGIC,
        _U8.pack(header.version),
        _U16.pack(header.algorithm),
        header.message_id,
        _U16.pack(len(context)),
        context,
        _U16.pack(len(header.data_keys)),
    ]
    for edk in header.data_keys:
        parts.append(_text(edk.provider_id, "a key provider id"))
        parts.append(_text(edk.key_id, "a key id"))
        parts.append(_blob(edk.wrapped, "a wrapped data key"))
    parts.append(_U32.pack(header.frame_length))
    parts.append(header.commitment)
    return b"".join(parts)


class _Cursor:
    """Reads header fields from a stream, keeping the bytes read (the AAD of the tag).

    A field that would take the header, with the tag still to come, over
    MAX_HEADER_BYTES is refused before it is read.
    """

    def __init__(self, read_exact: Callable[[int, str], bytes]) -> None:
        self._read = read_exact
        self.raw = bytearray()

    def take(self, n: int, what: str) -> bytes:
        if len(self.raw) + n + TAG_LEN > MAX_HEADER_BYTES:
            raise MalformedMessageError(
                f"header is longer than {MAX_HEADER_BYTES} bytes (its tag included)"
            )
        data = self._read(n, f"the header ({what})")
        self.raw += data
        return data

    def u8(self, what: str) -> int:
        return int(_U8.unpack(self.take(1, what))[0])

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def text(self, what: str) -> str:
        raw = self.take(self.u16(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessageError(f"header: {what} is not UTF-8") from None


def parse_context(data: bytes) -> dict[str, str]:
    """Parse a serialized encryption context, accepting only the canonical form.

    Raises:
        MalformedMessageError: Lengths do not add up, keys are not strictly sorted, or a
            string is not UTF-8.
    """

    def bad(reason: str) -> MalformedMessageError:
        return MalformedMessageError(f"header: malformed encryption context ({reason})")

    if len(data) < 2:
        raise bad("no entry count")
    count = int(_U16.unpack_from(data, 0)[0])
    pos = 2
    pairs: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        fields = []
        for _part in ("key", "value"):
            if pos + 2 > len(data):
                raise bad("truncated")
            size = int(_U16.unpack_from(data, pos)[0])
            pos += 2
            if pos + size > len(data):
                raise bad("truncated")
            fields.append(bytes(data[pos : pos + size]))
            pos += size
        pairs.append((fields[0], fields[1]))
    if pos != len(data):
        raise bad("extra bytes")
    keys = [k for k, _ in pairs]
    if any(not k for k in keys) or any(a >= b for a, b in itertools.pairwise(keys)):
        raise bad("keys empty, unsorted or repeated")
    try:
        return {k.decode("utf-8"): v.decode("utf-8") for k, v in pairs}
    except UnicodeDecodeError:
        raise bad("not UTF-8") from None


def read_header(read_exact: Callable[[int, str], bytes]) -> tuple[Header, bytes, bytes]:
    """Parse a header from a stream.

    Args:
        read_exact: Returns exactly ``n`` bytes or raises TruncatedMessageError.

    Returns:
        The header, its serialized bytes (the tag's AAD) and its 16-byte tag.

    Raises:
        MalformedMessageError: Wrong magic, unsupported version or algorithm, bad lengths.
        TruncatedMessageError: The stream ends inside the header.
    """
    cur = _Cursor(read_exact)
    try:
        magic = cur.take(len(MAGIC), "magic")
    except TruncatedMessageError:
        raise MalformedMessageError("not a Dativo encrypted object (too short)") from None
    if magic != MAGIC:
        raise MalformedMessageError("not a Dativo encrypted object (bad magic bytes)")
    version = cur.u8("version")
    if version != VERSION:
        raise MalformedMessageError(f"unsupported format version {version} (this reads {VERSION})")
    algorithm = cur.u16("algorithm id")
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise MalformedMessageError(f"unsupported algorithm id 0x{algorithm:04x}")
    message_id = cur.take(MESSAGE_ID_LEN, "message id")
    context = parse_context(cur.take(cur.u16("encryption context length"), "encryption context"))
    count = cur.u16("data key count")
    if not 1 <= count <= MAX_DATA_KEYS:
        raise MalformedMessageError(f"header: {count} data keys (1 to {MAX_DATA_KEYS} allowed)")
    keys = []
    for index in range(count):
        provider = cur.text(f"provider id of data key {index + 1}")
        key_id = cur.text(f"key id of data key {index + 1}")
        wrapped = cur.take(cur.u16(f"data key {index + 1}"), f"data key {index + 1}")
        keys.append(EncryptedDataKey(provider, key_id, bytes(wrapped)))
    frame_length = cur.u32("frame length")
    if not 1 <= frame_length <= MAX_FRAME_LENGTH:
        raise MalformedMessageError(
            f"header: frame length {frame_length} outside 1..{MAX_FRAME_LENGTH}"
        )
    commitment = cur.take(COMMITMENT_LEN, "key commitment")
    body = bytes(cur.raw)
    tag = read_exact(TAG_LEN, "the header authentication tag")
    header = Header(algorithm, message_id, context, tuple(keys), frame_length, commitment, version)
    return header, body, tag
