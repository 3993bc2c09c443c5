"""The writer checks: rows become visible exactly at commit, an aborted writer leaves
nothing, schema changes are applied or refused clearly, and every mapped type round-trips.

Each check writes its own stream (a fresh name per run), so checks do not see each
other's rows; what is visible is read back as :mod:`dativo_bridge.testkit.visible` says.
Any exception the plugin raises is a finding of the check that ran it, so checks catch
``Exception`` and report it instead of stopping the suite.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from dativo_bridge.errors import DativoError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.settings import target_schema, validated
from dativo_bridge.testkit.data import EVOLVED, SIMPLE, all_types, evolved_batch, simple_batches
from dativo_bridge.testkit.report import (
    Budget,
    CheckFailed,
    Report,
    canonical,
    compare_rows,
    show_rows,
)
from dativo_bridge.testkit.visible import Observer, ReadBack

#: The writer checks, in the order they run.
WRITER_CHECKS = (
    "writer.open",
    "writer.invisible-before-commit",
    "writer.commit-exact",
    "writer.abort",
    "writer.schema-change",
    "writer.types",
)


def _rows(batches: Sequence[pa.RecordBatch], schema: pa.Schema) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in batches:
        rows.extend(pa.Table.from_batches([batch]).select(schema.names).to_pylist())
    return rows


def _visible_rows(table: pa.Table | None, names: Sequence[str]) -> list[dict[str, Any]]:
    if table is None or table.num_rows == 0:
        return []
    present = [n for n in names if n in table.column_names]
    rows = table.select(present).to_pylist()
    for row in rows:
        for n in names:
            row.setdefault(n, None)
    return rows


class _WriterSuite:
    def __init__(
        self,
        writer_cls: type[ArrowWriter],
        config: Mapping[str, Any],
        report: Report,
        read_back: ReadBack | None,
    ) -> None:
        self.cls = writer_cls
        self.raw_config = config
        self.config: dict[str, Any] = {}
        self.report = report
        self.read_back = read_back
        self.run = uuid.uuid4().hex[:8]
        self.observer: Observer | None = None

    def stream(self, label: str, schema: pa.Schema = SIMPLE) -> StreamInfo:
        return StreamInfo(f"testkit_{label}_{self.run}", schema, ("id",))

    def open(self) -> bool:
        name = "writer.open"
        try:
            schema = target_schema(self.cls.config_jsonschema)
            self.config = validated(schema, self.raw_config, plugin=self.cls.name)
            self.observer = Observer(self.cls, self.config, self.read_back)
            self.observer.baseline()
            writer = self.cls()
            writer.open(self.config, self.stream("open"))
            writer.close()
        except Exception as exc:
            self.report.fail(name, f"open/close raised {type(exc).__name__}: {exc}")
            return False
        self.report.passed(name, f"reading back through {self.observer.how}")
        return True

    def _seen(self, stream: StreamInfo, committed: Sequence[str] = ()) -> list[dict[str, Any]]:
        assert self.observer is not None
        return _visible_rows(self.observer.rows(stream, committed), stream.schema.names)

    def visibility(self) -> None:
        """invisible-before-commit and commit-exact, on one writer with two commits."""
        assert self.observer is not None
        before, exact = "writer.invisible-before-commit", "writer.commit-exact"
        stream = self.stream("commit")
        first, second = simple_batches(1, 3), simple_batches(100, 2)
        self.observer.baseline()
        early: list[str] = []
        committed: list[str] = []
        problems: list[str] = []
        writer = self.cls()
        try:
            writer.open(self.config, stream)
            for batch in first:
                writer.write(batch)
            if self.observer.sees_uncommitted:
                seen = self._seen(stream)
                if seen:
                    early.append(
                        f"{len(seen)} row(s) visible after write() and before commit(), "
                        f"first:\n{show_rows(seen)}"
                    )
            result = writer.commit()
            committed += result.paths
            problems = self._after_commit(stream, _rows(first, SIMPLE), result, 12, committed)
            for batch in second:
                writer.write(batch)
            if self.observer.sees_uncommitted:
                seen = self._seen(stream, committed)
                if len(seen) > 12:
                    early.append(
                        f"after a first commit, {len(seen) - 12} more row(s) visible before the "
                        "second commit()"
                    )
            result = writer.commit()
            committed += result.paths
            if not problems:
                problems = self._after_commit(
                    stream, _rows(first + second, SIMPLE), result, 8, committed
                )
        except CheckFailed as exc:
            problems = [str(exc)]
        except Exception as exc:
            problems = [f"write/commit raised {type(exc).__name__}: {exc}"]
        finally:
            try:
                writer.close()
            except Exception as exc:
                problems.append(f"close after commit raised {type(exc).__name__}: {exc}")
        left = self.observer.leftovers()
        if left:
            problems.append(f"temporary file(s) left after commit and close: {left[:5]}")
        if not self.observer.sees_uncommitted:
            self.report.skip(
                before,
                "nothing but CommitResult.paths can see the destination: give the "
                "writer a read_back hook or a local 'path' setting",
            )
        elif early:
            self.report.fail(before, "\n".join(early))
        else:
            self.report.passed(before)
        if problems:
            self.report.fail(exact, "\n".join(problems))
        else:
            self.report.passed(exact, "3 batches, commit, 2 batches, commit: exactly those rows")

    def _after_commit(
        self,
        stream: StreamInfo,
        want: list[dict[str, Any]],
        result: CommitResult,
        written: int,
        committed: Sequence[str],
    ) -> list[str]:
        problems = []
        if not isinstance(result, CommitResult):
            return [f"commit() returned {type(result).__name__}, not a CommitResult"]
        if result.rows not in (0, written):
            problems.append(f"CommitResult.rows is {result.rows}, but {written} rows were written")
        diff = compare_rows(want, self._seen(stream, committed), stream.schema.names)
        if diff:
            problems.append(f"after commit(): {diff}")
        assert self.observer is not None
        mismatch = self.observer.unreported(committed)
        if mismatch:
            problems.append(mismatch)
        return problems

    def abort(self) -> None:
        """Close without commit: nothing visible, no file left; committed rows stay."""
        assert self.observer is not None
        name = "writer.abort"
        if not self.observer.sees_uncommitted:
            self.report.skip(
                name,
                "nothing but CommitResult.paths can see the destination: give the writer "
                "a read_back hook or a local 'path' setting",
            )
            return
        problems = []
        try:
            stream = self.stream("abort")
            self.observer.baseline()
            writer = self.cls()
            writer.open(self.config, stream)
            for batch in simple_batches(1, 2):
                writer.write(batch)
            writer.close()
            seen = self._seen(stream)
            if seen:
                problems.append(
                    f"{len(seen)} row(s) visible after close() without commit(), first:\n"
                    f"{show_rows(seen)}"
                )
            left = self.observer.leftovers()
            if left:
                problems.append(f"file(s) left after close() without commit(): {left[:5]}")
            stream = self.stream("abort_after_commit")
            self.observer.baseline()
            writer = self.cls()
            writer.open(self.config, stream)
            [kept] = simple_batches(1, 1)
            writer.write(kept)
            committed = list(writer.commit().paths)
            for batch in simple_batches(50, 2):
                writer.write(batch)
            writer.close()
            diff = compare_rows(_rows([kept], SIMPLE), self._seen(stream, committed), SIMPLE.names)
            if diff:
                problems.append(f"commit, write, close without commit: {diff}")
            left = self.observer.leftovers()
            if left:
                problems.append(f"file(s) left after the uncommitted writes: {left[:5]}")
        except CheckFailed as exc:
            problems.append(str(exc))
        except Exception as exc:
            problems.append(f"raised {type(exc).__name__}: {exc}")
        if problems:
            self.report.fail(name, "\n".join(problems))
        else:
            self.report.passed(name, "nothing visible and nothing left after close without commit")

    def schema_change(self) -> None:
        """update_schema with one new nullable column: applied (the new values read back)
        or refused with a DativoError."""
        assert self.observer is not None
        name = "writer.schema-change"
        stream = self.stream("schema")
        [old] = simple_batches(1, 1)
        new = evolved_batch(10)
        self.observer.baseline()
        writer = self.cls()
        outcome: str | None = None
        try:
            writer.open(self.config, stream)
            writer.write(old)
            committed = list(writer.commit().paths)
            try:
                writer.update_schema(EVOLVED)
            except DativoError as exc:
                if not str(exc).strip():
                    raise CheckFailed(
                        "update_schema refused the change with an empty message"
                    ) from None
                outcome = f"refused clearly: {exc}"
            if outcome is None:
                writer.write(new)
                committed += writer.commit().paths
                want = [{**r, "note": None} for r in _rows([old], SIMPLE)] + _rows([new], EVOLVED)
                evolved = StreamInfo(stream.name, EVOLVED, ("id",))
                diff = compare_rows(want, self._seen(evolved, committed), EVOLVED.names)
                if diff:
                    raise CheckFailed(f"the change was accepted, but after commit(): {diff}")
                outcome = "applied: the new column's values read back"
        except CheckFailed as exc:
            self.report.fail(name, str(exc))
            return
        except Exception as exc:
            self.report.fail(
                name,
                f"raised {type(exc).__name__}: {exc} (refuse a change with a DativoError, "
                "e.g. WriteError, that says why)",
            )
            return
        finally:
            with contextlib.suppress(Exception):  # close errors belong to other checks
                writer.close()
        self.report.passed(name, outcome)

    def types(self) -> None:
        """One batch of every mapped type, committed and read back value by value."""
        assert self.observer is not None
        name = "writer.types"
        batch = all_types()
        stream = self.stream("types", batch.schema)
        self.observer.baseline()
        writer = self.cls()
        try:
            writer.open(self.config, stream)
            writer.write(batch)
            committed = list(writer.commit().paths)
            table = self.observer.rows(stream, committed)
        except CheckFailed as exc:
            self.report.fail(name, str(exc))
            return
        except Exception as exc:
            self.report.fail(name, f"raised {type(exc).__name__}: {exc}")
            return
        finally:
            with contextlib.suppress(Exception):  # close errors belong to other checks
                writer.close()
        problems = _type_problems(batch, table)
        if problems:
            self.report.fail(name, "\n".join(problems))
        else:
            self.report.passed(name, f"{batch.num_columns} columns, every value read back")


def _type_problems(batch: pa.RecordBatch, table: pa.Table | None) -> list[str]:
    if table is None or table.num_rows != batch.num_rows:
        got = 0 if table is None else table.num_rows
        return [f"wrote {batch.num_rows} rows of every type, {got} read back"]
    if "id" not in table.column_names:
        return ["the key column 'id' did not read back"]
    table = table.sort_by("id")
    problems = []
    for field in batch.schema:
        if field.name not in table.column_names:
            problems.append(f"column '{field.name}' ({field.type}) did not read back")
            continue
        want = batch.column(field.name).to_pylist()
        got = table.column(field.name).to_pylist()
        for row, (w, g) in enumerate(zip(want, got, strict=True)):
            if canonical(w) != canonical(g):
                stored = table.schema.field(field.name).type
                problems.append(
                    f"column '{field.name}' ({field.type}, read back as {stored}), row {row}: "
                    f"wrote {w!r}, read back {g!r}"
                )
                break
    return problems


def run_writer_checks(
    writer_cls: type[ArrowWriter],
    config: Mapping[str, Any],
    *,
    read_back: ReadBack | None = None,
    budget_seconds: float = 60.0,
    skip: Sequence[str] = (),
) -> Report:
    """Run the writer conformance checks (docs/testkit.md) on ``writer_cls``.

    Args:
        writer_cls: The ArrowWriter subclass.
        config: Its settings (validated and defaulted as a run does). Each check writes
            a stream of its own, named ``testkit_<check>_<random>``.
        read_back: ``read_back(config, stream) -> pa.Table | None``: every row visible in
            the destination for the stream. Without it, the writer's own ``read_back``
            classmethod, else the ``path`` setting watched as a local directory, else the
            files in ``CommitResult.paths``.
        budget_seconds: Stop starting checks after this long (what was not run is skipped).
        skip: Check names not to run (e.g. ``["writer.types"]``).

    Returns:
        The report; ``report.ok`` is False when a check failed.
    """
    started = time.monotonic()
    report = Report(f"{writer_cls.__module__}:{writer_cls.__qualname__}")
    budget = Budget(budget_seconds)
    suite = _WriterSuite(writer_cls, config, report, read_back)
    try:
        if not suite.open():
            return report
        steps = [
            (("writer.invisible-before-commit", "writer.commit-exact"), suite.visibility),
            (("writer.abort",), suite.abort),
            (("writer.schema-change",), suite.schema_change),
            (("writer.types",), suite.types),
        ]
        for names, step in steps:
            if all(n in skip for n in names):
                for n in names:
                    report.skip(n, "skipped on request")
            elif budget.exhausted():
                for n in names:
                    report.skip(n, f"the time budget ({budget.seconds:.0f} s) ran out")
            else:
                step()
        return report
    finally:
        report.seconds = time.monotonic() - started
