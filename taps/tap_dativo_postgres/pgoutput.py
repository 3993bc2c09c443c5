"""pgoutput, PostgreSQL's built-in logical decoding output (protocol version 1), decoded
into Python values: one message per row of ``pg_logical_slot_peek_binary_changes``.

Only what a change stream needs is kept: relations (the table's columns as the WAL knows
them, which announce schema changes), transaction boundaries with the commit LSN and time,
and row changes whose values stay in the type's text form (``'t'``), its binary form
(``'b'``), NULL, or :data:`UNCHANGED` for an unchanged TOASTed value the WAL does not
carry (``'u'``). Turning the text into typed Arrow columns is cdc.py's job.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dativo_bridge.errors import ReadError

#: An unchanged TOASTed value: the WAL record has no copy of it (pgoutput's 'u').
UNCHANGED: Final = object()

#: PostgreSQL's epoch (timestamps in the protocol count microseconds from it).
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_EPOCH_US = int((PG_EPOCH - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 10**6

Value = str | bytes | None | object


@dataclass(frozen=True)
class Column:
    """A column of a Relation message."""

    name: str
    type_oid: int
    typmod: int
    key: bool


@dataclass(frozen=True)
class Relation:
    """'R': the columns of a table as the following changes carry them."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Begin:
    """'B': a transaction starts (its commit record is at ``final_lsn``)."""

    final_lsn: int
    commit_time_us: int  # microseconds since the Unix epoch
    xid: int


@dataclass(frozen=True)
class Commit:
    """'C': a transaction committed; ``end_lsn`` is the position after its commit record
    (a slot confirmed at ``end_lsn`` does not deliver the transaction again)."""

    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True)
class Change:
    """'I', 'U' or 'D': one row changed.

    Attributes:
        kind: ``insert``, ``update`` or ``delete``.
        relation: The table's oid (its last Relation message describes the columns).
        new: The new row (insert, update), one value per column.
        old: The old row when the WAL carries it: the key columns (``key_only``) under
            REPLICA IDENTITY DEFAULT/INDEX when the key changed or for a delete, every
            column under REPLICA IDENTITY FULL.
        key_only: ``old`` holds only the replica identity's columns (others None).
    """

    kind: str
    relation: int
    new: tuple[Value, ...] | None
    old: tuple[Value, ...] | None
    key_only: bool


@dataclass(frozen=True)
class Truncate:
    """'T': tables emptied."""

    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


Message = Relation | Begin | Commit | Change | Truncate | None

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_BEGIN = struct.Struct("!qqI")
_COMMIT = struct.Struct("!bqqq")


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> the LSN as an integer."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    """An integer LSN in PostgreSQL's ``X/Y`` form."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _tuple(data: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    (count,) = _I16.unpack_from(data, pos)
    pos += 2
    values: list[Value] = []
    for _ in range(count):
        kind = data[pos]
        pos += 1
        if kind == 0x6E:  # 'n'
            values.append(None)
        elif kind == 0x75:  # 'u'
            values.append(UNCHANGED)
        elif kind in (0x74, 0x62):  # 't', 'b'
            (length,) = _I32.unpack_from(data, pos)
            pos += 4
            raw = data[pos : pos + length]
            pos += length
            values.append(raw.decode("utf-8") if kind == 0x74 else bytes(raw))
        else:
            raise ReadError(f"pgoutput: unknown tuple value kind {chr(kind)!r}")
    return tuple(values), pos


def decode(data: bytes) -> Message:
    """One pgoutput message; None for those a change stream ignores (origin, type,
    logical decoding messages).

    Raises:
        ReadError: The message is not pgoutput protocol version 1.
    """
    tag = data[:1]
    if tag == b"B":
        final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
        return Begin(final_lsn, ts + _PG_EPOCH_US, xid)
    if tag == b"C":
        _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, ts + _PG_EPOCH_US)
    if tag in (b"I", b"U", b"D"):
        (relation,) = _U32.unpack_from(data, 1)
        pos = 5
        old: tuple[Value, ...] | None = None
        new: tuple[Value, ...] | None = None
        key_only = False
        marker = data[pos : pos + 1]
        if marker in (b"K", b"O"):
            key_only = marker == b"K"
            old, pos = _tuple(data, pos + 1)
            marker = data[pos : pos + 1]
        if marker == b"N":
            new, pos = _tuple(data, pos + 1)
        kind = {b"I": "insert", b"U": "update", b"D": "delete"}[tag]
        return Change(kind, relation, new, old, key_only)
    if tag == b"R":
        (oid,) = _U32.unpack_from(data, 1)
        namespace, pos = _string(data, 5)
        name, pos = _string(data, pos)
        identity = chr(data[pos])
        (count,) = _I16.unpack_from(data, pos + 1)
        pos += 3
        columns: list[Column] = []
        for _ in range(count):
            flags = data[pos]
            column, pos = _string(data, pos + 1)
            (type_oid,) = _U32.unpack_from(data, pos)
            (typmod,) = _I32.unpack_from(data, pos + 4)
            pos += 8
            columns.append(Column(column, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))
    if tag == b"T":
        (count,) = _I32.unpack_from(data, 1)
        options = data[5]
        relations = struct.unpack_from(f"!{count}I", data, 6)
        return Truncate(tuple(relations), bool(options & 1), bool(options & 2))
    if tag in (b"O", b"Y", b"M"):
        return None
    raise ReadError(
        f"pgoutput: unexpected message {tag!r} (is the slot's plugin pgoutput, proto_version 1?)"
    )


def new_row(change: Change, relation: Relation) -> tuple[Value, ...]:
    """The row after ``change`` (insert, update): an unchanged TOASTed value is taken from
    the old row when the WAL carries it (REPLICA IDENTITY FULL).

    Raises:
        ReadError: An unchanged TOASTed value the WAL does not carry (REPLICA IDENTITY
            DEFAULT, INDEX or NOTHING): delivering it as NULL would corrupt the mirror.
    """
    assert change.new is not None
    if UNCHANGED not in change.new:
        return change.new
    values = list(change.new)
    old: Sequence[Value] = change.old if change.old is not None and not change.key_only else ()
    for i, value in enumerate(values):
        if value is not UNCHANGED:
            continue
        if i < len(old) and old[i] is not UNCHANGED:
            values[i] = old[i]
            continue
        raise ReadError(
            f"table {relation.namespace}.{relation.name}: an update left column "
            f"'{relation.columns[i].name}' unchanged and its value is TOASTed, so the WAL "
            "does not carry it (REPLICA IDENTITY "
            f"{_IDENTITY.get(relation.replica_identity, relation.replica_identity)}). Run "
            f'ALTER TABLE "{relation.namespace}"."{relation.name}" REPLICA IDENTITY FULL '
            "and read the stream again from a new snapshot (remove its bookmark from the "
            "state, or --full-refresh)"
        )
    return tuple(values)


_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}
