"""Meltano-style stream/column selection (`select` patterns) and `metadata` overrides."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from dativo_bridge.interfaces import StreamInfo


def _split(pattern: str) -> tuple[bool, str, str]:
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    stream, _, column = body.partition(".")
    return negated, stream, column or "*"


def select_columns(stream: StreamInfo, patterns: Sequence[str] | None) -> list[str] | None:
    """The columns of ``stream`` that ``patterns`` select, or None if it is not selected.

    Patterns work like Meltano's: ``stream.*`` selects all columns, ``stream.col`` one,
    ``!stream.col`` excludes one; shell wildcards are allowed in both parts. No patterns
    selects everything. Key properties and the replication key are always kept.
    """
    names = list(stream.schema.names)
    if not patterns:
        return names
    chosen: set[str] = set()
    excluded: set[str] = set()
    matched = False
    for pattern in patterns:
        negated, sp, cp = _split(pattern)
        if not fnmatch.fnmatchcase(stream.name, sp):
            continue
        hits = {n for n in names if fnmatch.fnmatchcase(n, cp)}
        if negated:
            if cp == "*":
                return None
            excluded |= hits
        else:
            matched = True
            chosen |= hits
    if not matched:
        return None
    keep = set(stream.key_properties) | (
        {stream.replication_key} if stream.replication_key else set()
    )
    return [n for n in names if (n in chosen and n not in excluded) or n in keep]


def apply_metadata(
    stream: StreamInfo, metadata: Mapping[str, Mapping[str, Any]] | None
) -> StreamInfo:
    """Apply ``replication-method`` / ``replication-key`` / ``key-properties`` overrides."""
    if not metadata:
        return stream
    method, key, keys = stream.replication_method, stream.replication_key, stream.key_properties
    for pattern, values in metadata.items():
        if not fnmatch.fnmatchcase(stream.name, pattern):
            continue
        method = str(values.get("replication-method", method)).upper()
        key = values.get("replication-key", key)
        keys = tuple(values.get("key-properties", keys))
    if key is not None and key not in stream.schema.names:
        key = None
    return StreamInfo(stream.name, stream.schema, keys, key, method)
