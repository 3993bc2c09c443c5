"""pgoutput messages (protocol version 1) decoded by tap_dativo_postgres.pgoutput, built
byte by byte as the server sends them (docs/cdc.md)."""

from __future__ import annotations

import struct

import pytest

from dativo_bridge.errors import ReadError
from tap_dativo_postgres import pgoutput


def _tuple(*values: object) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is pgoutput.UNCHANGED:
            out += b"u"
        elif isinstance(value, bytes):
            out += b"b" + struct.pack("!i", len(value)) + value
        else:
            text = str(value).encode()
            out += b"t" + struct.pack("!i", len(text)) + text
    return out


def _relation(identity: bytes = b"f") -> bytes:
    columns = b"".join(
        struct.pack("!b", flags) + name + b"\x00" + struct.pack("!Ii", oid, -1)
        for flags, name, oid in ((1, b"id", 20), (0, b"body", 25), (0, b"raw", 17))
    )
    return b"R" + struct.pack("!I", 7) + b"s\x00t\x00" + identity + struct.pack("!h", 3) + columns


def test_messages_of_a_transaction() -> None:
    begin = pgoutput.decode(b"B" + struct.pack("!qqI", 0x10, 1_000_000, 42))
    assert begin == pgoutput.Begin(0x10, 1_000_000 + 946_684_800_000_000, 42)
    relation = pgoutput.decode(_relation())
    assert isinstance(relation, pgoutput.Relation)
    assert (relation.namespace, relation.name, relation.replica_identity) == ("s", "t", "f")
    assert [(c.name, c.type_oid, c.key) for c in relation.columns] == [
        ("id", 20, True),
        ("body", 25, False),
        ("raw", 17, False),
    ]
    insert = pgoutput.decode(b"I" + struct.pack("!I", 7) + b"N" + _tuple(1, "héllo", b"\x00\x01"))
    assert insert == pgoutput.Change("insert", 7, ("1", "héllo", b"\x00\x01"), None, False)
    update = pgoutput.decode(
        b"U"
        + struct.pack("!I", 7)
        + b"O"
        + _tuple(1, "old", None)
        + b"N"
        + _tuple(1, pgoutput.UNCHANGED, None)
    )
    assert isinstance(update, pgoutput.Change) and update.old == ("1", "old", None)
    assert pgoutput.new_row(update, relation) == ("1", "old", None)
    delete = pgoutput.decode(b"D" + struct.pack("!I", 7) + b"K" + _tuple(1, None, None))
    assert delete == pgoutput.Change("delete", 7, None, ("1", None, None), True)
    truncate = pgoutput.decode(b"T" + struct.pack("!ib", 2, 1) + struct.pack("!II", 7, 8))
    assert truncate == pgoutput.Truncate((7, 8), True, False)
    commit = pgoutput.decode(b"C" + struct.pack("!bqqq", 0, 0x10, 0x40, 1_000_000))
    assert commit == pgoutput.Commit(0x10, 0x40, 1_000_000 + 946_684_800_000_000)
    assert pgoutput.decode(b"O" + struct.pack("!q", 1) + b"origin\x00") is None
    assert pgoutput.decode(b"Y" + struct.pack("!I", 99) + b"s\x00t\x00") is None


def test_an_unchanged_toasted_value_without_the_old_row_is_refused() -> None:
    relation = pgoutput.decode(_relation(b"d"))
    assert isinstance(relation, pgoutput.Relation)
    update = pgoutput.decode(
        b"U" + struct.pack("!I", 7) + b"N" + _tuple(1, pgoutput.UNCHANGED, None)
    )
    assert isinstance(update, pgoutput.Change)
    with pytest.raises(ReadError, match=r"'body'.*REPLICA IDENTITY DEFAULT.*REPLICA IDENTITY FULL"):
        pgoutput.new_row(update, relation)


def test_an_unknown_message_is_an_error_and_lsns_round_trip() -> None:
    with pytest.raises(ReadError, match="pgoutput"):
        pgoutput.decode(b"Z\x00")
    assert pgoutput.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert pgoutput.format_lsn(pgoutput.parse_lsn("16/B374D848")) == "16/B374D848"
