"""docs/encryption-format.md is implementable by a third party, and its test vectors hold.

The vectors are parsed out of the document itself (the ``dtve-vector`` blocks), so the
document and this test cannot drift. Everything is checked three ways:

- an independent minimal implementation, written in this file from the document's
  description only (``cryptography``'s HKDF and AES-GCM primitives, ``hashlib``, no
  Dativo code), re-derives every value of a vector, encrypts its inputs into exactly the
  vector's message and decrypts that message;
- Dativo's decryptor decrypts the vector's message;
- Dativo's encryptor, given the vector's randomness (an internal test-only parameter),
  writes exactly the vector's bytes.

The two reader rules the document fixes (an empty final frame only for an empty
plaintext; the 1 MiB header limit counts the header tag) are checked on crafted objects
that break them (rejected by both implementations with the documented error class) and
on the writer (which never produces such objects).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dativo_bridge.crypto import errors as crypto_errors
from dativo_bridge.crypto.decrypt import decrypt_bytes
from dativo_bridge.crypto.encrypt import Encryptor
from dativo_bridge.crypto.errors import EncryptionError, MalformedMessageError
from dativo_bridge.crypto.format import EncryptedDataKey
from dativo_bridge.crypto.keys import KeyProvider, LocalKeyProvider
from dativo_bridge.crypto.kms import KmsKeyProvider
from dativo_bridge.errors import DativoError

DOC = Path(__file__).resolve().parents[2] / "docs" / "encryption-format.md"
MiB = 1024 * 1024

# ---------------------------------------------------------------------------------------
# An independent implementation, from docs/encryption-format.md only.


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def str16(data: bytes) -> bytes:
    assert len(data) <= 0xFFFF
    return u16(len(data)) + data


def ref_context_field(context: Mapping[str, str]) -> bytes:
    """count:u16, then key_len:u16 key value_len:u16 value, sorted by unsigned key bytes."""
    pairs = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items())
    return u16(len(pairs)) + b"".join(str16(k) + str16(v) for k, v in pairs)


def ref_hkdf(data_key: bytes, message_id: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=message_id, info=info).derive(data_key)


def ref_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """(enc key, commitment)."""
    enc = ref_hkdf(data_key, message_id, b"DTVE-DERIVEKEY" + u16(0x0001))
    commit = ref_hkdf(data_key, message_id, b"DTVE-COMMITKEY")
    return enc, commit


def ref_local_key_id(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(b"DTVE-LOCAL-KEY-ID\x00" + key).hexdigest()[:32]


def ref_local_wrap_aad(key_id: str, context: Mapping[str, str]) -> bytes:
    return b"DTVE-LOCAL-WRAP" + key_id.encode("ascii") + ref_context_field(context)


def ref_local_wrap(key: bytes, data_key: bytes, iv: bytes, context: Mapping[str, str]) -> bytes:
    aad = ref_local_wrap_aad(ref_local_key_id(key), context)
    return iv + AESGCM(key).encrypt(iv, data_key, aad)


def ref_frame_iv(sequence: int) -> bytes:
    return sequence.to_bytes(12, "big")


def ref_frame_aad(message_id: bytes, sequence: int, length: int, final: bool) -> bytes:
    label = b"DTVE-FINAL" if final else b"DTVE-FRAME"
    return message_id + label + u32(sequence) + u64(length)


@dataclass(frozen=True)
class Entry:
    provider: str
    key_id: str
    wrapped: bytes

    def serialized(self) -> bytes:
        return (
            str16(self.provider.encode("utf-8"))
            + str16(self.key_id.encode("utf-8"))
            + str16(self.wrapped)
        )


def ref_header_aad(
    message_id: bytes,
    context: Mapping[str, str],
    entries: Sequence[Entry],
    frame_length: int,
    commitment: bytes,
) -> bytes:
    ctx = ref_context_field(context)
    return (
        b"DTVE"
        + b"\x01"
        + u16(0x0001)
        + message_id
        + u16(len(ctx))
        + ctx
        + u16(len(entries))
        + b"".join(e.serialized() for e in entries)
        + u32(frame_length)
        + commitment
    )


def ref_chunks(plaintext: bytes, frame_length: int) -> tuple[list[bytes], bytes]:
    """(regular frames' plaintext, final frame's plaintext) as the document splits them."""
    if not plaintext:
        return [], b""
    n = -(-len(plaintext) // frame_length)
    chunks = [plaintext[i * frame_length : (i + 1) * frame_length] for i in range(n)]
    return chunks[:-1], chunks[-1]


@dataclass
class Built:
    message: bytes
    header_aad: bytes
    header_tag: bytes
    frames: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # iv, aad, wire


def ref_encrypt(
    *,
    data_key: bytes,
    message_id: bytes,
    entries: Sequence[Entry],
    context: Mapping[str, str],
    frame_length: int,
    plaintext: bytes,
    chunks: tuple[list[bytes], bytes] | None = None,
) -> Built:
    """A message; ``chunks`` overrides the split (to craft non-conforming messages)."""
    enc, commit = ref_keys(data_key, message_id)
    aead = AESGCM(enc)
    header_aad = ref_header_aad(message_id, context, entries, frame_length, commit)
    header_tag = aead.encrypt(bytes(12), b"", header_aad)
    built = Built(b"", header_aad, header_tag)
    regular, final = chunks if chunks is not None else ref_chunks(plaintext, frame_length)
    for seq, chunk in enumerate(regular, start=1):
        iv, aad = ref_frame_iv(seq), ref_frame_aad(message_id, seq, len(chunk), False)
        built.frames.append((iv, aad, u32(seq) + aead.encrypt(iv, chunk, aad)))
    seq = len(regular) + 1
    iv, aad = ref_frame_iv(seq), ref_frame_aad(message_id, seq, len(final), True)
    wire = u32(0xFFFFFFFF) + u32(seq) + u32(len(final)) + aead.encrypt(iv, final, aad)
    built.frames.append((iv, aad, wire))
    built.message = header_aad + header_tag + b"".join(f[2] for f in built.frames)
    return built


class Rejected(Exception):
    """The independent reader rejects a message; ``kind`` is the documented error class."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


def ref_decrypt(
    message: bytes, local_key: bytes, expected: Mapping[str, str] | None = None
) -> bytes:
    """Decrypt with a local key, applying every reader rule of the document."""
    pos = 0

    def take(n: int, header: bool = True) -> bytes:
        nonlocal pos
        if header and pos + n > MiB:
            raise Rejected("MalformedMessageError", "header longer than 1 MiB")
        if pos + n > len(message):
            raise Rejected("TruncatedMessageError", "ends early")
        out = message[pos : pos + n]
        pos += n
        return out

    def num(n: int, header: bool = True) -> int:
        return int.from_bytes(take(n, header), "big")

    if message[:4] != b"DTVE":
        raise Rejected("MalformedMessageError", "magic")
    take(4)
    if num(1) != 1 or num(2) != 1:
        raise Rejected("MalformedMessageError", "version or algorithm")
    message_id = take(32)
    ctx_field = take(num(2))
    count, at, context = int.from_bytes(ctx_field[:2], "big"), 2, {}
    keys: list[bytes] = []
    for _ in range(count):
        k_len = int.from_bytes(ctx_field[at : at + 2], "big")
        k = ctx_field[at + 2 : at + 2 + k_len]
        at += 2 + k_len
        v_len = int.from_bytes(ctx_field[at : at + 2], "big")
        v = ctx_field[at + 2 : at + 2 + v_len]
        at += 2 + v_len
        keys.append(k)
        context[k.decode()] = v.decode()
    if len(ctx_field) < 2 or at != len(ctx_field) or keys != sorted(set(keys)) or b"" in keys:
        raise Rejected("MalformedMessageError", "context not canonical")
    entries = []
    n_keys = num(2)
    if not 1 <= n_keys <= 16:
        raise Rejected("MalformedMessageError", "data key count")
    for _ in range(n_keys):
        provider = take(num(2)).decode()
        key_id = take(num(2)).decode()
        entries.append(Entry(provider, key_id, take(num(2))))
    frame_length = num(4)
    if not 1 <= frame_length <= 64 * MiB:
        raise Rejected("MalformedMessageError", "frame length")
    commitment = take(32)
    header_aad = message[:pos]
    tag = take(16)
    for name, value in (expected or {}).items():
        if context.get(name) != value:
            raise Rejected("EncryptionContextError", name)
    key_id = ref_local_key_id(local_key)
    mine = [e for e in entries if e.provider == "dativo-local" and e.key_id == key_id]
    if not mine:
        raise Rejected("DataKeyError", "wrong key")
    wrapped = mine[0].wrapped
    try:
        data_key = AESGCM(local_key).decrypt(
            wrapped[:12], wrapped[12:], ref_local_wrap_aad(key_id, context)
        )
    except InvalidTag:
        raise Rejected("DataKeyError", "unwrap failed") from None
    enc, commit = ref_keys(data_key, message_id)
    if commit != commitment:
        raise Rejected("KeyCommitmentError", "commitment")
    aead = AESGCM(enc)
    try:
        aead.decrypt(bytes(12), tag, header_aad)
    except InvalidTag:
        raise Rejected("HeaderAuthenticationError", "header tag") from None
    out = []
    expected_seq = 1
    while True:
        if pos == len(message):
            raise Rejected("TruncatedMessageError", "final frame missing")
        first = num(4, header=False)
        final = first == 0xFFFFFFFF
        if final:
            seq, length = num(4, header=False), num(4, header=False)
            if length > frame_length or (length == 0 and expected_seq != 1):
                raise Rejected("MalformedMessageError", "final frame length")
        else:
            seq, length = first, frame_length
        if seq != expected_seq:
            raise Rejected("FrameSequenceError", "sequence")
        sealed = take(length + 16, header=False)
        try:
            plain = aead.decrypt(
                ref_frame_iv(seq), sealed, ref_frame_aad(message_id, seq, length, final)
            )
        except InvalidTag:
            raise Rejected("FrameAuthenticationError", f"frame {seq}") from None
        if final:
            if pos != len(message):
                raise Rejected("TrailingDataError", "after the final frame")
            out.append(plain)
            return b"".join(out)
        out.append(plain)
        expected_seq += 1


# ---------------------------------------------------------------------------------------
# The vectors of the document.


def load_vectors() -> dict[str, dict[str, str]]:
    """Every ``dtve-vector`` block: ``name: value`` lines, indented lines continue a value,
    ``#`` lines are comments."""
    text = DOC.read_text(encoding="utf-8")
    vectors: dict[str, dict[str, str]] = {}
    for block in re.findall(r"^```dtve-vector\n(.*?)^```", text, re.S | re.M):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0].isspace():
                assert last is not None, line
                fields[last] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            assert sep, line
            last = name.strip()
            assert last not in fields, f"field {last!r} given twice"
            fields[last] = value.strip()
        vectors[fields["vector"]] = fields
    return vectors


VECTORS = load_vectors() if DOC.exists() else {}
NAMES = ["local-jsonl", "kms-and-local", "empty"]


@dataclass
class Vector:
    fields: dict[str, str]

    def hex(self, name: str) -> bytes:
        return bytes.fromhex(self.fields[name])

    def text(self, name: str) -> str:
        return self.fields[name]

    def has(self, name: str) -> bool:
        return name in self.fields

    @property
    def context(self) -> dict[str, str]:
        value = json.loads(self.fields["context"])
        assert isinstance(value, dict)
        return value

    @property
    def frame_length(self) -> int:
        return int(self.fields["frame length"])

    def frame_numbers(self) -> list[int]:
        return sorted(
            int(m.group(1)) for name in self.fields if (m := re.fullmatch(r"frame (\d+)", name))
        )

    def entries(self) -> list[Entry]:
        out = []
        if self.has("KMS key ARN"):
            out.append(Entry("aws-kms", self.text("KMS key ARN"), self.hex("KMS wrapped key")))
        out.append(Entry("dativo-local", self.text("local key id"), self.hex("local wrapped key")))
        return out


@pytest.fixture(params=NAMES)
def vector(request: pytest.FixtureRequest) -> Vector:
    assert request.param in VECTORS, f"{DOC} has no test vector {request.param!r}"
    return Vector(VECTORS[request.param])


def test_the_document_has_the_vectors() -> None:
    assert sorted(VECTORS) == sorted(NAMES)


def test_independent_implementation_derives_every_value(vector: Vector) -> None:
    key, data_key, message_id = (
        vector.hex("local key"),
        vector.hex("data key"),
        vector.hex("message id"),
    )
    context = vector.context
    assert ref_context_field(context) == vector.hex("context field")
    assert ref_local_key_id(key) == vector.text("local key id")
    assert ref_local_wrap_aad(vector.text("local key id"), context) == vector.hex("local wrap AAD")
    wrapped = ref_local_wrap(key, data_key, vector.hex("local wrap IV"), context)
    assert wrapped == vector.hex("local wrapped key")
    assert len(wrapped) == 60
    enc, commit = ref_keys(data_key, message_id)
    assert enc == vector.hex("enc key")
    assert commit == vector.hex("commitment")
    aad = ref_header_aad(message_id, context, vector.entries(), vector.frame_length, commit)
    assert aad == vector.hex("header AAD")
    assert AESGCM(enc).encrypt(bytes(12), b"", aad) == vector.hex("header tag")
    built = ref_encrypt(
        data_key=data_key,
        message_id=message_id,
        entries=vector.entries(),
        context=context,
        frame_length=vector.frame_length,
        plaintext=vector.hex("plaintext"),
    )
    numbers = vector.frame_numbers()
    assert numbers == list(range(1, len(built.frames) + 1))
    for n, (iv, frame_aad, wire) in zip(numbers, built.frames, strict=True):
        assert iv == vector.hex(f"frame {n} IV"), n
        assert frame_aad == vector.hex(f"frame {n} AAD"), n
        assert wire == vector.hex(f"frame {n}"), n
    assert built.message == vector.hex("message")
    parts = [vector.hex("header AAD"), vector.hex("header tag")]
    parts += [vector.hex(f"frame {n}") for n in numbers]
    assert b"".join(parts) == vector.hex("message")


def test_the_overhead_formula_gives_the_vector_size(vector: Vector) -> None:
    plaintext, frame_length = vector.hex("plaintext"), vector.frame_length
    header = len(vector.hex("header AAD")) + 16
    entries = sum(
        6 + len(e.provider.encode()) + len(e.key_id.encode()) + len(e.wrapped)
        for e in vector.entries()
    )
    assert header == 95 + len(vector.hex("context field")) + entries
    regular = max(0, -(-len(plaintext) // frame_length) - 1)
    assert len(vector.hex("message")) == header + len(plaintext) + 20 * regular + 28


def test_independent_implementation_decrypts_the_vector(vector: Vector) -> None:
    message = vector.hex("message")
    plaintext = ref_decrypt(message, vector.hex("local key"), vector.context)
    assert plaintext == vector.hex("plaintext")


class StubKms:
    """A KMS client standing in for KMS: one fixed key ARN, wrapped blob and data key."""

    def __init__(self, arn: str, blob: bytes, data_key: bytes, context: Mapping[str, str]) -> None:
        self.arn, self.blob, self.data_key, self.context = arn, blob, data_key, dict(context)
        self.calls: list[str] = []

    def generate_data_key(self, *, KeyId: str, KeySpec: str, EncryptionContext: Any) -> Any:
        self.calls.append("GenerateDataKey")
        assert (KeyId, KeySpec, EncryptionContext) == (self.arn, "AES_256", self.context)
        return {"Plaintext": self.data_key, "KeyId": self.arn, "CiphertextBlob": self.blob}

    def decrypt(self, *, CiphertextBlob: bytes, EncryptionContext: Any, KeyId: str) -> Any:
        self.calls.append("Decrypt")
        if (CiphertextBlob, EncryptionContext, KeyId) != (self.blob, self.context, self.arn):
            raise RuntimeError("InvalidCiphertextException")
        return {"Plaintext": self.data_key, "KeyId": self.arn}


def fixed(*values: bytes) -> Callable[[int], bytes]:
    """A stand-in for os.urandom returning ``values`` in order (each of the size asked)."""
    queue = list(values)

    def random(n: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == n
        return value

    return random


def test_dativo_decrypts_the_vector(vector: Vector) -> None:
    message, plaintext = vector.hex("message"), vector.hex("plaintext")
    local = LocalKeyProvider(vector.hex("local key"))
    assert local.key_id == vector.text("local key id")
    assert decrypt_bytes(message, [local], vector.context) == plaintext
    if vector.has("KMS key ARN"):
        arn = vector.text("KMS key ARN")
        kms = StubKms(arn, vector.hex("KMS wrapped key"), vector.hex("data key"), vector.context)
        bare_id = arn.rsplit("/", 1)[1]
        provider = KmsKeyProvider(kms, None, [bare_id])
        assert decrypt_bytes(message, [provider], vector.context) == plaintext
        assert kms.calls == ["Decrypt"]


def dativo_encrypt(vector: Vector, chunk: int) -> bytes:
    key, data_key, iv = vector.hex("local key"), vector.hex("data key"), vector.hex("local wrap IV")
    providers: list[KeyProvider]
    if vector.has("KMS key ARN"):
        kms = StubKms(
            vector.text("KMS key ARN"), vector.hex("KMS wrapped key"), data_key, vector.context
        )
        providers = [
            KmsKeyProvider(kms, vector.text("KMS key ARN")),
            LocalKeyProvider(key, _random=fixed(iv)),
        ]
    else:
        providers = [LocalKeyProvider(key, _random=fixed(data_key, iv))]
    out = io.BytesIO()
    encryptor = Encryptor(
        out,
        providers,
        vector.context,
        vector.frame_length,
        _random=fixed(vector.hex("message id")),
    )
    plaintext = vector.hex("plaintext")
    for start in range(0, len(plaintext), chunk):
        encryptor.write(plaintext[start : start + chunk])
    encryptor.close()
    return out.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_dativo_encryptor_writes_exactly_the_vector(vector: Vector, chunk: int) -> None:
    assert dativo_encrypt(vector, chunk) == vector.hex("message")


def test_documented_error_classes_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    names = set(re.findall(r"`(\w+Error)`", text))
    assert {"MalformedMessageError", "TruncatedMessageError", "TrailingDataError"} <= names
    for name in names:
        cls = getattr(crypto_errors, name, None)
        assert isinstance(cls, type) and issubclass(cls, DativoError), name


def test_a_bare_kms_key_id_matches_the_arn_only_after_a_slash() -> None:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    edk = EncryptedDataKey("aws-kms", arn, b"blob")

    def matches(allowed: str) -> bool:
        return KmsKeyProvider(None, None, [allowed]).matches(edk)

    assert matches(arn)
    assert matches("1234abcd-12ab-34cd-56ef-1234567890ab")
    assert not matches("34cd-56ef-1234567890ab")  # a suffix without the slash
    assert not matches("alias/visits")
    assert KmsKeyProvider(None).matches(edk)  # no allow-list: discovery
    assert not KmsKeyProvider(None).matches(EncryptedDataKey("dativo-local", arn, b""))


# ---------------------------------------------------------------------------------------
# Reader rule 1: the final frame is empty only as the only frame of an empty plaintext.

KEY = bytes(range(0x90, 0xB0))
DATA_KEY = bytes(range(0xB0, 0xD0))
MESSAGE_ID = bytes(range(0xD0, 0xF0))
IV = bytes(12)
CONTEXT = {"dativo:bucket": "b", "dativo:key": "k", "dativo:stream": "s", "dativo:format": "jsonl"}


def local_entry(context: Mapping[str, str] = CONTEXT) -> Entry:
    return Entry("dativo-local", ref_local_key_id(KEY), ref_local_wrap(KEY, DATA_KEY, IV, context))


def crafted(plaintext: bytes, chunks: tuple[list[bytes], bytes] | None = None, **kw: Any) -> bytes:
    options: dict[str, Any] = {
        "data_key": DATA_KEY,
        "message_id": MESSAGE_ID,
        "entries": [local_entry()],
        "context": CONTEXT,
        "frame_length": 16,
        "plaintext": plaintext,
        "chunks": chunks,
    }
    options.update(kw)
    return ref_encrypt(**options).message


def both_reject(message: bytes, error: type[Exception]) -> None:
    with pytest.raises(Rejected) as ref:
        ref_decrypt(message, KEY, CONTEXT)
    assert ref.value.kind == error.__name__
    with pytest.raises(error):
        decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT)


@pytest.mark.parametrize("regular", [1, 2])
def test_an_empty_final_frame_after_regular_frames_is_rejected(regular: int) -> None:
    # What an ESDK-style writer does for a plaintext of whole frames: all of them regular,
    # then an empty final frame. Authentic, but not this format's framing.
    plaintext = bytes(range(16 * regular))
    message = crafted(
        plaintext, ([plaintext[i : i + 16] for i in range(0, len(plaintext), 16)], b"")
    )
    both_reject(message, MalformedMessageError)
    with pytest.raises(MalformedMessageError, match=f"final frame {regular + 1} is empty"):
        decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT)


def test_an_empty_final_frame_alone_is_the_empty_plaintext() -> None:
    message = crafted(b"")
    assert ref_decrypt(message, KEY, CONTEXT) == b""
    assert decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT) == b""


def frames_of(message: bytes, frame_length: int, header_length: int) -> list[tuple[int, int]]:
    """(sequence, plaintext length) of each frame; the final one last."""
    pos, out = header_length, []
    while True:
        first = int.from_bytes(message[pos : pos + 4], "big")
        if first == 0xFFFFFFFF:
            seq = int.from_bytes(message[pos + 4 : pos + 8], "big")
            length = int.from_bytes(message[pos + 8 : pos + 12], "big")
            out.append((seq, length))
            assert pos + 12 + length + 16 == len(message)
            return out
        out.append((first, frame_length))
        pos += 4 + frame_length + 16


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33, 48, 64])
@pytest.mark.parametrize("chunk", [1, 5, 16, 17, 1000])
def test_the_writer_never_writes_an_empty_final_frame_after_regular_frames(
    size: int, chunk: int
) -> None:
    out = io.BytesIO()
    encryptor = Encryptor(out, [LocalKeyProvider(KEY)], CONTEXT, 16)
    header_length = len(out.getvalue())
    plaintext = bytes(i % 251 for i in range(size))
    for start in range(0, size, chunk):
        encryptor.write(plaintext[start : start + chunk])
    encryptor.close()
    frames = frames_of(out.getvalue(), 16, header_length)
    final_length = frames[-1][1]
    assert final_length == (size - 16 * (len(frames) - 1))
    assert (final_length == 0) == (size == 0)
    assert len(frames) == max(1, -(-size // 16))
    assert decrypt_bytes(out.getvalue(), [LocalKeyProvider(KEY)], CONTEXT) == plaintext


# ---------------------------------------------------------------------------------------
# Reader rule 2: the header, tag included, is at most 1 MiB.

FILLER = "x-filler"  # a provider id no reader knows: the entry is skipped


def filler_entries(size: int) -> list[Entry]:
    """Data key entries of exactly ``size`` serialized bytes in all."""
    per_entry = 6 + len(FILLER) + 2 * 0xFFFF
    n = -(-size // per_entry)
    sizes = [size // n + (1 if i < size % n else 0) for i in range(n)]
    entries = []
    for s in sizes:
        payload = s - 6 - len(FILLER)
        assert payload >= 0
        key_id = min(payload, 0xFFFF)
        entries.append(Entry(FILLER, "f" * key_id, b"\0" * (payload - key_id)))
    return entries


def message_with_header_of(total: int) -> bytes:
    """A valid message (local key first, then filler entries) whose header, tag included,
    is ``total`` bytes."""
    base = len(ref_header_aad(MESSAGE_ID, CONTEXT, [local_entry()], 16, bytes(32))) + 16
    entries = [local_entry(), *filler_entries(total - base)]
    message = crafted(b"some plaintext", entries=entries)
    assert len(ref_header_aad(MESSAGE_ID, CONTEXT, entries, 16, bytes(32))) + 16 == total
    return message


def test_a_header_of_exactly_1_mib_with_its_tag_is_accepted() -> None:
    message = message_with_header_of(MiB)
    assert ref_decrypt(message, KEY, CONTEXT) == b"some plaintext"
    assert decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT) == b"some plaintext"


@pytest.mark.parametrize("total", [MiB + 1, MiB + 16])
def test_a_header_over_1_mib_with_its_tag_is_rejected(total: int) -> None:
    # MiB + 16: the fields without the tag are exactly 1 MiB, still too long.
    message = message_with_header_of(total)
    both_reject(message, MalformedMessageError)
    with pytest.raises(MalformedMessageError, match="header is longer than 1048576 bytes"):
        decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT)


class FillerProvider(KeyProvider):
    """Wraps nothing: adds one filler entry of a given size (to grow the header)."""

    provider_id = FILLER

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, EncryptedDataKey]:
        raise AssertionError("not the first provider")

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> EncryptedDataKey:
        return EncryptedDataKey(self.entry.provider, self.entry.key_id, self.entry.wrapped)

    def matches(self, edk: EncryptedDataKey) -> bool:
        return False

    def unwrap(self, edk: EncryptedDataKey, context: Mapping[str, str]) -> bytes:
        raise AssertionError("never matches")


def encrypt_with_header_of(total: int) -> bytes:
    out = io.BytesIO()
    Encryptor(out, [LocalKeyProvider(KEY)], CONTEXT, 16)
    base = len(out.getvalue())
    fillers = [FillerProvider(e) for e in filler_entries(total - base)]
    out = io.BytesIO()
    encryptor = Encryptor(out, [LocalKeyProvider(KEY), *fillers], CONTEXT, 16)
    assert len(out.getvalue()) == total
    encryptor.write(b"some plaintext")
    encryptor.close()
    return out.getvalue()


def test_the_writer_writes_a_header_of_exactly_1_mib() -> None:
    message = encrypt_with_header_of(MiB)
    assert decrypt_bytes(message, [LocalKeyProvider(KEY)], CONTEXT) == b"some plaintext"


def test_the_writer_refuses_a_header_over_1_mib() -> None:
    out = io.BytesIO()
    Encryptor(out, [LocalKeyProvider(KEY)], CONTEXT, 16)
    fillers = [FillerProvider(e) for e in filler_entries(MiB + 1 - len(out.getvalue()))]
    sink = io.BytesIO()
    with pytest.raises(EncryptionError, match="header would be 1048577 bytes"):
        Encryptor(sink, [LocalKeyProvider(KEY), *fillers], CONTEXT, 16)
    assert sink.getvalue() == b""  # nothing written


# ---------------------------------------------------------------------------------------
# `dativo decrypt` applies the same rules (local files, a local key: no AWS involved).


def cli(tmp_path: Path, message: bytes, key: bytes, *context: str) -> tuple[Any, Path]:
    from click.testing import CliRunner

    from dativo_bridge.decrypt_cli import decrypt

    (tmp_path / "local.key").write_bytes(key)
    (tmp_path / "local.key").chmod(0o600)
    (tmp_path / "in.dtve").write_bytes(message)
    out = tmp_path / "out"
    args = [str(tmp_path / "in.dtve"), "--key-file", str(tmp_path / "local.key"), "-o", str(out)]
    for entry in context:
        args += ["--context", entry]
    return CliRunner().invoke(decrypt, args, catch_exceptions=False), out


def test_dativo_decrypt_reads_the_vector(tmp_path: Path) -> None:
    vector = Vector(VECTORS["local-jsonl"])
    result, out = cli(
        tmp_path, vector.hex("message"), vector.hex("local key"), "dativo:format=jsonl"
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == vector.hex("plaintext")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            lambda: crafted(bytes(32), ([bytes(16), bytes(16)], b"")),
            "final frame 3 is empty",
        ),
        (lambda: message_with_header_of(MiB + 1), "header is longer than 1048576 bytes"),
    ],
    ids=["empty-final-frame", "header-over-1-MiB"],
)
def test_dativo_decrypt_rejects_the_crafted_objects(
    tmp_path: Path, message: Callable[[], bytes], reason: str
) -> None:
    result, out = cli(tmp_path, message(), KEY)
    assert result.exit_code == 1
    assert reason in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.dtve", "local.key"]  # no partial


def test_an_expectation_contradicting_the_s3_uri_is_a_context_error() -> None:
    from dativo_bridge.crypto.errors import EncryptionContextError
    from dativo_bridge.crypto.reading import iter_plaintext

    chunks = iter_plaintext(
        "s3://lake/visits/part-1.jsonl.dtve",
        [LocalKeyProvider(KEY)],
        expected_context={"dativo:key": "visits/part-2.jsonl.dtve"},
    )
    with pytest.raises(EncryptionContextError, match="dativo:key"):
        next(chunks)  # refused before S3 is contacted
