"""What a conformance run found: one :class:`CheckResult` per check, gathered in a
:class:`Report` whose text names each failed check and shows the first rows that differ."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: How many differing rows a failure shows.
SHOWN_ROWS = 5

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class CheckResult:
    """The outcome of one check (``name`` as the docs list it, e.g. ``reader.resume``)."""

    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        head = f"{self.status.upper():7} {self.name}"
        if not self.detail:
            return head
        indented = self.detail.replace("\n", "\n          ")
        return f"{head}: {indented}"


@dataclass
class Report:
    """Every check of one run of the suite, in the order they ran."""

    plugin: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks are listed, not failures)."""
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def failed_names(self) -> set[str]:
        """The names of the failed checks."""
        return {r.name for r in self.failed}

    def passed(self, name: str, detail: str = "") -> None:
        self.results.append(CheckResult(name, PASSED, detail))

    def fail(self, name: str, detail: str) -> None:
        self.results.append(CheckResult(name, FAILED, detail))

    def skip(self, name: str, why: str) -> None:
        self.results.append(CheckResult(name, SKIPPED, why))

    def text(self) -> str:
        """The report as a user reads it: one line per check, then a summary line."""
        lines = [f"conformance of {self.plugin}:"]
        lines += ["  " + r.line() for r in self.results]
        counts = Counter(r.status for r in self.results)
        lines.append(
            f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[SKIPPED]} skipped "
            f"in {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise AssertionError with the report's text when a check failed."""
        if not self.ok:
            raise AssertionError(self.text())


class CheckFailed(Exception):
    """Raised inside a check to end it as failed with ``str(exc)`` as its detail."""


class Budget:
    """The time a run of the suite may take; checks ask before each expensive step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def exhausted(self) -> bool:
        return time.monotonic() > self._deadline


def canonical(value: Any) -> Any:
    """A hashable form of a Python value from Arrow's ``to_pylist``, equal for equal values
    (NaN equals NaN, -0.0 differs from 0.0, nested values compare by content)."""
    if isinstance(value, float):
        if math.isnan(value):
            return ("float", "nan")
        return ("float", repr(value))
    if isinstance(value, Mapping):
        return tuple((k, canonical(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def row_key(row: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    """The canonical form of ``row`` restricted to ``names``."""
    return tuple(canonical(row.get(n)) for n in names)


def show_rows(rows: Iterable[Mapping[str, Any]], total: int | None = None) -> str:
    """The first :data:`SHOWN_ROWS` rows, one per line, and how many more there are."""
    shown: list[str] = []
    count = 0
    for row in rows:
        count += 1
        if len(shown) < SHOWN_ROWS:
            shown.append("  " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()))
    total = count if total is None else total
    if total > len(shown):
        shown.append(f"  ... and {total - len(shown)} more")
    return "\n".join(shown)


def _short(value: Any) -> str:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    text = str(value) if isinstance(value, decimal.Decimal) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def multiset_difference(
    want: Sequence[Mapping[str, Any]], got: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(missing, unexpected)``: rows of ``want`` not in ``got`` and rows of ``got`` not in
    ``want``, counting repeats (a row expected once and found twice is unexpected once)."""
    have = Counter(row_key(r, names) for r in got)
    missing = []
    for row in want:
        key = row_key(row, names)
        if have[key] > 0:
            have[key] -= 1
        else:
            missing.append(row)
    unexpected = []
    for row in got:
        key = row_key(row, names)
        if have[key] > 0:
            have[key] -= 1
            unexpected.append(row)
    return missing, unexpected


def compare_rows(
    want: Sequence[Mapping[str, Any]], got: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> str | None:
    """None when ``got`` holds exactly the rows of ``want`` (any order), else what differs."""
    missing, unexpected = multiset_difference(want, got, names)
    if not missing and not unexpected:
        return None
    parts = [f"expected {len(want)} row(s), found {len(got)}"]
    if missing:
        parts.append(f"{len(missing)} expected row(s) missing, first:\n{show_rows(missing)}")
    if unexpected:
        parts.append(
            f"{len(unexpected)} row(s) not expected (or repeated), first:\n{show_rows(unexpected)}"
        )
    return "\n".join(parts)
