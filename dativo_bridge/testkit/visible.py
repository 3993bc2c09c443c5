"""How the writer checks see what a writer made visible, independently of the writer.

In order of preference: a read-back hook (given to the suite, or a ``read_back``
classmethod the writer offers), a local directory (the writer's ``path`` setting) watched
before and after each step, or only the files a commit reports in ``CommitResult.paths``.
Files are read with pyarrow: Parquet, Arrow IPC (file or stream) and JSON lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.testkit.report import CheckFailed

#: ``read_back(config, stream) -> table or None``: every row visible in the destination
#: for ``stream`` (None when the stream does not exist there).
ReadBack = Callable[[Mapping[str, Any], StreamInfo], pa.Table | None]

_PARQUET = (".parquet", ".pq")
_ARROW = (".arrow", ".feather", ".ipc", ".arrows")
_JSONL = (".jsonl", ".ndjson", ".json")


def read_file(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """A data file as an Arrow table, by its extension (JSON lines parsed as ``schema``
    where pyarrow's JSON reader can, else with its inference)."""
    name = str(path).lower()
    try:
        if name.endswith(_PARQUET):
            return pq.read_table(path)
        if name.endswith(_ARROW):
            try:
                with ipc.open_file(path) as reader:
                    return reader.read_all()
            except pa.ArrowInvalid:
                with pa.OSFile(str(path)) as source, ipc.open_stream(source) as stream:
                    return stream.read_all()
        if name.endswith(_JSONL):
            if schema is not None:
                try:
                    options = pajson.ParseOptions(explicit_schema=schema)
                    return pajson.read_json(path, parse_options=options)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
            return pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CheckFailed(f"cannot read back {path}: {exc}") from None
    raise CheckFailed(
        f"cannot read back {path}: not Parquet, Arrow IPC or JSON lines by its name; give "
        "the writer a read_back hook (docs/testkit.md)"
    )


def concat(tables: Sequence[pa.Table]) -> pa.Table | None:
    """The tables as one (files written before and after a schema change differ)."""
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def local_path(value: Any) -> Path | None:
    """``value`` as a local directory path, if it is one (not an object store URL)."""
    if not isinstance(value, str) or not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        return None  # s3://, gs://, ...
    return Path(value)


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


class Directory:
    """A local destination directory, listed before and after each step of a check."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._baseline: dict[str, tuple[int, int]] = {}

    def _listing(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        if not self.root.exists():
            return found
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                found[str(path.relative_to(self.root))] = (stat.st_size, stat.st_mtime_ns)
        return found

    def baseline(self) -> None:
        """Remember what is there now: later calls see only what changed since."""
        self._baseline = self._listing()

    def changed(self) -> list[str]:
        """Files (relative paths) new or changed since the baseline."""
        return sorted(p for p, v in self._listing().items() if self._baseline.get(p) != v)

    def visible(self) -> list[str]:
        """New or changed files a reader of the directory would take as data."""
        return [p for p in self.changed() if not _hidden(Path(p))]

    def hidden(self) -> list[str]:
        """New or changed temporary files (names starting with '.' or '_')."""
        return [p for p in self.changed() if _hidden(Path(p))]

    def table(self, schema: pa.Schema | None = None) -> pa.Table | None:
        return concat([read_file(self.root / p, schema) for p in self.visible()])


class Observer:
    """What the writer checks can see of one destination.

    Args:
        writer_cls: The writer (its ``read_back`` classmethod is used if it has one).
        config: The writer's settings.
        read_back: A hook given to the suite; preferred over everything else.
    """

    def __init__(
        self, writer_cls: type, config: Mapping[str, Any], read_back: ReadBack | None
    ) -> None:
        self.config = config
        hook = read_back or getattr(writer_cls, "read_back", None)
        self.hook: ReadBack | None = hook if callable(hook) else None
        root = local_path(config.get("path"))
        self.directory = Directory(root) if root is not None and self.hook is None else None

    @property
    def how(self) -> str:
        if self.hook is not None:
            return "the read-back hook"
        if self.directory is not None:
            return f"the directory {self.directory.root}"
        return "CommitResult.paths only"

    @property
    def sees_uncommitted(self) -> bool:
        """Whether rows can be observed without a commit's report (before commit, abort)."""
        return self.hook is not None or self.directory is not None

    def baseline(self) -> None:
        if self.directory is not None:
            self.directory.baseline()

    def rows(self, stream: StreamInfo, committed: Sequence[str] = ()) -> pa.Table | None:
        """Every visible row of ``stream`` (new since the baseline, for a directory);
        ``committed`` are the paths the commits so far reported (used when nothing else
        can see the destination)."""
        if self.hook is not None:
            return self.hook(self.config, stream)
        if self.directory is not None:
            return self.directory.table(stream.schema)
        tables = []
        for uri in committed:
            path = local_path(uri)
            if path is None:
                raise CheckFailed(
                    f"cannot read back {uri} (not a local file): give the writer a read_back "
                    "hook (docs/testkit.md)"
                )
            tables.append(read_file(path, stream.schema))
        return concat(tables)

    def unreported(self, committed: Sequence[str]) -> str | None:
        """In a watched directory: what differs between the data files that appeared and
        the paths the commits reported (None when they agree, or nothing is watched)."""
        if self.directory is None:
            return None
        root = self.directory.root
        appeared = {(root / p).resolve() for p in self.directory.visible()}
        reported = set()
        for uri in committed:
            path = local_path(uri)
            if path is None:
                return None  # reported as URLs: nothing to compare with the directory
            reported.add(path.resolve())
        if appeared == reported:
            return None
        parts = []
        if appeared - reported:
            parts.append(f"not in CommitResult.paths: {sorted(map(str, appeared - reported))[:3]}")
        if reported - appeared:
            parts.append(f"reported but not there: {sorted(map(str, reported - appeared))[:3]}")
        return "the files that became visible and CommitResult.paths differ: " + "; ".join(parts)

    def leftovers(self) -> list[str]:
        """Temporary files left in a watched directory (empty for other destinations)."""
        return self.directory.hidden() if self.directory is not None else []
