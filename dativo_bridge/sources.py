"""An in-process reader as a run's source: the selected streams' events, in order, with
the bookmarks and the run marker kept in STATE.

While a run is under way its STATE lists the streams it has finished (``dativo_run:
{streams, completed}``, see :data:`~dativo_bridge.state.RUN_KEY`). A run that starts from a
STATE whose run did not finish every stream is that run resumed: the streams it finished
are not read again (a FULL_TABLE stream would otherwise be appended a second time). The
last STATE of a run that reads every stream has no ``dativo_run``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dativo_bridge.events import BatchEvent, Event, SchemaEvent, StateEvent
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.reading import checked_batches, stream_to_read
from dativo_bridge.selection import apply_metadata, select_columns
from dativo_bridge.state import RUN_KEY, jsonable

logger = logging.getLogger("dativo.run")


def bookmark_state(state: dict[str, Any], stream: str, key: str, value: Any) -> None:
    """Record a bookmark in singer-sdk's STATE format."""
    bookmarks = state.setdefault("bookmarks", {})
    bookmarks[stream] = {"replication_key": key, "replication_key_value": jsonable(value)}


def starting_bookmark(state: Mapping[str, Any] | None, stream: StreamInfo) -> Any:
    """The bookmark to resume ``stream`` from, or None for a full read."""
    if not state or stream.replication_method not in ("INCREMENTAL", "LOG_BASED"):
        return None
    if not stream.replication_key:
        return None
    entry = state.get("bookmarks", {}).get(stream.name) or {}
    if entry.get("replication_key") not in (None, stream.replication_key):
        logger.warning(
            "stream '%s': replication key changed from %s to %s; reading in full",
            stream.name,
            entry.get("replication_key"),
            stream.replication_key,
        )
        return None
    return entry.get("replication_key_value")


def finished_by_resumed_run(previous: Any, names: Sequence[str]) -> list[str]:
    """Of ``names``, the streams an interrupted run finished, from the ``dativo_run``
    marker its STATE held (``previous``); none when that run read every stream."""
    if not isinstance(previous, dict):
        return []
    earlier = [str(n) for n in previous.get("completed") or []]
    if not set(earlier) < set(previous.get("streams") or []):
        return []
    return [n for n in earlier if n in names]


def estimated_rows(reader: ArrowReader, stream: StreamInfo, bookmark: Any) -> int | None:
    """The reader's row estimate for ``stream`` (None if it has none, gives something that
    is not a count, or fails: an estimate never stops a run)."""
    try:
        estimate = reader.estimated_rows(stream, bookmark)
    except Exception as exc:
        logger.debug("stream '%s': no row estimate: %s", stream.name, exc)
        return None
    if isinstance(estimate, bool) or not isinstance(estimate, int | float):
        return None
    if isinstance(estimate, float) and not math.isfinite(estimate):
        return None
    return max(0, int(estimate))


def selected_streams(
    reader: ArrowReader,
    select: Sequence[str] | None,
    metadata: Mapping[str, Mapping[str, Any]] | None,
) -> list[StreamInfo]:
    """The reader's streams with the catalog metadata applied, restricted to the selection."""
    selected: list[StreamInfo] = []
    for discovered in reader.discover():
        info = apply_metadata(discovered, metadata)
        columns = select_columns(info, select)
        if columns is None:
            logger.info("stream '%s' not selected", info.name)
            continue
        selected.append(stream_to_read(reader, info.with_columns(columns)))
    return selected


def reader_events(
    reader: ArrowReader,
    select: Sequence[str] | None,
    metadata: Mapping[str, Mapping[str, Any]] | None,
    start_state: Mapping[str, Any] | None,
) -> Iterator[Event]:
    """Every event of an opened reader's selected streams (see the module docstring)."""
    state: dict[str, Any] = copy.deepcopy(dict(start_state or {}))
    state.pop("currently_syncing", None)
    previous = state.pop(RUN_KEY, None)
    selected = selected_streams(reader, select, metadata)
    names = [info.name for info in selected]
    done = finished_by_resumed_run(previous, names)
    progress = {"streams": names, "completed": list(done)}

    def marked() -> dict[str, Any]:
        return {**copy.deepcopy(state), RUN_KEY: copy.deepcopy(progress)}

    ended = False  # the last STATE yielded has no dativo_run
    for info in selected:
        if info.name in done:
            logger.info(
                "stream '%s': finished by the interrupted run this run resumes; not read again",
                info.name,
            )
            continue
        bookmark = starting_bookmark(state, info)
        yield SchemaEvent(info, estimated_rows(reader, info, bookmark))
        if bookmark is not None:
            logger.info(
                "stream '%s': resuming from %s >= %s", info.name, info.replication_key, bookmark
            )
        for batch, released in checked_batches(reader, info, bookmark):
            if batch.num_rows:
                yield BatchEvent(info.name, batch)
            if released is not None:
                assert info.replication_key is not None
                bookmark_state(state, info.name, info.replication_key, released)
                yield StateEvent(marked())
        progress["completed"].append(info.name)
        ended = set(progress["completed"]) >= set(names)
        yield StateEvent(copy.deepcopy(state) if ended else marked())
    if not ended:
        yield StateEvent(copy.deepcopy(state))
