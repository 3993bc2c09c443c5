"""Dativo's core: Arrow readers and writers, Singer codecs, the runner and the CLI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dativo_bridge.codecs.decode import RecordDecoder
    from dativo_bridge.codecs.encode import encode_records
    from dativo_bridge.errors import (
        ConfigError,
        DativoError,
        DecodeError,
        PluginFailedError,
        PluginLoadError,
        ReadError,
        SchemaMappingError,
        WriteError,
    )
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo
    from dativo_bridge.runner import RunResult, run
    from dativo_bridge.schema import arrow_to_jsonschema, jsonschema_to_arrow
    from dativo_bridge.sdk import make_tap, make_target

#: Where each export lives; imported on first use (PEP 562), so that a reader or writer
#: run in process does not pay for the runner, the CLI or singer-sdk.
_EXPORTS = {
    "RecordDecoder": "dativo_bridge.codecs.decode",
    "encode_records": "dativo_bridge.codecs.encode",
    "ConfigError": "dativo_bridge.errors",
    "DativoError": "dativo_bridge.errors",
    "DecodeError": "dativo_bridge.errors",
    "PluginFailedError": "dativo_bridge.errors",
    "PluginLoadError": "dativo_bridge.errors",
    "ReadError": "dativo_bridge.errors",
    "SchemaMappingError": "dativo_bridge.errors",
    "WriteError": "dativo_bridge.errors",
    "ArrowReader": "dativo_bridge.interfaces",
    "ArrowWriter": "dativo_bridge.interfaces",
    "CommitResult": "dativo_bridge.interfaces",
    "StreamInfo": "dativo_bridge.interfaces",
    "RunResult": "dativo_bridge.runner",
    "run": "dativo_bridge.runner",
    "arrow_to_jsonschema": "dativo_bridge.schema",
    "jsonschema_to_arrow": "dativo_bridge.schema",
    "make_tap": "dativo_bridge.sdk",
    "make_target": "dativo_bridge.sdk",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "ArrowReader",
    "ArrowWriter",
    "CommitResult",
    "ConfigError",
    "DativoError",
    "DecodeError",
    "PluginFailedError",
    "PluginLoadError",
    "ReadError",
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
