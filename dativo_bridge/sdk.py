"""make_tap / make_target: an ArrowReader or ArrowWriter as a full singer-sdk plugin.

The SDK provides the CLI, settings, catalog, selection and state handling; Dativo
replaces its per-record paths with batch paths (encode on the tap side, decode on the
target side). A tap's stream maps and flattening run on the batches too
(dativo_bridge.maps); only a stream whose map has no Arrow form takes the SDK's row path.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import decimal
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, ClassVar, NoReturn, cast

import click
from singer_sdk import Stream, Tap, Target
from singer_sdk.about import AboutInfo, TextFormatter
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TargetCapabilities,
)
from singer_sdk.plugin_base import SingerCommand
from singer_sdk.singerlib import SchemaMessage
from singer_sdk.singerlib.encoding.base import GenericSingerReader

from dativo_bridge.batch_settings import BATCH_CONFIG_SCHEMA, BatchSettings
from dativo_bridge.deferred import DeferredClass
from dativo_bridge.errors import DativoError
from dativo_bridge.settings import TARGET_COMMON_SETTINGS as TARGET_COMMON_SETTINGS
from dativo_bridge.settings import (
    check_target_settings,
    target_batch_rows,
    target_schema,
    validated,
    with_settings,
)

# What only reading or writing needs (pyarrow, the codecs, stream maps, the redactor) is
# imported where it is first used: ``--about`` imports no more than singer-sdk and the
# plugin's settings (tests/unit/test_startup_imports.py).
if TYPE_CHECKING:
    import pyarrow as pa

    from dativo_bridge.batch_files import BatchFileWriter
    from dativo_bridge.delivery import StreamStats, StreamWriters
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter, StreamInfo
    from dativo_bridge.maps import MappedStream, StreamMaps, StreamPlan
    from dativo_bridge.metrics import RunMetrics


def write_bytes(data: bytes) -> None:
    """Write raw bytes to stdout after whatever text the SDK already wrote."""
    out = sys.stdout
    out.flush()
    raw = getattr(out, "buffer", None)
    if raw is not None:
        raw.write(data)
        raw.flush()
    else:
        out.write(data.decode("utf-8"))
        out.flush()


def _measured(
    stats: StreamStats | None, items: Iterable[tuple[pa.RecordBatch, Any]]
) -> Iterator[tuple[pa.RecordBatch, Any]]:
    """``items`` (a reader's batches), counted into ``stats`` when metrics are on: rows,
    Arrow bytes, batches, seconds waiting for the reader (read) and seconds the tap spends
    on each batch before asking for the next (write: encoding and printing it)."""
    if stats is None:
        yield from items
        return
    if stats.started is None:
        stats.started = time.monotonic()
    iterator = iter(items)
    try:
        while True:
            began = time.monotonic()
            try:
                item = next(iterator)
            except StopIteration:
                return
            got = time.monotonic()
            stats.read_seconds += got - began
            if item[0].num_rows:
                stats.rows += item[0].num_rows
                stats.bytes += item[0].nbytes
                stats.batches += 1
            yield item
            stats.write_seconds += time.monotonic() - got
    finally:
        stats.finished = time.monotonic()


class ArrowStream(Stream):
    """A singer-sdk stream whose rows come from an ArrowReader as batches."""

    @property
    def is_sorted(self) -> bool:
        """The reader's declaration (checked on every path; see dativo_bridge.reading)."""
        return bool(self._arrow_tap.reader_class.is_sorted)

    def __init__(self, tap: ArrowTap, info: StreamInfo) -> None:
        from dativo_bridge.schema import arrow_to_jsonschema

        self.info = info
        super().__init__(tap, schema=arrow_to_jsonschema(info.schema), name=info.name)
        self.primary_keys = list(info.key_properties)
        self.replication_key = info.replication_key
        self._arrow_tap = tap
        self._plan: StreamPlan | None = None
        self._plan_made = False

    def _selected_info(self) -> StreamInfo:
        """The stream as the catalog has it: selected columns, replication method and key
        (a catalog may make a discovered FULL_TABLE stream INCREMENTAL, or change keys)."""
        names = [n for n in self.info.schema.names if self.mask.get(("properties", n), True)]
        info = self.info.with_columns(names)
        info = dataclasses.replace(
            info,
            replication_method=self.replication_method,
            replication_key=self.replication_key or None,
            key_properties=tuple(self.primary_keys or ()),
        )
        if info.replication_method != "LOG_BASED":
            return info
        from dativo_bridge.reading import stream_to_read

        info = stream_to_read(self._arrow_tap.reader, info)  # the reader's change form
        self.replication_key = info.replication_key  # its LSN column: the bookmark
        return info

    def _increment_stream_state(self, latest_record: Any, *, context: Any = None) -> None:
        if self.replication_method != "LOG_BASED":  # the SDK keeps no LOG_BASED bookmark
            super()._increment_stream_state(latest_record, context=context)
            return
        state = self.get_context_state(context)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = latest_record[self.replication_key]

    def arrow_plan(self) -> StreamPlan | None:
        """The stream's stream maps and flattening on Arrow batches, or None when an
        expression needs singer-sdk's row path (then this stream takes it, with a warning).
        """
        if not self._plan_made:
            from dativo_bridge.maps import UnsupportedMap

            self._plan_made = True
            try:
                self._plan = self._arrow_tap.arrow_maps.plan(self._selected_info())
            except UnsupportedMap as exc:
                self.logger.warning(
                    "%s: stream '%s' runs on singer-sdk's row path, where exact types are "
                    "not kept (docs/stream-maps.md)",
                    exc,
                    self.name,
                )
                self._plan = None
        return self._plan

    def _fast_path(self) -> bool:
        return self.arrow_plan() is not None

    def _mapped(self, batch: pa.RecordBatch) -> list[tuple[MappedStream, pa.RecordBatch]]:
        """Each output stream's rows of a source batch (the batch itself without maps)."""
        plan = self.arrow_plan()
        assert plan is not None
        if plan.identity:
            return [(plan.outputs[0], batch)]
        return [(out, out.apply(batch)) for out in plan.outputs]

    def _generate_schema_messages(self) -> Generator[SchemaMessage, None, None]:
        plan = self.arrow_plan()
        if plan is None:
            yield from super()._generate_schema_messages()
            return
        # The SDK's Schema object drops keys it does not know (precision, scale,
        # x-arrow-type); the batch path sends the full mapping instead.
        bookmark_keys = [self.replication_key] if self.replication_key else None
        for out in plan.outputs:
            yield SchemaMessage(
                out.name, out.json_schema, list(out.info.key_properties), bookmark_keys
            )

    def get_batch_config(self, config: Mapping[str, Any]) -> Any:
        """Dativo's own BATCH settings (arrow, parquet or jsonl files).

        A stream whose maps need singer-sdk's row path sends RECORD messages instead: the
        SDK's BATCH messages would carry its rows unmapped.
        """
        raw = config.get("batch_config")
        if raw and self.arrow_plan() is None:
            self.logger.warning(
                "stream '%s': its stream maps run on singer-sdk's row path, so it is sent as "
                "RECORD messages, not BATCH files",
                self.name,
            )
            return None
        return BatchSettings.parse(raw) if raw else None

    def _sync_batches(self, batch_config: Any, context: Mapping[str, Any] | None = None) -> None:
        """BATCH files of up to ``batch_size`` rows, each followed by the STATE it covers."""
        import orjson

        from dativo_bridge.batch_files import BatchFileWriter
        from dativo_bridge.reading import checked_batches
        from dativo_bridge.state import jsonable

        settings: BatchSettings = batch_config
        info = self._selected_info()
        reader = self._arrow_tap.reader
        incremental = self.replication_method in ("INCREMENTAL", "LOG_BASED") and bool(
            self.replication_key
        )
        plan = self.arrow_plan()
        assert plan is not None  # the SDK's own BATCH path would not map the rows
        writer_names = [out.name for out in plan.outputs]
        self._write_starting_replication_value(context)
        bookmark = self._start_bookmark(context)
        covered = bookmark
        writers: dict[int, BatchFileWriter] = {}

        def advance(value: Any) -> None:
            if incremental and self.replication_key and value is not None:
                self._increment_stream_state(
                    {self.replication_key: jsonable(value)}, context=context
                )
                self.state_manager.is_flushed = False

        def emit(name: str, file: BatchFileWriter) -> None:
            uri = file.close()
            message = {
                "type": "BATCH",
                "stream": name,
                "encoding": settings.encoding(),
                "manifest": [uri],
            }
            write_bytes(orjson.dumps(message) + b"\n")
            counter.increment()
            self.get_record_counter().increment(file.rows)

        with self.get_batch_counter() as counter:
            try:
                for batch, released in _measured(
                    self._arrow_tap.stream_stats(self.name),
                    checked_batches(reader, info, bookmark, truncates=False),
                ):
                    if batch.num_rows:
                        for index, (out, mapped) in enumerate(self._mapped(batch)):
                            if not mapped.num_rows:
                                continue
                            if index not in writers:
                                writers[index] = BatchFileWriter(
                                    settings, out.name, out.info.schema
                                )
                            writers[index].write(mapped)
                    if released is not None:
                        bookmark = released
                    for index, writer in list(writers.items()):
                        if writer.rows >= settings.batch_size:
                            emit(writer_names[index], writer)
                            del writers[index]
                    if not writers and bookmark != covered:
                        # Every row up to this bookmark is in an emitted file.
                        covered = bookmark
                        advance(bookmark)
                        self._write_state_message()
                for index in sorted(writers):
                    emit(writer_names[index], writers.pop(index))
            except BaseException:
                for writer in writers.values():
                    writer.abort()
                raise
        if bookmark != covered:
            advance(bookmark)
        if not context:
            self._finalize_state(self.stream_state)
        self._write_state_message()

    def get_records(self, context: Mapping[str, Any] | None) -> Iterable[dict[str, Any]]:
        """Rows as dicts: used only when stream maps need the SDK's record path.

        Values are given as the stream's SCHEMA describes them where Python objects would
        be serialised otherwise: binary columns as base64 text (``contentEncoding``), JSON
        columns as the JSON value (numbers exact, as Decimal), not as its text.
        """
        import pyarrow as pa

        from dativo_bridge.reading import checked_batches
        from dativo_bridge.schema import JSON_TYPE

        info = self._selected_info()
        bookmark = self._start_bookmark(context)
        binary = [
            f.name
            for f in info.schema
            if pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type)
            or pa.types.is_fixed_size_binary(f.type)
        ]
        json_columns = [f.name for f in info.schema if f.type == JSON_TYPE]
        for batch, _ in _measured(
            self._arrow_tap.stream_stats(self.name),
            checked_batches(self._arrow_tap.reader, info, bookmark, truncates=False),
        ):
            rows = batch.to_pylist()
            for name in binary:
                for row in rows:
                    value = row.get(name)
                    if value is not None:
                        row[name] = base64.b64encode(value).decode("ascii")
            for name in json_columns:
                for row in rows:
                    value = row.get(name)
                    if value is not None:
                        row[name] = json.loads(value, parse_float=decimal.Decimal)
            yield from rows

    def _start_bookmark(self, context: Mapping[str, Any] | None) -> Any:
        if self.replication_method == "LOG_BASED":
            return self.get_context_state(context).get("replication_key_value")
        if self.replication_method != "INCREMENTAL" or not self.replication_key:
            return None
        return self.get_starting_replication_key_value(context)

    def _sync_records(  # type: ignore[override]
        self, context: dict | None = None, *, write_messages: bool = True
    ) -> Generator[dict, Any, Any]:
        if not (write_messages and self._fast_path()):
            yield from super()._sync_records(context, write_messages=write_messages)
            return
        from dativo_bridge.codecs.encode import encode_records
        from dativo_bridge.reading import checked_batches
        from dativo_bridge.state import jsonable

        info = self._selected_info()
        reader = self._arrow_tap.reader
        self._write_starting_replication_value(context)
        bookmark = self._start_bookmark(context)
        limit = self.ABORT_AT_RECORD_COUNT
        sent = 0
        version = (
            self._stream_version
            if self.emit_activate_version_messages and self.replication_method == "FULL_TABLE"
            else None
        )
        record_counter = self.get_record_counter()
        with record_counter, self.get_sync_timer():
            for batch, released in _measured(
                self._arrow_tap.stream_stats(self.name),
                checked_batches(reader, info, bookmark, truncates=False),
            ):
                over = limit is not None and sent + batch.num_rows > limit
                if over:
                    batch = batch.slice(0, max(0, cast(int, limit) - sent))
                if batch.num_rows:
                    for out, mapped in self._mapped(batch):
                        if mapped.num_rows:
                            write_bytes(encode_records(mapped, out.name, version=version))
                    sent += batch.num_rows
                    record_counter.increment(batch.num_rows)
                    self.state_manager.is_flushed = False
                if released is not None and self.replication_key and not over:
                    self._increment_stream_state(
                        {self.replication_key: jsonable(released)}, context=context
                    )
                    self.state_manager.is_flushed = False
                if over:
                    self._check_max_record_limit(sent)
                self._write_state_message()
        if not context:
            self._finalize_state(self.stream_state)
        self._write_state_message()


def _finish_singer_metrics(
    metrics: RunMetrics,
    streams: Mapping[str, StreamStats],
    began: float,
    error: BaseException | None,
    plugin: Any,
) -> None:
    """A Singer plugin's last metrics: status from how it ended, the plugin's ``retries``
    and, for a reader with a replication slot, its lag (never raises)."""
    status = "success"
    if error is not None:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        if isinstance(error, SystemExit) and not error.code:
            status = "success"
    retries = getattr(plugin, "retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool):
        retries = 0
    lag = None
    measure = getattr(plugin, "replication_lag", None)
    if callable(measure):
        try:
            found = measure()
        except Exception as exc:
            logging.getLogger("dativo.metrics").warning("could not measure the slot lag: %s", exc)
        else:
            lag = found if isinstance(found, int) else None
    for stats in streams.values():
        if stats.finished is None:
            stats.finished = time.monotonic()
    metrics.finish(streams, time.monotonic() - began, status, replication_lag=lag, retries=retries)


def end_with_error(logger: logging.Logger, exc: BaseException) -> NoReturn:
    """End a Singer plugin run: one masked line for a DativoError (its traceback only at
    DEBUG), a masked traceback for anything else; exit status 1."""
    from dativo_bridge.redact import redact

    line = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, DativoError) and not logger.isEnabledFor(logging.DEBUG):
        logger.error("%s", line)
    else:
        logger.error("%s", line, exc_info=exc)  # the record factory masks the traceback
    sys.exit(1)


class _MaskedErrorsCommand(SingerCommand):
    """The SDK's command, whose errors (also those of ``--discover`` and ``--test``, which
    run before the SDK's own hook) end through :func:`end_with_error`, masked."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except Exception as exc:
            end_with_error(self.logger, exc)


def about_text(info: AboutInfo) -> str:
    """singer-sdk's plain ``--about`` text, with each setting's default and description."""
    text: str = TextFormatter().format_about(info)
    head, sep, _ = text.partition("\nSettings:\n")
    lines = [head + sep.rstrip("\n")]
    for setting, schema in info.settings.get("properties", {}).items():
        env_var = info.env_var_prefix + setting.upper().replace("-", "_")
        default = schema.get("default")
        lines += [
            f"  - Name: {setting}",
            f"    Type: {schema.get('type')}",
            f"    Default: {'(none)' if default is None else json.dumps(default)}",
            f"    Description: {schema.get('description') or '(none)'}",
            f"    Environment Variable: {env_var}",
        ]
    from dativo_bridge.metrics import SINGER_VARIABLES

    lines.append("Metrics (environment variables; OTEL_* for OpenTelemetry; docs/operations.md):")
    lines += [f"  - {name}: {meaning}" for name, meaning in SINGER_VARIABLES.items()]
    return "\n".join(lines) + "\n"


def _masked_errors(command: click.Command) -> click.Command:
    if isinstance(command, SingerCommand):
        command.__class__ = _MaskedErrorsCommand  # same fields; only ``main`` differs
    return command


def _register_secrets(plugin: type[Tap] | type[Target], config: Any) -> None:
    """Mask the secrets of the config (files and, with ``--config ENV``, the environment)
    in every log record and error of this process."""
    from dativo_bridge.redact import environment_secrets, process_redactor, secret_values

    schema = plugin.config_jsonschema
    found = secret_values(getattr(config, "config", None) or {}, schema)
    if getattr(config, "parse_env", False):
        found += environment_secrets(f"{plugin.name.upper().replace('-', '_')}_", schema)
    process_redactor().add(found)


class _MaskedCli:
    """The CLI of a Dativo plugin: its config's secrets registered for masking as soon as
    it is read, a DativoError ended with one masked line, and a plain ``--about`` that
    shows each setting's default and description (as the markdown one does)."""

    @classmethod
    def print_about(cls, output_format: str | None = None) -> None:
        if (output_format or "text") != "text":
            super().print_about(output_format)  # type: ignore[misc]
            return
        info = cls._get_about_info()  # type: ignore[attr-defined]
        print(about_text(info))

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> Any:
        config = super().cb_config(ctx, param, value)  # type: ignore[misc]
        given = getattr(config, "config", None)
        if isinstance(given, dict) and given:  # ${SECRET:...} (docs/secrets.md)
            from dativo_bridge.secret_refs import resolve_singer_config

            resolve_singer_config(config.config, cls.name)  # type: ignore[attr-defined]
        _register_secrets(cls, config)  # type: ignore[arg-type]
        return config

    @classmethod
    def get_singer_command(cls) -> click.Command:
        return _masked_errors(super().get_singer_command())  # type: ignore[misc]


class ArrowTap(_MaskedCli, Tap):
    """Base of every tap made by :func:`make_tap`.

    As a Singer tap its secrets are masked in every log line and error, and a DativoError
    ends the run with one line and exit status 1 (see :func:`end_with_error`).
    """

    reader_class: ClassVar[type[ArrowReader]]
    _reader: ArrowReader | None = None
    _arrow_maps: StreamMaps | None = None

    @property
    def arrow_maps(self) -> StreamMaps:
        """The tap's stream maps and flattening, for its streams' Arrow batches."""
        if self._arrow_maps is None:
            from dativo_bridge.maps import StreamMaps

            self._arrow_maps = StreamMaps.from_mapper(self.mapper)
        return self._arrow_maps

    @property
    def reader(self) -> ArrowReader:
        """The opened reader (one per tap run)."""
        if self._reader is None:
            reader = self.reader_class()
            # The STATE the run starts from: the SDK loads --state into this dict in place
            # (after discovery may have opened the reader).
            reader.start_state = self.state
            # The SDK validated the settings; the reader gets them with every default.
            reader.open(validated(self.config_jsonschema, self.config, plugin=self.name))
            self._reader = reader
            # Tap.sync_all is final in singer-sdk: the reader's connections are closed when
            # the process ends (or by close_reader).
            atexit.register(self.close_reader)
        return self._reader

    def close_reader(self) -> None:
        """Close the reader and its connections (idempotent)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            atexit.unregister(self.close_reader)
            reader.close()

    def discover_streams(self) -> list[Stream]:
        return [ArrowStream(self, info) for info in self.reader.discover()]

    _metrics: RunMetrics | None = None
    _metric_streams: dict[str, StreamStats] | None = None

    def stream_stats(self, stream: str) -> StreamStats | None:
        """The counters of ``stream`` for the run's metrics (None: metrics are off)."""
        if self._metric_streams is None:
            return None
        from dativo_bridge.delivery import StreamStats

        return self._metric_streams.setdefault(stream, StreamStats())

    def sync_all(self) -> None:  # type: ignore[misc]
        """singer-sdk's sync, measured when DATIVO_METRICS_* or OTEL_* ask for metrics
        (dativo_bridge.metrics.singer_metrics; docs/operations.md)."""
        from dativo_bridge.metrics import singer_metrics

        metrics = self._metrics = singer_metrics(self.name, "tap")
        if metrics is None:
            super().sync_all()
            return
        streams = self._metric_streams = {}
        metrics.watch(lambda: streams)
        began = time.monotonic()
        try:
            super().sync_all()
        except BaseException as exc:
            _finish_singer_metrics(metrics, streams, began, exc, self._reader)
            raise
        _finish_singer_metrics(metrics, streams, began, None, self._reader)


def _stream_writers(timed: bool) -> type[StreamWriters]:
    """StreamWriters, or (``timed``) a subclass that also counts the seconds spent handing
    batches to the writers (the ``write`` stage of a Singer target's metrics)."""
    from dativo_bridge.delivery import StreamWriters

    if not timed:
        return StreamWriters

    class _TimedWriters(StreamWriters):
        def write(self, stream: str, batch: pa.RecordBatch) -> None:
            began = time.monotonic()
            super().write(stream, batch)
            stats = self.stats.get(stream)
            if stats is not None:
                stats.write_seconds += time.monotonic() - began

    return _TimedWriters


class _ArrowMessageReader(GenericSingerReader[str]):
    """Routes the target's input through Dativo's batch decoder instead of per-line callbacks."""

    def __init__(self, target: ArrowTarget) -> None:
        super().__init__()
        self._target = target

    @property
    def default_input(self) -> IO[str]:
        return sys.stdin

    def deserialize_json(self, line: str) -> dict:
        from dativo_bridge.codecs.decode import loads

        return cast(dict, loads(line.encode()))

    def process_lines(self, file_input: IO[str] | None, callbacks: Any) -> Counter[str]:
        target = self._target
        try:
            target.singer_input.process(file_input or sys.stdin)
        except BaseException:
            target.writers.close()  # discard everything uncommitted
            raise
        return Counter(target.singer_input.counts)


class ArrowTarget(_MaskedCli, Target):
    """Base of every target made by :func:`make_target` (secrets and errors as ArrowTap).

    It advertises only what its batch path honours: not singer-sdk's stream maps,
    flattening or ``add_record_metadata`` (refused at start when given, with
    ``hard_delete``: :data:`~dativo_bridge.settings.REFUSED_TARGET_SETTINGS`).
    """

    writer_class: ClassVar[type[ArrowWriter]]
    _metrics: RunMetrics | None = None
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STRUCTURED_LOGGING,
        TargetCapabilities.VALIDATE_RECORDS,
    ]

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict[str, Any]) -> None:
        # singer-sdk adds add_record_metadata and load_method to every target; keep only
        # the settings the writer or TARGET_COMMON_SETTINGS define (the ones honoured).
        own = set(config_jsonschema.get("properties") or {})
        super().append_builtin_config(config_jsonschema)
        props = config_jsonschema.get("properties") or {}
        for key in [k for k in props if k not in own]:
            del props[key]

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # Before the SDK's schema check, so that an unsupported value gets its own reason.
        check_target_settings(self.config, self.config_jsonschema, self.name)
        return super()._validate_config(raise_errors=raise_errors)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message_reader = _ArrowMessageReader(self)
        # The SDK validated the settings; the writers get them with every default.
        config = validated(self.config_jsonschema, self.config, plugin=self.name)
        from dativo_bridge.codecs.messages import SingerInput
        from dativo_bridge.metrics import singer_metrics

        self._metrics = singer_metrics(self.name, "target")
        self.writers = _stream_writers(self._metrics is not None)(
            self.writer_class,
            config,
            self._emit_state,
            checkpoint_rows=int(config["checkpoint_rows"]),
            checkpoint_seconds=float(config["checkpoint_seconds"]),
        )
        self.singer_input = SingerInput(
            self.writers,
            batch_rows=target_batch_rows(config),
            validate_records=bool(config["validate_records"]),
        )

    def listen(self, file_input: IO[str] | None = None) -> None:  # type: ignore[misc]
        """singer-sdk's loop over the input, measured when DATIVO_METRICS_* or OTEL_* ask
        for metrics (docs/operations.md)."""
        metrics = self._metrics
        if metrics is None:
            super().listen(file_input)
            return
        streams = self.writers.stats
        metrics.watch(lambda: streams)
        began = time.monotonic()
        try:
            super().listen(file_input)
        except BaseException as exc:
            _finish_singer_metrics(metrics, streams, began, exc, self.writers)
            raise
        _finish_singer_metrics(metrics, streams, began, None, self.writers)

    def _emit_state(self, state: Any) -> None:
        # Singer targets print the bare state value, one JSON object per line; Meltano
        # stores each such line as the pipeline's state.
        import orjson

        write_bytes(orjson.dumps(state) + b"\n")

    def process_endofpipe(self) -> None:
        try:
            self.singer_input.flush()
            self.writers.finish()
        except BaseException:
            self.writers.close()
            raise
        for name, stats in self.writers.stats.items():
            self.logger.info(
                "stream '%s': %d rows committed in %d file(s)",
                name,
                stats.committed_rows,
                len(stats.files),
            )
        counts = self.singer_input.counts
        if not any(counts.get(kind) for kind in ("RECORD", "BATCH", "STATE")):
            # A target cannot see the tap's exit status; in a shell pipe without pipefail
            # a failed tap ends in exit 0 and an empty input, so say it here.
            self.logger.warning(
                "%s received no records and no STATE (%s): did the tap fail? Check its "
                "output above; in a shell pipe, `set -o pipefail` makes the pipe fail "
                "when the tap does",
                self.name,
                "empty input" if not counts else "only " + ", ".join(sorted(counts)),
            )


_OWN_MODULES = ("dativo_bridge.", "tap_dativo_", "target_dativo_")


def _plugin_class(
    base: type[Any],
    part: type[Any] | DeferredClass,
    attribute: str,
    name: str | None,
    schema: dict[str, Any],
) -> type[Any]:
    """A subclass of ``base`` (ArrowTap or ArrowTarget) around ``part`` (the reader or
    writer class, or a DeferredClass naming it, kept as ``attribute``), named as the plugin."""
    plugin = name or part.name
    verb = "reading" if base is ArrowTap else "writing"
    kind = "tap" if base is ArrowTap else "target"
    if isinstance(part, DeferredClass):
        module, class_name = part.module, part.class_name
    else:
        module, class_name = part.__module__, part.__name__
    attrs = {
        "name": plugin,
        # --about's version: Dativo's for its own plugins; else (None) singer-sdk's default,
        # the distribution named as the plugin (a user's tap-weather reports its own).
        "package_name": "dativo" if module.startswith(_OWN_MODULES) else None,
        "config_jsonschema": schema,
        attribute: part,
        "__module__": module,
        "__doc__": f"Singer {kind} '{plugin}' {verb} with {class_name}.",
    }
    prefix = "Tap" if base is ArrowTap else "Target"
    return type(f"{prefix}{class_name}", (base,), attrs)


def make_tap(
    reader_class: type[ArrowReader] | DeferredClass, *, name: str | None = None
) -> type[ArrowTap]:
    """Build a singer-sdk Tap class around an ArrowReader class.

    Args:
        reader_class: The reader; its ``name`` and ``config_jsonschema`` become the tap's.
            A :class:`~dativo_bridge.deferred.DeferredClass` (``module:Class``, name and
            settings) is imported only when the tap first reads, so that ``--about``
            does not import the reader's module.
        name: Override the plugin name.

    Returns:
        A Tap subclass with the SDK's CLI (``.cli``) and test-suite support, whose
        ``--discover`` catalog keeps the exact types (dativo_bridge.discovery).
    """
    from dativo_bridge.discovery import with_catalog

    schema = with_settings(reader_class.config_jsonschema, {"batch_config": BATCH_CONFIG_SCHEMA})
    tap = _plugin_class(ArrowTap, reader_class, "reader_class", name, schema)
    return with_catalog(cast("type[ArrowTap]", tap))


def make_target(
    writer_class: type[ArrowWriter] | DeferredClass, *, name: str | None = None
) -> type[ArrowTarget]:
    """Build a singer-sdk Target class around an ArrowWriter class.

    Args:
        writer_class: The writer; its ``name`` and ``config_jsonschema`` become the target's.
            A :class:`~dativo_bridge.deferred.DeferredClass` is imported only when the
            target first writes (see :func:`make_tap`).
        name: Override the plugin name.

    Returns:
        A Target subclass with the SDK's CLI (``.cli``) and test-suite support.
    """
    schema = target_schema(writer_class.config_jsonschema)
    return cast(
        "type[ArrowTarget]",
        _plugin_class(ArrowTarget, writer_class, "writer_class", name, schema),
    )
