"""The settings of Singer BATCH files: a tap's ``batch_config`` and a target's
``batch_cleanup``, parsed without importing pyarrow, so that a plugin's ``--about`` and
``--discover`` do not pay for the file formats (dativo_bridge.batch_files writes and reads
the files; docs/batch-files.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dativo_bridge.errors import ConfigError

FORMATS = ("arrow", "parquet", "jsonl")

#: The compressions each format accepts; the first is the default. ``arrow``: Arrow IPC
#: buffer codecs inside the file (singer-sdk writes none, and readers without the codecs,
#: such as some nanoarrow or arrow-rs builds, cannot read compressed buffers); ``parquet``:
#: the column chunks' codec; ``jsonl``: the whole file is gzip.
COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "arrow": ("none", "zstd", "lz4"),
    "parquet": ("zstd", "none"),
    "jsonl": ("gzip", "none"),
}

#: Values of the target setting ``batch_cleanup``.
CLEANUP_MODES = ("dativo", "off")

#: The ``batch_cleanup`` setting every Dativo target declares.
BATCH_CLEANUP_SETTING: dict[str, Any] = {
    "type": "string",
    "enum": list(CLEANUP_MODES),
    "default": "dativo",
    "description": (
        "Which BATCH files to delete after their rows are committed: 'dativo' deletes only "
        "files a Dativo tap wrote for the stream (its file naming and, for arrow and "
        "parquet, its marker; never symlinks); 'off' deletes none."
    ),
}

#: The `batch_config` setting of Dativo taps (singer-sdk's, with `arrow` and `batch_size`).
BATCH_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Emit BATCH messages with files instead of RECORD messages.",
    "properties": {
        "encoding": {
            "type": "object",
            "description": "How the files are written.",
            "properties": {
                "format": {
                    "type": "string",
                    "enum": list(FORMATS),
                    "description": "File format (default arrow: Arrow IPC).",
                },
                "compression": {
                    "type": "string",
                    "enum": ["none", "gzip", "zstd", "lz4"],
                    "description": "Compression (arrow: none (default, as singer-sdk), "
                    "zstd or lz4 buffers; parquet: zstd (default) or none; jsonl: gzip "
                    "(default) or none; docs/batch-files.md).",
                },
            },
        },
        "storage": {
            "type": "object",
            "description": "Where the files are written.",
            "properties": {
                "root": {"type": "string", "description": "Directory or file:// URL."},
                "prefix": {"type": "string", "description": "File name prefix (default batch-)."},
            },
        },
        "batch_size": {"type": "integer", "description": "Rows per file (default 1,000,000)."},
    },
}


@dataclass(frozen=True)
class BatchSettings:
    """Parsed ``batch_config``."""

    format: str
    compression: str
    root: Path
    prefix: str
    batch_size: int

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BatchSettings:
        """Validate a ``batch_config`` mapping.

        Raises:
            ConfigError: Unknown format or compression, or a root that is not local.
        """
        encoding = raw.get("encoding") or {}
        fmt = str(encoding.get("format") or "arrow")
        if fmt not in FORMATS:
            raise ConfigError(f"batch_config.encoding.format must be one of {FORMATS}, not {fmt!r}")
        allowed = COMPRESSIONS[fmt]
        compression = str(encoding.get("compression") or allowed[0])
        if compression not in allowed:
            raise ConfigError(
                f"batch_config: {fmt} files support compression {allowed}, not {compression!r}"
            )
        storage = raw.get("storage") or {}
        root = str(storage.get("root") or "output/batches")
        return cls(
            fmt,
            compression,
            local_path(root),
            str(storage.get("prefix") or "batch-"),
            int(raw.get("batch_size") or 1_000_000),
        )

    def encoding(self) -> dict[str, str]:
        """The ``encoding`` object of BATCH messages, as singer-sdk writes it: ``compression``
        only when there is one (an SDK target builds its encoding class from these keys)."""
        if self.compression == "none":
            return {"format": self.format}
        return {"format": self.format, "compression": self.compression}


def cleanup_mode(config: Mapping[str, Any]) -> str:
    """The target's ``batch_cleanup`` setting (default ``dativo``).

    Raises:
        ConfigError: A value other than ``dativo`` or ``off``.
    """
    mode = str(config.get("batch_cleanup") or "dativo")
    if mode not in CLEANUP_MODES:
        raise ConfigError(f"batch_cleanup must be one of {CLEANUP_MODES}, not {mode!r}")
    return mode


def local_path(uri: str) -> Path:
    """A local path from a path or file:// URL (other schemes are refused)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"batch files must be local, not on host {parsed.netloc!r}")
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ConfigError(f"batch files must be local (a path or file:// URL), not {uri!r}")
    return Path(uri)
