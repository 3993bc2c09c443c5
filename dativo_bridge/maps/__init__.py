"""singer-sdk stream maps and flattening, applied to Arrow batches.

The configuration (``stream_maps``, ``stream_map_config``, ``flattening_*``) means what
singer-sdk documents: it is read and checked by the SDK's own ``PluginMapper``, which also
decides which outputs a stream has (its aliases, copies made with ``__source__``, streams
removed with ``__NULL__``, key properties). Each output's properties, filter and flattening
are then compiled to Arrow (``dativo_bridge.maps._expressions``, ``._flatten``), so a
mapped column that is an untouched property keeps its exact Arrow type and JSON Schema.

A stream with an expression that has no Arrow compilation raises :class:`UnsupportedMap`
from :meth:`StreamMaps.plan`; a tap then runs that one stream on singer-sdk's row path.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from singer_sdk.exceptions import ConfigValidationError, StreamMapConfigError
from singer_sdk.helpers._flattening import FlatteningOptions
from singer_sdk.mapper import (
    MAPPER_ALIAS_OPTION,
    MAPPER_ELSE_OPTION,
    MAPPER_FILTER_OPTION,
    MAPPER_KEY_PROPERTIES_OPTION,
    MAPPER_SOURCE_OPTION,
    NULL_STRING,
    CustomStreamMap,
    PluginMapper,
    RemoveRecordTransform,
    StreamMap,
)

from dativo_bridge.errors import ConfigError
from dativo_bridge.events import BatchEvent, Event, SchemaEvent
from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.maps._expressions import Compiler
from dativo_bridge.maps._flatten import flatten_batch
from dativo_bridge.maps._values import (
    Compiled,
    MapEvaluationError,
    Scope,
    Unsupported,
    broadcast,
)
from dativo_bridge.schema import arrow_to_jsonschema

logger = logging.getLogger("dativo.maps")

#: The tap settings that stream maps and flattening read.
MAP_SETTINGS = (
    "stream_maps",
    "stream_map_config",
    "faker_config",
    "flattening_enabled",
    "flattening_max_depth",
    "flattening_max_key_length",
    "flattening_separator",
)


class UnsupportedMap(Exception):
    """A stream's map uses an expression that has no Arrow compilation.

    Attributes:
        stream: The stream's name.
        expression: The expression.
        reason: What in it has no Arrow form.
    """

    def __init__(self, stream: str, expression: str, reason: str) -> None:
        self.stream = stream
        self.expression = expression
        self.reason = reason
        super().__init__(
            f"stream '{stream}': stream map expression {expression!r} cannot run on Arrow "
            f"batches ({reason})"
        )


@dataclass(frozen=True)
class MappedStream:
    """One output stream of a mapped source stream.

    Attributes:
        info: Its name (the alias), Arrow schema, key properties and replication key.
        source: The source stream's name.
    """

    info: StreamInfo
    source: str
    _filter: Compiled | None = None
    _columns: Sequence[tuple[pa.Field, Compiled]] = ()
    _flattening: FlatteningOptions | None = None

    @property
    def name(self) -> str:
        """The output stream's name."""
        return self.info.name

    @property
    def json_schema(self) -> dict[str, Any]:
        """Its Singer JSON Schema (of the exact Arrow schema)."""
        return arrow_to_jsonschema(self.info.schema)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The source batch mapped: rows filtered, properties mapped, then flattened.

        Raises:
            MapEvaluationError: An expression fails on a row (where singer-sdk's fails).
        """
        if self._filter is not None:
            keep = broadcast(self._filter.evaluate(batch), batch.num_rows)
            if keep.true_count != batch.num_rows:
                batch = batch.filter(keep)
        arrays = []
        for out, compiled in self._columns:
            array = broadcast(compiled.evaluate(batch), batch.num_rows)
            arrays.append(array if array.type == out.type else array.cast(out.type))
        mapped = pa.RecordBatch.from_arrays(
            arrays, schema=pa.schema([out for out, _ in self._columns])
        )
        if self._flattening is not None:
            mapped = flatten_batch(mapped, self._flattening)
        return mapped


@dataclass(frozen=True)
class StreamPlan:
    """What a source stream becomes: zero or more output streams.

    Attributes:
        source: The source stream.
        outputs: Its output streams.
        identity: True when the one output is the source as it is.
    """

    source: StreamInfo
    outputs: list[MappedStream] = field(default_factory=list)
    identity: bool = False


def _flattening_enabled(options: FlatteningOptions) -> bool:
    return options.enabled and options.max_level > 0


class StreamMaps:
    """A tap's stream maps and flattening, for Arrow batches.

    Args:
        config: The tap's settings (only :data:`MAP_SETTINGS` are read; not modified).

    Raises:
        singer_sdk.exceptions.StreamMapConfigError: The configuration is invalid (the SDK's
            own check).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        settings = {k: copy.deepcopy(config[k]) for k in MAP_SETTINGS if config.get(k) is not None}
        self.config = copy.deepcopy(settings)
        # PluginMapper takes the ``__else__`` out of the dict it is given: give it a copy.
        try:
            self._mapper = PluginMapper(settings, logger)
        except (StreamMapConfigError, ConfigValidationError) as exc:
            raise ConfigError(f"stream_maps / flattening: {exc}") from None

    @classmethod
    def from_mapper(cls, mapper: PluginMapper) -> StreamMaps:
        """The same maps as a singer-sdk tap's mapper (which no longer holds ``__else__``)."""
        maps: dict[str, Any] = copy.deepcopy(dict(mapper.stream_maps_dict))
        if mapper.default_mapper_type is RemoveRecordTransform:
            maps[MAPPER_ELSE_OPTION] = None
        options = mapper.flattening_options
        config: dict[str, Any] = {
            "stream_maps": maps,
            "stream_map_config": mapper.map_config,
            "faker_config": mapper.faker_config,
            "flattening_enabled": options.enabled,
            "flattening_separator": options.separator,
            "flattening_max_key_length": options.max_key_length,
        }
        if options.max_level != -1:
            config["flattening_max_depth"] = options.max_level
        return cls(config)

    @property
    def is_identity(self) -> bool:
        """True when every stream goes out as it is (no maps, no flattening)."""
        return (
            not self._mapper.stream_maps_dict
            and self._mapper.default_mapper_type is not RemoveRecordTransform
            and not _flattening_enabled(self._mapper.flattening_options)
        )

    def _definitions(self, stream: str) -> list[Any]:
        """Each output's map definition, in the order of the SDK's mappers for ``stream``
        (the primary first: None for the default), as ``register_raw_stream_schema``
        pairs them."""
        primary: Any = None
        extra: list[Any] = []
        for key, value in self._mapper.stream_maps_dict.items():
            definition = copy.copy(value) if isinstance(value, dict) else value
            source = key
            is_primary = True
            if isinstance(definition, dict) and MAPPER_SOURCE_OPTION in definition:
                source = definition.pop(MAPPER_SOURCE_OPTION)
                is_primary = False
            elif isinstance(definition, dict):
                definition.pop(MAPPER_ALIAS_OPTION, None)
            if stream != source and not fnmatch.fnmatch(stream, source):
                continue
            if is_primary:
                primary = definition
            else:
                extra.append(definition)
        return [primary, *extra]

    def plan(self, info: StreamInfo) -> StreamPlan:
        """The outputs of ``info`` (a selected stream, as its batches come).

        Raises:
            UnsupportedMap: An expression of the stream's maps has no Arrow compilation.
            singer_sdk.exceptions.StreamMapConfigError: The SDK rejects the stream's maps.
        """
        self._mapper.register_raw_stream_schema(
            info.name, arrow_to_jsonschema(info.schema), list(info.key_properties)
        )
        sdk_maps = self._mapper.stream_maps[info.name]
        definitions = self._definitions(info.name)
        if len(definitions) != len(sdk_maps):  # pragma: no cover - the SDK changed its rules
            raise UnsupportedMap(info.name, "", "this singer-sdk pairs its maps differently")
        plan = StreamPlan(info, identity=self.is_identity)
        for sdk_map, definition in zip(sdk_maps, definitions, strict=True):
            if isinstance(sdk_map, RemoveRecordTransform):
                continue
            plan.outputs.append(self._output(info, sdk_map, definition))
        return plan

    def _output(self, info: StreamInfo, sdk_map: StreamMap, definition: Any) -> MappedStream:
        options = self._mapper.flattening_options
        flattening = options if _flattening_enabled(options) else None
        keys = list(sdk_map.transformed_key_properties or [])
        scope = Scope(info.schema, self._mapper.map_config, sdk_map.stream_alias, info.name)
        columns: dict[str, tuple[pa.Field, Compiled]] = {}

        def passthrough(name: str, as_name: str) -> tuple[pa.Field, Compiled]:
            compiled = Compiler(scope).compile(f"_[{name!r}]")
            return info.schema.field(name).with_name(as_name), compiled

        filter_rule: Compiled | None = None
        if isinstance(sdk_map, CustomStreamMap):
            if not isinstance(definition, dict):  # pragma: no cover - the SDK changed
                raise UnsupportedMap(info.name, str(definition), "an unexpected map definition")
            spec = dict(definition)
            rule = spec.pop(MAPPER_FILTER_OPTION, None)
            spec.pop(MAPPER_KEY_PROPERTIES_OPTION, None)
            include = MAPPER_ELSE_OPTION not in spec
            spec.pop(MAPPER_ELSE_OPTION, None)
            if include:
                columns = {n: passthrough(n, n) for n in info.schema.names}
            else:
                columns = {k: passthrough(k, k) for k in keys if k in info.schema.names}
            if rule is not None:
                filter_rule = self._compile(scope, None, str(rule), truth=True)
            for prop, expression in spec.items():
                if expression is None or expression == NULL_STRING:
                    columns.pop(prop, None)
                    continue
                compiled = self._compile(scope, prop, str(expression))
                if compiled.field is not None:
                    out = compiled.field.with_name(prop)
                else:
                    out = pa.field(prop, compiled.dtype, nullable=True)
                columns[prop] = (out, compiled)
        else:
            columns = {n: passthrough(n, n) for n in info.schema.names}
        if not columns:  # rows of no properties: Arrow batches cannot count them
            raise UnsupportedMap(info.name, "", "the map leaves no property")
        mapped = MappedStream(
            StreamInfo(sdk_map.stream_alias, pa.schema([]), tuple(keys)),
            info.name,
            filter_rule,
            list(columns.values()),
            flattening,
        )
        empty = mapped.apply(pa.RecordBatch.from_pylist([], schema=info.schema))
        names = empty.schema.names
        replication_key = info.replication_key if info.replication_key in names else None
        out_info = StreamInfo(
            sdk_map.stream_alias,
            empty.schema,
            tuple(keys),
            replication_key,
            info.replication_method,
        )
        return MappedStream(out_info, info.name, filter_rule, mapped._columns, flattening)

    @staticmethod
    def _compile(scope: Scope, prop: str | None, expression: str, truth: bool = False) -> Compiled:
        compiler = Compiler(dataclasses.replace(scope, property_name=prop, expression=expression))
        try:
            return compiler.compile_truth(expression) if truth else compiler.compile(expression)
        except Unsupported as exc:
            raise UnsupportedMap(scope.stream_name, expression, str(exc)) from None


def map_events(events: Iterable[Event], maps: StreamMaps) -> Iterator[Event]:
    """A run's events with the tap's stream maps and flattening applied in process: each
    stream's schema and batches become those of its output streams; STATE is unchanged.

    Raises:
        ConfigError: A stream's maps have an expression with no Arrow compilation (raised
            at that stream's start, before any of its rows), or the SDK rejects them.
    """
    plans: dict[str, StreamPlan] = {}
    for event in events:
        if isinstance(event, SchemaEvent):
            try:
                plan = maps.plan(event.stream)
            except UnsupportedMap as exc:
                raise ConfigError(
                    f"{exc}: an in-process run applies stream maps on Arrow batches only; "
                    "use an expression from docs/stream-maps.md, or run the tap as a Singer "
                    "process (meltano run, or a shell pipe) for singer-sdk's row path"
                ) from None
            except StreamMapConfigError as exc:
                raise ConfigError(f"stream '{event.stream.name}': stream_maps: {exc}") from None
            plans[event.stream.name] = plan
            for out in plan.outputs:
                yield SchemaEvent(out.info, event.expected_rows)  # source rows: an estimate
        elif isinstance(event, BatchEvent):
            plan = plans[event.stream]
            if plan.identity:
                yield event
                continue
            for out in plan.outputs:
                mapped = out.apply(event.batch)
                if mapped.num_rows:
                    yield BatchEvent(out.name, mapped)
        else:
            yield event


__all__ = [
    "MAP_SETTINGS",
    "MapEvaluationError",
    "MappedStream",
    "StreamMaps",
    "StreamPlan",
    "UnsupportedMap",
    "map_events",
]
