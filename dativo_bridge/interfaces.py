"""The two extension points: ArrowReader (a source) and ArrowWriter (a destination)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import pyarrow as pa

#: The version of the reader/writer interface this Dativo provides, ``MAJOR.MINOR``. A
#: plugin declares the one it was built for as ``interface_version`` (the default is this
#: one); a plugin built for another major is refused when loaded, one built for a newer
#: minor loads with a warning (it may call what this Dativo lacks). The major changes
#: only when a method's meaning or signature changes incompatibly.
INTERFACE_VERSION = "1.0"


@dataclass(frozen=True)
class StreamInfo:
    """What a reader says about one of its streams.

    Attributes:
        name: Stream id (e.g. ``public-orders``).
        schema: The Arrow schema of every batch of the stream.
        key_properties: Primary-key columns.
        replication_key: Column whose maximum is the incremental bookmark, if any.
        replication_method: ``FULL_TABLE`` or ``INCREMENTAL``.
    """

    name: str
    schema: pa.Schema
    key_properties: Sequence[str] = ()
    replication_key: str | None = None
    replication_method: str = "FULL_TABLE"

    def with_columns(self, columns: Sequence[str] | None) -> StreamInfo:
        """The same stream restricted to ``columns`` (None keeps all)."""
        if columns is None:
            return self
        wanted = set(columns)
        schema = pa.schema([f for f in self.schema if f.name in wanted])
        return StreamInfo(
            self.name,
            schema,
            tuple(self.key_properties),
            self.replication_key,
            self.replication_method,
        )


@dataclass
class CommitResult:
    """What a writer made durable in one commit."""

    paths: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    checksums: dict[str, str] = field(default_factory=dict)

    def merge(self, other: CommitResult) -> None:
        """Add another commit's results to this one."""
        self.paths.extend(other.paths)
        self.rows += other.rows
        self.bytes += other.bytes
        self.checksums.update(other.checksums)


class ArrowReader(abc.ABC):
    """A source of Arrow record batches; `make_tap` turns one into a Singer tap.

    Subclasses set ``name`` and ``config_jsonschema`` and implement ``discover`` and
    ``read``; ``open``, ``bookmark`` and ``close`` have sensible defaults.

    The bookmark contract (docs/writing-plugins.md): ``read`` resumes at ``>=`` the
    bookmark, so rows that arrived late with the bookmark's own key value are not lost
    (the rows of that one key value may come twice; destinations with keys drop them).
    A reader that sets ``is_sorted`` yields an incremental stream in replication-key order
    (checked: a key that goes backwards fails the run) and its bookmark advances after
    every batch; otherwise the bookmark advances only when the stream is read to its end.
    """

    name: ClassVar[str] = "arrow-reader"
    config_jsonschema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: Incremental streams come in replication-key order (singer-sdk's ``is_sorted``).
    is_sorted: ClassVar[bool] = False
    #: The reader interface this class was built for (see :data:`INTERFACE_VERSION`).
    interface_version: ClassVar[str] = INTERFACE_VERSION

    def __init__(self) -> None:
        self.config: Mapping[str, Any] = {}
        #: The pipeline's state id and the STATE the run starts from, set by the caller
        #: before ``open`` when known (``dativo run``; None: not known). A reader that
        #: keeps something per pipeline on the source (a replication slot) keys it by them.
        self.state_id: str | None = None
        self.start_state: Mapping[str, Any] | None = None

    def open(self, config: Mapping[str, Any]) -> None:
        """Receive the validated settings and connect to the source."""
        self.config = config

    @abc.abstractmethod
    def discover(self) -> Sequence[StreamInfo]:
        """Every stream this source offers, with its Arrow schema."""

    @abc.abstractmethod
    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        """Yield the stream's rows as batches of ``stream.schema`` (exactly its types).

        Args:
            stream: The stream (its schema may be a column subset of the discovered one).
            bookmark: For INCREMENTAL streams, the last committed bookmark: read rows whose
                replication key is ``>=`` it (a reader may skip the rows at the bookmark
                only if it can prove every one of them was delivered). None for a full
                read.
        """

    def bookmark(self, stream: StreamInfo, batch: pa.RecordBatch, previous: Any | None) -> Any:
        """The incremental bookmark after ``batch``: by default the max replication key.

        ``previous`` may be the value a resumed run read back from STATE (an ISO string
        for a date-time); it is compared as the key's type, so the bookmark never moves
        backwards.
        """
        if not stream.replication_key or batch.num_rows == 0:
            return previous
        import pyarrow.compute as pc  # here: a tap's --discover does not need it

        column = batch.column(stream.replication_key)
        top = pc.max(column)
        if not top.is_valid:
            return previous
        if previous is None:
            return top.as_py()
        from dativo_bridge.reading import comparable_bookmark

        before = comparable_bookmark(previous, column.type)
        if before is not None and before.is_valid and not pc.greater(top, before).as_py():
            return previous
        return top.as_py()

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        """About how many rows ``read(stream, bookmark)`` will yield, if the source can
        tell cheaply (a catalog statistic, a planner estimate, file sizes); None if not.

        Asked once per stream when a run starts reading it, for the percentage and ETA of
        the progress reports. Only an estimate: it must be fast and never fail the run
        (the runner treats an exception as None). Default: None.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArrowWriter(abc.ABC):
    """A destination for one stream's Arrow batches; `make_target` turns one into a target.

    The life of a writer: ``open`` once, ``write`` many times, ``commit`` whenever the
    caller needs what was written to be durable (and visible), ``close`` at the end.
    Rows written but not committed must never become visible.
    """

    name: ClassVar[str] = "arrow-writer"
    config_jsonschema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: The writer interface this class was built for (see :data:`INTERFACE_VERSION`).
    interface_version: ClassVar[str] = INTERFACE_VERSION

    def __init__(self) -> None:
        self.config: Mapping[str, Any] = {}
        self.stream: StreamInfo | None = None
        #: The pipeline's state id (``dativo run``: ``<env>:<tap>-to-<target>``), set by
        #: the caller before ``open`` when known. Writers that keep STATE with the data
        #: key it by this id, so two pipelines writing one destination never share it.
        self.state_id: str | None = None

    @property
    def publishes_at_end(self) -> bool:
        """True when nothing this writer writes may become visible before the end of the
        run (``overwrite``: the old data is replaced in one step when the input ends).

        While any writer of a run says so, the run makes no intermediate checkpoints:
        ``commit`` is called once, at the end, and only then is STATE released.
        """
        return False

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        """Prepare to receive batches of ``stream.schema``."""
        self.config = config
        self.stream = stream

    @abc.abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Accept one batch (not yet durable)."""

    @abc.abstractmethod
    def commit(self) -> CommitResult:
        """Make every batch written so far durable and visible; return what was committed."""

    def conformed(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """``batch`` with the columns and types of ``schema``, or a WriteError naming the
        stream (for writers used directly; StreamWriters already conforms batches, which
        then come with exactly ``schema`` and are passed through)."""
        if batch.schema == schema:
            return batch
        from dativo_bridge.conform import Mismatch, conform

        try:
            return conform(batch, schema)
        except Mismatch as exc:
            from dativo_bridge.errors import WriteError

            name = self.stream.name if self.stream else "?"
            raise WriteError(
                f"stream '{name}': batch does not match the stream schema: {exc}"
            ) from exc

    def adopt_schema(self, schema: pa.Schema) -> None:
        """Record that the stream now has ``schema`` (after a SCHEMA change)."""
        if self.stream is not None:
            self.stream = dataclasses.replace(self.stream, schema=schema)

    def stage_state(self, state: Any) -> None:  # noqa: B027 - optional hook
        """The Singer STATE the next ``commit`` makes durable.

        Called just before ``commit`` when a STATE is waiting for it. Writers that can
        store it atomically with the data (Iceberg: in the snapshot summary) do so, which
        makes a resumed run exactly once; the default ignores it.
        """

    @classmethod
    def recover_state(
        cls, config: Mapping[str, Any], state_id: str | None = None
    ) -> dict[str, Any] | None:
        """The STATE committed with the data by earlier runs of the pipeline ``state_id``,
        if this destination keeps it (state committed by other pipelines is ignored).

        `dativo run` resumes from it in preference to its state store. Default: None.
        """
        return None

    def update_schema(self, schema: pa.Schema) -> None:
        """A new SCHEMA for the stream arrived: later batches have ``schema``.

        The default accepts only an identical schema; writers that can evolve override it.
        """
        from dativo_bridge.errors import WriteError

        if self.stream is not None and schema != self.stream.schema:
            raise WriteError(f"{type(self).__name__} cannot change the schema of a stream")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; anything uncommitted is discarded."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
