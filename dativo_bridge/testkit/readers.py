"""The reader checks: what a run relies on an ArrowReader for, tried on the reader itself.

A reference read of every stream (from no bookmark) is taken once; each incremental
stream is then stopped after each batch (as a kill would: the STATE holds the bookmark
the runner had released at that point), resumed by a fresh reader from that bookmark, and
the resumed rows are compared with what the reference says must, may and must not come
again. The bookmark rules and the checks on each batch are the runner's own
(:mod:`dativo_bridge.reading`), so the suite passes exactly what a run accepts.
Any exception the plugin raises is a finding of the check that ran it, so checks catch
``Exception`` and report it instead of stopping the suite.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.errors import DativoError, ReaderContractError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.reading import (
    BookmarkTracker,
    check_batch,
    check_replication_method,
    comparable_bookmark,
)
from dativo_bridge.selection import apply_metadata
from dativo_bridge.settings import validated
from dativo_bridge.state import jsonable
from dativo_bridge.testkit.report import Budget, CheckFailed, Report, row_key, show_rows

#: The reader checks, in the order they run.
READER_CHECKS = (
    "reader.open",
    "reader.discover",
    "reader.schema",
    "reader.bookmark",
    "reader.resume",
    "reader.late-rows",
    "reader.close",
)

#: ``late_rows(config, stream, bookmark) -> rows``: add rows to the source whose
#: replication key equals ``bookmark`` (as STATE holds it), as a transaction that commits
#: late would; return them (as dicts holding at least the key properties).
LateRows = Callable[[Mapping[str, Any], StreamInfo, Any], Sequence[Mapping[str, Any]]]


@dataclass
class _Batch:
    rows: list[dict[str, Any]]
    keys: pa.Array | None  # the replication key column
    released: Any | None  # the bookmark the runner released after this batch
    value: Any | None  # the reader's bookmark after this batch


@dataclass
class _Reference:
    stream: StreamInfo
    batches: list[_Batch] = field(default_factory=list)
    final: Any | None = None  # released at the end of the stream
    truncated: bool = False
    error: str | None = None
    error_check: str = "reader.schema"  # the check the error belongs to


@contextmanager
def _opened(reader_cls: type[ArrowReader], config: Mapping[str, Any]) -> Iterator[ArrowReader]:
    reader = reader_cls()
    reader.open(dict(config))
    try:
        yield reader
    finally:
        reader.close()


def _describe(stream: StreamInfo) -> tuple[Any, ...]:
    return (
        stream.name,
        str(stream.schema),
        stream.schema.metadata,
        tuple(stream.key_properties),
        stream.replication_key,
        stream.replication_method,
    )


class _ReaderSuite:
    def __init__(
        self,
        reader_cls: type[ArrowReader],
        config: Mapping[str, Any],
        report: Report,
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None,
        streams: Sequence[str] | None,
        late_rows: LateRows | None,
        max_rows: int,
        max_stops: int,
        budget: Budget,
    ) -> None:
        self.cls = reader_cls
        self.raw_config = config
        self.config: dict[str, Any] = {}
        self.report = report
        self.metadata = metadata
        self.only = set(streams) if streams is not None else None
        self.late_rows = late_rows
        self.max_rows = max_rows
        self.max_stops = max_stops
        self.budget = budget

    # --- open and discover -------------------------------------------------------------
    def open(self) -> bool:
        name = "reader.open"
        try:
            self.config = validated(
                self.cls.config_jsonschema, self.raw_config, plugin=self.cls.name
            )
            with _opened(self.cls, self.config):
                pass
        except Exception as exc:
            self.report.fail(name, f"open/close with the given config raised {_exc(exc)}")
            return False
        self.report.passed(name)
        return True

    def discover(self) -> list[StreamInfo] | None:
        name = "reader.discover"
        try:
            with _opened(self.cls, self.config) as reader:
                first = list(reader.discover())
                second = list(reader.discover())
            with _opened(self.cls, self.config) as reader:
                fresh = list(reader.discover())
        except Exception as exc:
            self.report.fail(name, f"discover raised {_exc(exc)}")
            return None
        try:
            for label, other in (("a second call", second), ("a fresh reader", fresh)):
                _same_streams(first, other, label)
            _well_formed(first)
        except CheckFailed as exc:
            self.report.fail(name, str(exc))
            return None
        self.report.passed(name, f"{len(first)} stream(s), the same on every call")
        streams = [apply_metadata(s, self.metadata) for s in first]
        if self.only is not None:
            unknown = self.only - {s.name for s in streams}
            if unknown:
                self.report.fail(name, f"stream(s) {sorted(unknown)} asked for are not discovered")
            streams = [s for s in streams if s.name in self.only]
        return streams

    # --- the reference read --------------------------------------------------------------
    def reference(self, streams: Sequence[StreamInfo]) -> list[_Reference]:
        refs = []
        with _opened(self.cls, self.config) as reader:
            for stream in streams:
                refs.append(self._read_reference(reader, stream))
        failures = [r for r in refs if r.error and r.error_check == "reader.schema"]
        if failures:
            self.report.fail("reader.schema", "\n".join(str(r.error) for r in failures))
        else:
            total = sum(len(b.rows) for r in refs for b in r.batches)
            self.report.passed("reader.schema", f"{total} row(s) checked against the declaration")
        return refs

    def _read_reference(self, reader: ArrowReader, stream: StreamInfo) -> _Reference:
        ref = _Reference(stream)
        try:
            check_replication_method(stream)
        except DativoError as exc:
            ref.error = str(exc)
            return ref
        tracker = BookmarkTracker(reader, stream, None)
        key = stream.replication_key if tracker.incremental else None
        rows = 0
        batches = reader.read(stream, None)
        try:
            for raw in batches:
                try:
                    batch = check_batch(stream, raw)
                except ReaderContractError as exc:
                    ref.error = f"{exc}; the batch's first rows:\n{show_rows(_rows(raw))}"
                    return ref
                try:
                    released = tracker.after(batch)
                except ReaderContractError as exc:
                    ref.error, ref.error_check = str(exc), "reader.bookmark"
                    return ref
                keys = batch.column(key) if key else None
                ref.batches.append(_Batch(batch.to_pylist(), keys, released, tracker.value))
                rows += batch.num_rows
                if rows >= self.max_rows or self.budget.exhausted():
                    ref.truncated = True
                    return ref
            ref.final = tracker.at_end()
        except Exception as exc:
            ref.error = f"stream '{stream.name}': read raised {_exc(exc)}"
        finally:
            _close(batches)
        return ref

    # --- bookmarks -------------------------------------------------------------------------
    def bookmarks(self, refs: Sequence[_Reference]) -> None:
        name = "reader.bookmark"
        problems, checked = [], 0
        for ref in refs:
            if ref.error and ref.error_check == name:
                problems.append(ref.error)
                continue
            if ref.error or not _incremental(ref.stream):
                continue
            checked += 1
            try:
                _check_bookmarks(ref)
            except CheckFailed as exc:
                problems.append(str(exc))
        if problems:
            self.report.fail(name, "\n".join(problems))
        elif checked:
            self.report.passed(name, f"{checked} incremental stream(s)")
        else:
            self.report.skip(name, "no incremental stream (set metadata to make one)")

    # --- resume ---------------------------------------------------------------------------
    def resume(self, refs: Sequence[_Reference]) -> None:
        name = "reader.resume"
        problems, notes, stops = [], [], 0
        for ref in refs:
            if ref.error or not _incremental(ref.stream):
                continue
            if ref.truncated and not getattr(self.cls, "is_sorted", False):
                notes.append(
                    f"stream '{ref.stream.name}': more than max_rows={self.max_rows} rows and "
                    "not is_sorted, so no bookmark is released within the limit"
                )
                continue
            for stop in self._stops(ref):
                if self.budget.exhausted():
                    notes.append("the time budget ran out before every stop point was tried")
                    break
                stops += 1
                try:
                    self._resume_at(ref, *stop)
                except CheckFailed as exc:
                    problems.append(str(exc))
                    break  # the first failing stop of a stream says enough
        if problems:
            self.report.fail(name, "\n".join(problems + notes))
        elif stops:
            self.report.passed(name, "; ".join([f"{stops} stop point(s) resumed", *notes]))
        else:
            self.report.skip(name, "; ".join(notes) or "no incremental stream released a bookmark")

    def _stops(self, ref: _Reference) -> list[tuple[int, int, Any]]:
        """``(stop, release, bookmark)``: stopped after batch ``stop`` (1-based, ``n + 1``
        for after the end), the STATE holding ``bookmark``, released after batch
        ``release``. One per distinct bookmark (the same bookmark resumes the same way)."""
        found: list[tuple[int, int, Any]] = []
        seen: set[str] = set()
        released, release_at = None, 0
        points = [(i + 1, b.released) for i, b in enumerate(ref.batches)]
        if ref.final is not None:
            points.append((len(ref.batches) + 1, ref.final))
        for stop, value in points:
            if value is not None:
                released, release_at = value, min(stop, len(ref.batches))
            if released is None:
                continue
            tag = json.dumps(jsonable(released), sort_keys=True, default=str)
            if tag not in seen:
                seen.add(tag)
                found.append((stop, release_at, released))
        if len(found) > self.max_stops:
            step = len(found) / self.max_stops
            picked = [found[int(i * step)] for i in range(self.max_stops - 1)]
            found = [*picked, found[-1]]
        return found

    def _resume_at(self, ref: _Reference, stop: int, release: int, bookmark: Any) -> None:
        stream = ref.stream
        key = stream.replication_key
        assert key is not None
        key_type = stream.schema.field(key).type
        state_value = json.loads(json.dumps(jsonable(bookmark)))
        boundary = comparable_bookmark(state_value, key_type)
        n = len(ref.batches)
        where = (
            f"stream '{stream.name}', stopped after "
            + (f"batch {stop} of {n}" if stop <= n else "the end of the stream")
            + f" with the STATE's bookmark {state_value!r} (released after batch {release})"
        )
        if boundary is None or not boundary.is_valid:
            raise CheckFailed(f"{where}: the bookmark cannot be read back as {key_type}")
        frontier = _frontier(ref) if ref.truncated else None
        must, may, must_not = (Counter[tuple[Any, ...]]() for _ in range(3))
        names = stream.schema.names
        samples: dict[tuple[Any, ...], dict[str, Any]] = {}
        for index, batch in enumerate(ref.batches, start=1):
            assert batch.keys is not None
            below = pc.less(batch.keys, boundary).to_pylist()
            for row, is_below in zip(batch.rows, below, strict=True):
                if frontier is not None and not _before(row[key], frontier, key_type):
                    continue
                tag = row_key(row, names)
                samples.setdefault(tag, row)
                if index > release:
                    must[tag] += 1  # delivered after the STATE was released: maybe not durable
                elif is_below is None or is_below:
                    must_not[tag] += 1  # claimed by the STATE (NULL keys: never selectable)
                else:
                    may[tag] += 1  # at (or past) the bookmark: may come again
        lost_expected = sum(must.values())
        repeated: list[dict[str, Any]] = []
        unknown: list[dict[str, Any]] = []
        with _opened(self.cls, self.config) as reader:
            batches = reader.read(stream, state_value)
            try:
                read = 0
                for raw in batches:
                    batch = check_batch(stream, raw)
                    if frontier is not None and _all_past(batch.column(key), frontier):
                        break
                    for row in batch.to_pylist():
                        if frontier is not None and not _before(row[key], frontier, key_type):
                            continue
                        tag = row_key(row, names)
                        if must[tag]:
                            must[tag] -= 1
                        elif may[tag]:
                            may[tag] -= 1
                        elif must_not[tag]:
                            must_not[tag] -= 1
                            repeated.append(row)
                        else:
                            unknown.append(row)
                    read += batch.num_rows
                    if read > 2 * self.max_rows + lost_expected:
                        break
            except ReaderContractError as exc:
                raise CheckFailed(f"{where}: the resumed read broke the contract: {exc}") from None
            finally:
                _close(batches)
        lost = [samples[t] for t, count in must.items() for _ in range(count)]
        parts = []
        if lost:
            parts.append(
                f"{len(lost)} row(s) lost (read after the bookmark was released, and not "
                f"read again), first:\n{show_rows(lost)}"
            )
            if any(r[key] is None for r in lost):
                parts.append("rows with a NULL key must be delivered first (NULLS FIRST)")
        if repeated:
            parts.append(
                f"{len(repeated)} row(s) repeated that the STATE had claimed (key below the "
                f"bookmark, or NULL): is the bookmark ignored? first:\n{show_rows(repeated)}"
            )
        if unknown:
            parts.append(
                f"{len(unknown)} row(s) the reference read never yielded, first:\n"
                f"{show_rows(unknown)}"
            )
        if parts:
            raise CheckFailed(f"{where}: " + "\n".join(parts))

    # --- late rows ------------------------------------------------------------------------
    def late(self, refs: Sequence[_Reference]) -> None:
        """Rows committed late with the bookmark's own key value are read by the next run."""
        name = "reader.late-rows"
        if self.late_rows is None:
            self.report.skip(name, "no late_rows hook to add rows to the source")
            return
        problems, checked = [], 0
        for ref in refs:
            released = [b.released for b in ref.batches if b.released is not None]
            last = ref.final if ref.final is not None else (released[-1] if released else None)
            if ref.error or not _incremental(ref.stream) or ref.truncated or last is None:
                continue
            checked += 1
            stream = ref.stream
            bookmark = json.loads(json.dumps(jsonable(last)))
            try:
                added = list(self.late_rows(self.config, stream, bookmark))
                keys = list(stream.key_properties) or stream.schema.names
                with _opened(self.cls, self.config) as reader:
                    batches = reader.read(stream, bookmark)
                    try:
                        seen = {row_key(r, keys) for b in batches for r in b.to_pylist()}
                    finally:
                        _close(batches)
            except Exception as exc:
                problems.append(f"stream '{stream.name}': raised {_exc(exc)}")
                continue
            missed = [r for r in added if row_key(r, keys) not in seen]
            if missed:
                problems.append(
                    f"stream '{stream.name}': {len(missed)} of {len(added)} row(s) added with "
                    f"the bookmark's key value {bookmark!r} after the run were not read when "
                    f"resuming from it (resume at >=, not >), first:\n{show_rows(missed)}"
                )
        if problems:
            self.report.fail(name, "\n".join(problems))
        elif checked:
            self.report.passed(name, f"{checked} stream(s): rows at the bookmark read again")
        else:
            self.report.skip(name, "no incremental stream released a bookmark")

    # --- close ----------------------------------------------------------------------------
    def close(self, streams: Sequence[StreamInfo]) -> None:
        name = "reader.close"
        if not Path("/proc/self/fd").is_dir():
            self.report.skip(name, "open files are counted through /proc (Linux only)")
            return
        try:
            self._cycle(streams, whole=False)  # warm-up: imports, caches, lazy globals
            fds, threads = _open_fds(), _threads()
            self._cycle(streams, whole=True)
            self._cycle(streams, whole=False)
        except Exception as exc:
            self.report.fail(name, f"reading raised {_exc(exc)}")
            return
        leaked_fds, leaked_threads = _settle(fds, threads)
        if leaked_fds or leaked_threads:
            what = []
            if leaked_fds:
                what.append(
                    f"{len(leaked_fds)} open file(s)/socket(s): "
                    + ", ".join(sorted(leaked_fds.values())[:5])
                )
            if leaked_threads:
                what.append(f"{len(leaked_threads)} thread(s): {sorted(leaked_threads)[:5]}")
            self.report.fail(
                name,
                "after open/read/close (and a read abandoned after one batch) "
                "these are still held: " + "; ".join(what),
            )
        else:
            self.report.passed(name, "no file, socket or thread left after close")

    def _cycle(self, streams: Sequence[StreamInfo], *, whole: bool) -> None:
        with _opened(self.cls, self.config) as reader:
            reader.discover()
            for stream in streams:
                batches = reader.read(stream, None)
                try:
                    rows = 0
                    for batch in batches:
                        rows += batch.num_rows
                        if not whole or rows >= self.max_rows:
                            break
                finally:
                    _close(batches)


def _same_streams(first: Sequence[StreamInfo], other: Sequence[StreamInfo], label: str) -> None:
    a, b = [_describe(s) for s in first], [_describe(s) for s in other]
    if a == b:
        return
    if [s[0] for s in a] != [s[0] for s in b]:
        raise CheckFailed(
            f"{label} discovered streams {[s[0] for s in b]}, the first call {[s[0] for s in a]}"
        )
    for one, two in zip(a, b, strict=True):
        if one != two:
            fields = (
                "name",
                "schema",
                "schema metadata",
                "key_properties",
                "replication_key",
                "replication_method",
            )
            diff = [f for f, x, y in zip(fields, one, two, strict=True) if x != y]
            raise CheckFailed(
                f"stream '{one[0]}': {label} discovered a different {', '.join(diff)}: "
                f"{[y for f, x, y in zip(fields, one, two, strict=True) if x != y]} instead of "
                f"{[x for f, x, y in zip(fields, one, two, strict=True) if x != y]}"
            )


def _well_formed(streams: Sequence[StreamInfo]) -> None:
    names = Counter(s.name for s in streams)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise CheckFailed(f"stream name(s) discovered more than once: {twice}")
    for s in streams:
        if not isinstance(s.schema, pa.Schema):
            raise CheckFailed(
                f"stream '{s.name}': schema is {type(s.schema).__name__}, not pa.Schema"
            )
        missing = [k for k in s.key_properties if k not in s.schema.names]
        if missing:
            raise CheckFailed(f"stream '{s.name}': key properties {missing} are not columns")
        if s.replication_key and s.replication_key not in s.schema.names:
            raise CheckFailed(
                f"stream '{s.name}': replication key '{s.replication_key}' is not a column"
            )
        if s.replication_method == "INCREMENTAL" and not s.replication_key:
            raise CheckFailed(f"stream '{s.name}': INCREMENTAL without a replication key")


def _incremental(stream: StreamInfo) -> bool:
    return stream.replication_method == "INCREMENTAL" and bool(stream.replication_key)


def _check_bookmarks(ref: _Reference) -> None:
    stream = ref.stream
    key = stream.replication_key
    assert key is not None
    key_type = stream.schema.field(key).type
    where = f"stream '{stream.name}'"
    previous: pa.Scalar | None = None
    top: pa.Scalar | None = None
    values = [(i + 1, b.value, b.keys) for i, b in enumerate(ref.batches)]
    for index, value, keys in values:
        assert keys is not None
        high = pc.max(keys)
        if high.is_valid and (top is None or pc.greater(high, top).as_py()):
            top = high
        if value is None:
            continue
        try:
            stored = json.loads(json.dumps(jsonable(value)))
        except (TypeError, ValueError):
            raise CheckFailed(
                f"{where}: the bookmark after batch {index} ({value!r}) cannot be stored in STATE"
            ) from None
        current = comparable_bookmark(stored, key_type)
        if current is None or not current.is_valid:
            raise CheckFailed(
                f"{where}: the bookmark after batch {index} ({stored!r}) does not read back as "
                f"the key's type {key_type}"
            )
        if previous is not None and pc.less(current, previous).as_py():
            raise CheckFailed(
                f"{where}: the bookmark moved backwards after batch {index}, from "
                f"{previous.as_py()} to {current.as_py()}"
            )
        if top is None or pc.greater(current, top).as_py():
            raise CheckFailed(
                f"{where}: the bookmark after batch {index} is {current.as_py()}, beyond the "
                f"largest key read so far ({top.as_py() if top is not None else 'none'}): the "
                "rows in between would never be read"
            )
        previous = current
    if ref.truncated or top is None:
        return
    end = ref.final if ref.final is not None else (ref.batches[-1].value if ref.batches else None)
    last = comparable_bookmark(json.loads(json.dumps(jsonable(end))), key_type)
    if last is None or not last.is_valid or not pc.equal(last, top).as_py():
        tail = _last_key(ref)
        hint = ""
        if tail is not None and last is not None and last.is_valid and pc.equal(last, tail).as_py():
            hint = " (it is the last row's key: compute it from the maximum)"
        raise CheckFailed(
            f"{where}: after the whole stream the bookmark is "
            f"{last.as_py() if last is not None else end!r}, but the largest key read is "
            f"{top.as_py()}{hint}"
        )


def _last_key(ref: _Reference) -> pa.Scalar | None:
    for batch in reversed(ref.batches):
        if batch.keys is not None and len(batch.keys):
            return batch.keys[len(batch.keys) - 1]
    return None


def _frontier(ref: _Reference) -> pa.Scalar | None:
    """The largest key of a truncated sorted read: every row below it was read."""
    top = None
    for batch in ref.batches:
        assert batch.keys is not None
        high = pc.max(batch.keys)
        if high.is_valid and (top is None or pc.greater(high, top).as_py()):
            top = high
    return top


def _before(value: Any, frontier: pa.Scalar | None, key_type: pa.DataType) -> bool:
    if value is None or frontier is None:
        return True
    return bool(pc.less(pa.scalar(value, key_type), frontier).as_py())


def _all_past(column: pa.Array, frontier: pa.Scalar | None) -> bool:
    if frontier is None or not len(column):
        return False
    low = pc.min(column)
    return bool(low.is_valid and not pc.less(low, frontier).as_py())


def _rows(batch: Any) -> list[dict[str, Any]]:
    try:
        return list(batch.to_pylist())
    except Exception:
        return []


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _open_fds() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            found[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
    return found


def _threads() -> set[str]:
    return {f"{t.name}#{t.ident}" for t in threading.enumerate() if t.is_alive()}


def _settle(fds: dict[int, str], threads: set[str]) -> tuple[dict[int, str], set[str]]:
    """What is held now that was not before, after up to two seconds for threads to end."""
    deadline = time.monotonic() + 2
    while True:
        gc.collect()
        now_fds = {n: t for n, t in _open_fds().items() if fds.get(n) != t}
        now_threads = _threads() - threads
        if (not now_fds and not now_threads) or time.monotonic() > deadline:
            return now_fds, now_threads
        time.sleep(0.05)


def run_reader_checks(
    reader_cls: type[ArrowReader],
    config: Mapping[str, Any],
    *,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    streams: Sequence[str] | None = None,
    late_rows: LateRows | None = None,
    max_rows: int = 10_000,
    max_stops: int = 20,
    budget_seconds: float = 60.0,
    skip: Sequence[str] = (),
) -> Report:
    """Run the reader conformance checks (docs/testkit.md) on ``reader_cls``.

    Args:
        reader_cls: The ArrowReader subclass.
        config: Its settings (validated and defaulted as a run does).
        metadata: Catalog metadata as in meltano.yml, e.g. ``{"*": {"replication-method":
            "INCREMENTAL", "replication-key": "updated_at"}}``: how to make streams
            incremental that are not by default.
        streams: Only these streams (default: every discovered stream).
        late_rows: A hook that adds rows at a bookmark to the source (see
            :data:`LateRows`); without it ``reader.late-rows`` is skipped.
        max_rows: Rows read per stream and per resumed read (big sources stay fast).
        max_stops: Stop points tried per incremental stream.
        budget_seconds: Stop starting checks after this long (what was not run is skipped).
        skip: Check names not to run (e.g. ``["reader.close"]``).

    Returns:
        The report; ``report.ok`` is False when a check failed.
    """
    started = time.monotonic()
    report = Report(f"{reader_cls.__module__}:{reader_cls.__qualname__}")
    budget = Budget(budget_seconds)
    suite = _ReaderSuite(
        reader_cls,
        config,
        report,
        metadata=metadata,
        streams=streams,
        late_rows=late_rows,
        max_rows=max_rows,
        max_stops=max_stops,
        budget=budget,
    )
    try:
        if not suite.open():
            return report
        found = suite.discover()
        if found is None:
            return report
        wanted = [c for c in READER_CHECKS[2:] if c not in skip]
        refs = suite.reference(found) if wanted else []
        steps = {
            "reader.bookmark": lambda: suite.bookmarks(refs),
            "reader.resume": lambda: suite.resume(refs),
            "reader.late-rows": lambda: suite.late(refs),
            "reader.close": lambda: suite.close(found),
        }
        for name, step in steps.items():
            if name in skip:
                report.skip(name, "skipped on request")
            elif budget.exhausted():
                report.skip(name, f"the time budget ({budget.seconds:.0f} s) ran out")
            else:
                step()
        return report
    finally:
        report.seconds = time.monotonic() - started
