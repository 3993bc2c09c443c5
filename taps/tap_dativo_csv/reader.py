"""CsvReader: CSV files (plain or gzip) streamed into Arrow by pyarrow's C++ CSV reader.

Every error names the stream, the file and, where it can, the line and the column
(tap_dativo_csv.diagnose finds them after pyarrow failed). A file is checked against the stream's
columns by its header line before it is read: with an inferred schema, a column the schema
lacks is an error (types were inferred from the first file only); with a declared schema it
is ignored with a warning. A column missing from a file reads as null.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.schema import JSON_TYPE, jsonschema_to_arrow
from dativo_bridge.settings import with_defaults
from tap_dativo_csv.diagnose import explain, header, line_of_row
from tap_dativo_csv.settings import CONFIG_JSONSCHEMA

logger = logging.getLogger("dativo.csv")

SOURCE_FILE = "_sdc_source_file"
MODIFIED_AT = "_sdc_modified_at"
#: The columns the reader adds to every stream.
_OWN_COLUMNS = (
    pa.field(SOURCE_FILE, pa.string()),
    pa.field(MODIFIED_AT, pa.timestamp("us", tz="UTC")),
)


def _without_own_columns(stream: str, schema: pa.Schema) -> pa.Schema:
    """A declared schema without the reader's own columns, which a schema copied from the
    discovered catalog lists; declared with another type, they are refused."""
    own = {f.name: f.type for f in _OWN_COLUMNS}
    for field in schema:
        if field.name in own and field.type != own[field.name]:
            raise ConfigError(
                f"stream '{stream}': '{field.name}' is a column the CSV reader adds itself "
                f"({own[field.name]}); remove it from the stream's schema"
            )
    return pa.schema([f for f in schema if f.name not in own])


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class CsvReader(ArrowReader):
    """Reads CSV files per stream; types come from a declared schema or one sample.

    Each row carries ``_sdc_source_file`` and ``_sdc_modified_at``; the latter is the
    replication key, so an incremental run reads only files modified after the bookmark.
    """

    name = "tap-dativo-csv"
    config_jsonschema = CONFIG_JSONSCHEMA
    is_sorted = True  # files in modification-time order; the bookmark moves per mtime group

    def open(self, config: Mapping[str, Any]) -> None:
        config = with_defaults(self.config_jsonschema, config)
        super().open(config)
        files = config.get("files")
        if not files:
            raise ConfigError("tap-dativo-csv needs 'files': a list of {stream, path}")
        self._specs = {spec["stream"]: spec for spec in files}
        self._block = int(float(config["block_size_mb"]) * 1024 * 1024)

    def _paths(self, spec: Mapping[str, Any]) -> list[Path]:
        pattern = os.path.expanduser(str(spec["path"]))
        base = self.config.get("base_dir")
        if base and not os.path.isabs(pattern):
            pattern = os.path.join(str(base), pattern)
        paths = [Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, str(p)))

    def _options(self, spec: Mapping[str, Any]) -> tuple[pcsv.ReadOptions, pcsv.ParseOptions]:
        read = pcsv.ReadOptions(
            block_size=self._block,
            encoding=spec.get("encoding") or self.config["encoding"],
        )
        parse = pcsv.ParseOptions(delimiter=spec.get("delimiter") or self.config["delimiter"])
        return read, parse

    def _null_values(self) -> list[str]:
        return list(self.config["null_values"])

    def discover(self) -> Sequence[StreamInfo]:
        streams = []
        for name, spec in self._specs.items():
            if spec.get("schema"):
                schema = _without_own_columns(name, jsonschema_to_arrow(spec["schema"]))
            else:
                schema = self._infer(name, spec)
            for own in _OWN_COLUMNS:
                schema = schema.append(own)
            streams.append(
                StreamInfo(
                    name,
                    schema,
                    tuple(spec.get("key_properties") or ()),
                    MODIFIED_AT,
                    "INCREMENTAL",
                )
            )
        return streams

    def _infer(self, name: str, spec: Mapping[str, Any]) -> pa.Schema:
        paths = self._paths(spec)
        if not paths:
            raise ConfigError(
                f"stream '{name}': no file matches {spec['path']!r}, and no 'schema' is declared "
                "to use instead of inferring one"
            )
        read, parse = self._options(spec)
        convert = pcsv.ConvertOptions(null_values=self._null_values(), strings_can_be_null=True)
        try:
            with pcsv.open_csv(
                pa.input_stream(str(paths[0]), compression="detect"),
                read_options=read,
                parse_options=parse,
                convert_options=convert,
            ) as reader:
                schema: pa.Schema = reader.schema
        except (pa.ArrowInvalid, OSError) as exc:
            where = explain(paths[0], read.encoding, parse.delimiter, exc)
            raise ReadError(
                f"stream '{name}', file {paths[0]}, {where} (while inferring the schema)"
            ) from None
        # Singer date-times carry microseconds: inferred seconds widen to that.
        schema = pa.schema(
            [
                pa.field(f.name, pa.timestamp("us", tz=f.type.tz))
                if pa.types.is_timestamp(f.type)
                else f
                for f in schema
            ]
        )
        logger.info(
            "stream '%s': types inferred once from %s: %s",
            name,
            paths[0],
            ", ".join(f"{f.name}:{f.type}" for f in schema),
        )
        return schema

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        spec = self._specs[stream.name]
        since = _as_datetime(bookmark)
        data_fields = [f for f in stream.schema if f.name not in (SOURCE_FILE, MODIFIED_AT)]
        parse_types = {
            f.name: (pa.string() if f.type == JSON_TYPE else f.type) for f in data_fields
        }
        read, parse = self._options(spec)
        groups = self._groups(spec, since)
        for modified, paths in sorted(groups.items()):
            for path in paths:
                yield from self._read_file(stream, path, modified, parse_types, read, parse)
            # The bookmark moves past a modification time only once all its files are read.
            self._done[stream.name] = modified
            yield pa.RecordBatch.from_pylist([], schema=stream.schema)

    def _groups(
        self, spec: Mapping[str, Any], since: dt.datetime | None
    ) -> dict[dt.datetime, list[Path]]:
        """The files a read from the bookmark ``since`` reads, by modification time."""
        groups: dict[dt.datetime, list[Path]] = {}
        for path in self._paths(spec):
            modified = _EPOCH + dt.timedelta(microseconds=path.stat().st_mtime_ns // 1000)
            if since is None or modified > since:
                groups.setdefault(modified, []).append(path)
        return groups

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        """About how many rows a read from ``bookmark`` yields, from file sizes: the bytes
        of the files it reads (a gzip file's uncompressed size from its trailer) divided by
        the bytes per line of the first 64 KiB of the first one, less one header line per
        file. A field with line breaks in it makes it an overestimate."""
        spec = self._specs.get(stream.name)
        if spec is None:
            return None
        paths = [p for group in self._groups(spec, _as_datetime(bookmark)).values() for p in group]
        if not paths:
            return 0
        try:
            total = sum(_text_bytes(p) for p in paths)
            with pa.input_stream(str(paths[0]), compression="detect") as sample_file:
                sample = sample_file.read(64 * 1024)
        except (OSError, pa.ArrowInvalid):
            return None
        lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") or not sample else 1)
        if lines == 0:
            return None
        return max(0, round(total / (len(sample) / lines)) - len(paths))

    def _read_file(
        self,
        stream: StreamInfo,
        path: Path,
        modified: dt.datetime,
        parse_types: dict[str, pa.DataType],
        read: pcsv.ReadOptions,
        parse: pcsv.ParseOptions,
    ) -> Iterator[pa.RecordBatch]:
        self._check_header(stream, path, parse_types, read, parse)
        convert = pcsv.ConvertOptions(
            column_types=parse_types,
            include_columns=list(parse_types),
            null_values=self._null_values(),
            strings_can_be_null=True,
            include_missing_columns=True,
        )
        rows = 0
        try:
            reader = pcsv.open_csv(
                pa.input_stream(str(path), compression="detect"),
                read_options=read,
                parse_options=parse,
                convert_options=convert,
            )
            with reader:
                for batch in reader:
                    self._check_nulls(stream, batch, path, rows, read, parse)
                    rows += batch.num_rows
                    yield self._finish_batch(stream, batch, path, modified)
        except (pa.ArrowInvalid, OSError) as exc:
            where = explain(path, read.encoding, parse.delimiter, exc)
            raise ReadError(f"stream '{stream.name}', file {path}, {where}") from None

    def _check_header(
        self,
        stream: StreamInfo,
        path: Path,
        parse_types: Mapping[str, pa.DataType],
        read: pcsv.ReadOptions,
        parse: pcsv.ParseOptions,
    ) -> None:
        """The file's columns against the stream's (see the module docstring)."""
        try:
            names = header(path, read.encoding, parse.delimiter)
        except OSError as exc:
            where = explain(path, read.encoding, parse.delimiter, exc)
            raise ReadError(f"stream '{stream.name}', file {path}, {where}") from None
        if names is None:
            raise ReadError(
                f"stream '{stream.name}', file {path}: the file is empty (no header line); "
                "a file without rows needs at least its header"
            )
        extra = [n for n in names if n not in parse_types]
        if extra and not self._specs[stream.name].get("schema"):
            raise ReadError(
                f"stream '{stream.name}', file {path}, line 1: column(s) "
                f"{', '.join(repr(n) for n in extra)} are not in the stream's schema, which "
                "was inferred from the first file; declare a 'schema' with every column (or "
                "read such files as another stream)"
            )
        if extra:
            logger.warning(
                "stream '%s', file %s: column(s) %s are not in the declared schema and are "
                "not read",
                stream.name,
                path,
                ", ".join(repr(n) for n in extra),
            )
        missing = [n for n in parse_types if n not in names]
        not_nullable = [n for n in missing if not stream.schema.field(n).nullable]
        if not_nullable:
            raise ReadError(
                f"stream '{stream.name}', file {path}, line 1: no column "
                f"{', '.join(repr(n) for n in not_nullable)}, which may not be null"
            )
        if missing:
            logger.warning(
                "stream '%s', file %s: no column %s; its values are null in this file",
                stream.name,
                path,
                ", ".join(repr(n) for n in missing),
            )

    def _check_nulls(
        self,
        stream: StreamInfo,
        batch: pa.RecordBatch,
        path: Path,
        rows_before: int,
        read: pcsv.ReadOptions,
        parse: pcsv.ParseOptions,
    ) -> None:
        """A null (a ``null_values`` entry) in a column that may not be null is an error."""
        for f in stream.schema:
            if f.nullable or f.name not in batch.schema.names:
                continue
            column = batch.column(f.name)
            if not column.null_count:
                continue
            import pyarrow.compute as pc  # here: --discover does not need it

            row = rows_before + int(pc.index(column.is_null(), True).as_py())
            line = line_of_row(path, read.encoding, parse.delimiter, row)
            at = f"line {line}, " if line is not None else ""
            raise ReadError(
                f"stream '{stream.name}', file {path}, {at}column '{f.name}': a null value "
                f"(one of null_values {self._null_values()!r}) in a column that may not be null"
            )

    def _finish_batch(
        self, stream: StreamInfo, batch: pa.RecordBatch, path: Path, modified: dt.datetime
    ) -> pa.RecordBatch:
        columns = []
        for f in stream.schema:
            if f.name == SOURCE_FILE:
                columns.append(pa.array([str(path)] * batch.num_rows, pa.string()))
            elif f.name == MODIFIED_AT:
                columns.append(pa.array([modified] * batch.num_rows, f.type))
            elif f.type == JSON_TYPE:
                columns.append(pa.ExtensionArray.from_storage(JSON_TYPE, batch.column(f.name)))
            else:
                columns.append(batch.column(f.name))
        return pa.RecordBatch.from_arrays(columns, schema=stream.schema)

    @property
    def _done(self) -> dict[str, dt.datetime]:
        if not hasattr(self, "_done_marks"):
            self._done_marks: dict[str, dt.datetime] = {}
        return self._done_marks

    def bookmark(self, stream: StreamInfo, batch: pa.RecordBatch, previous: Any | None) -> Any:
        done = self._done.get(stream.name)
        if done is None:
            return previous
        return done.isoformat()


def _text_bytes(path: Path) -> int:
    """The size of a file's text: a gzip file's uncompressed size (its trailer holds it
    modulo 4 GiB, so it is taken as at least the compressed size), else its size."""
    size = path.stat().st_size
    with path.open("rb") as file:
        if file.read(2) != b"\x1f\x8b" or size < 18:
            return size
        file.seek(-4, os.SEEK_END)
        return max(size, int.from_bytes(file.read(4), "little"))


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
