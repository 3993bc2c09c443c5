"""Dativo's core: Arrow readers and writers, Singer codecs, the runner and the CLI."""

from dativo_bridge.codecs.decode import RecordDecoder
from dativo_bridge.codecs.encode import encode_records
from dativo_bridge.errors import (
    ConfigError,
    DativoError,
    DecodeError,
    PluginFailedError,
    PluginLoadError,
    SchemaMappingError,
    WriteError,
)
from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.runner import RunResult, run
from dativo_bridge.schema import arrow_to_jsonschema, jsonschema_to_arrow
from dativo_bridge.sdk import make_tap, make_target

__all__ = [
    "ArrowReader",
    "ArrowWriter",
    "CommitResult",
    "ConfigError",
    "DativoError",
    "DecodeError",
    "PluginFailedError",
    "PluginLoadError",
    "RecordDecoder",
    "RunResult",
    "SchemaMappingError",
    "StreamInfo",
    "WriteError",
    "arrow_to_jsonschema",
    "encode_records",
    "jsonschema_to_arrow",
    "make_tap",
    "make_target",
    "run",
]
