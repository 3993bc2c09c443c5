"""The writer conformance checks: a correct directory writer passes, and each deliberately
broken one fails with the check that names its bug."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dativo_bridge.errors import WriteError
from dativo_bridge.interfaces import ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.testkit import run_writer_checks


class FolderWriter(ArrowWriter):
    """Correct: one hidden Parquet file per batch, renamed into place at commit."""

    name = "target-folder"
    config_jsonschema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    }

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.folder = Path(config["path"]) / stream.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: list[tuple[Path, Path, int]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        assert self.stream is not None
        batch = self.conformed(batch, self.stream.schema)
        name = f"part-{uuid.uuid4().hex}.parquet"
        temp = self.folder / f".{name}.tmp"
        pq.write_table(pa.Table.from_batches([batch]), temp)
        self.pending.append((temp, self.folder / name, batch.num_rows))

    def commit(self) -> CommitResult:
        result = CommitResult()
        for temp, final, rows in self.pending:
            os.replace(temp, final)
            result.paths.append(str(final))
            result.rows += rows
        self.pending = []
        return result

    def update_schema(self, schema: pa.Schema) -> None:
        self.adopt_schema(schema)

    def close(self) -> None:
        for temp, _final, _rows in getattr(self, "pending", []):
            temp.unlink(missing_ok=True)
        self.pending = []


class RefusesSchemaChanges(FolderWriter):
    """Correct as well: the base class refuses any schema change with a WriteError."""

    def update_schema(self, schema: pa.Schema) -> None:
        ArrowWriter.update_schema(self, schema)


class VisibleBeforeCommit(FolderWriter):
    """Writes straight to the final name."""

    def write(self, batch: pa.RecordBatch) -> None:
        super().write(batch)
        temp, final, rows = self.pending.pop()
        os.replace(temp, final)
        self.published = [*getattr(self, "published", []), (final, rows)]

    def commit(self) -> CommitResult:
        published, self.published = getattr(self, "published", []), []
        return CommitResult([str(p) for p, _ in published], sum(r for _, r in published))


class DropsABatch(FolderWriter):
    """Forgets every second batch."""

    def write(self, batch: pa.RecordBatch) -> None:
        self.count = getattr(self, "count", 0) + 1
        if self.count % 2 == 0:
            return
        super().write(batch)


class LeavesLeftovers(FolderWriter):
    """Close without commit leaves its temporary files behind."""

    def close(self) -> None:
        self.pending = []


class LosesNewColumns(FolderWriter):
    """Accepts a schema change and writes the old columns only."""

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        self.first = stream.schema

    def write(self, batch: pa.RecordBatch) -> None:
        super().write(pa.Table.from_batches([batch]).select(self.first.names).to_batches()[0])

    def update_schema(self, schema: pa.Schema) -> None:
        pass


class ReportsNoPaths(FolderWriter):
    """Publishes its files but says nothing of them in CommitResult.paths."""

    def commit(self) -> CommitResult:
        result = super().commit()
        return CommitResult(rows=result.rows)


class CrashesOnSchemaChange(FolderWriter):
    def update_schema(self, schema: pa.Schema) -> None:
        raise KeyError("note")


class NaiveTimestamps(FolderWriter):
    """Drops the time zone of a column named ts: it comes back naive."""

    def write(self, batch: pa.RecordBatch) -> None:
        columns = [
            c.cast(pa.timestamp("us")) if f.name == "ts" else c
            for f, c in zip(batch.schema, batch.columns, strict=True)
        ]
        fields = [pa.field(f.name, c.type) for f, c in zip(batch.schema, columns, strict=True)]
        naive = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))
        assert self.stream is not None
        name = f"part-{uuid.uuid4().hex}.parquet"
        temp = self.folder / f".{name}.tmp"
        pq.write_table(pa.Table.from_batches([naive]), temp)
        self.pending.append((temp, self.folder / name, batch.num_rows))


@pytest.mark.parametrize("writer", [FolderWriter, RefusesSchemaChanges])
def test_a_correct_writer_passes_every_check(writer: type[ArrowWriter], tmp_path: Path) -> None:
    report = run_writer_checks(writer, {"path": str(tmp_path)})
    report.assert_ok()
    assert [r.status for r in report.results] == ["passed"] * 6, report.text()
    change = next(r for r in report.results if r.name == "writer.schema-change")
    if writer is RefusesSchemaChanges:
        assert change.detail.startswith("refused clearly: RefusesSchemaChanges cannot change")
    else:
        assert change.detail.startswith("applied")


@pytest.mark.parametrize(
    ("writer", "checks", "words"),
    [
        (
            VisibleBeforeCommit,
            {"writer.invisible-before-commit", "writer.abort"},
            "before commit()",
        ),
        (DropsABatch, {"writer.commit-exact", "writer.schema-change"}, "expected row(s) missing"),
        (LeavesLeftovers, {"writer.abort"}, "file(s) left after close() without commit()"),
        (LosesNewColumns, {"writer.schema-change"}, "the change was accepted"),
        (ReportsNoPaths, {"writer.commit-exact"}, "not in CommitResult.paths"),
        (CrashesOnSchemaChange, {"writer.schema-change"}, "raised KeyError"),
        (NaiveTimestamps, {"writer.types"}, "column 'ts'"),
    ],
)
def test_a_broken_writer_fails_the_check_that_names_its_bug(
    writer: type[ArrowWriter], checks: set[str], words: str, tmp_path: Path
) -> None:
    report = run_writer_checks(writer, {"path": str(tmp_path)})
    assert report.failed_names == checks, report.text()
    first = next(r for r in report.results if r.status == "failed")
    assert words in first.detail, report.text()


def test_a_dropped_batch_shows_the_missing_rows(tmp_path: Path) -> None:
    report = run_writer_checks(DropsABatch, {"path": str(tmp_path)})
    exact = next(r for r in report.results if r.name == "writer.commit-exact")
    # Batches of ids 1-4, 5-8, 9-12: the second is dropped.
    assert "expected 12 row(s), found 8" in exact.detail
    assert "id=5, name='row 5 é'" in exact.detail


def test_without_a_way_to_look_the_uncommitted_checks_are_skipped(tmp_path: Path) -> None:
    class NoPathSetting(FolderWriter):
        config_jsonschema: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"root": {"type": "string"}},
        }

        def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
            super().open({"path": config["root"]}, stream)

    report = run_writer_checks(NoPathSetting, {"root": str(tmp_path)})
    report.assert_ok()
    statuses = {r.name: r.status for r in report.results}
    assert statuses["writer.invisible-before-commit"] == "skipped"
    assert statuses["writer.abort"] == "skipped"
    assert statuses["writer.commit-exact"] == "passed"  # read back from CommitResult.paths


def test_a_read_back_hook_is_used_and_catches_what_it_sees(tmp_path: Path) -> None:
    seen: list[str] = []

    def read_back(config: Mapping[str, Any], stream: StreamInfo) -> pa.Table | None:
        seen.append(stream.name)
        files = sorted(Path(config["path"], stream.name).glob("part-*.parquet"))
        return pa.concat_tables([pq.read_table(f) for f in files]) if files else None

    report = run_writer_checks(DropsABatch, {"path": str(tmp_path)}, read_back=read_back)
    assert "writer.commit-exact" in report.failed_names
    assert seen


def test_a_refusal_must_be_a_dativo_error_with_words(tmp_path: Path) -> None:
    class Silent(FolderWriter):
        def update_schema(self, schema: pa.Schema) -> None:
            raise WriteError("  ")

    report = run_writer_checks(Silent, {"path": str(tmp_path)})
    assert report.failed_names == {"writer.schema-change"}


def test_the_types_check_writes_every_type_the_shared_test_cases_hold() -> None:
    from dativo_bridge.testkit.data import all_types
    from tests.cases import ALL_TYPES

    mine = all_types()
    assert [(f.name, f.type) for f in mine.schema] == [(f.name, f.type) for f in ALL_TYPES.schema]
    assert mine.to_pylist() == ALL_TYPES.to_pylist() or all(
        str(a) == str(b) for a, b in zip(mine.to_pylist(), ALL_TYPES.to_pylist(), strict=True)
    )  # NaN != NaN: compare the rows' text when equality cannot hold
