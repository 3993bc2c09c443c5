"""The settings of tap-dativo-csv: its ``config_jsonschema``, apart from the reader so that
the plugin's ``--about`` imports neither it nor pyarrow (dativo_bridge.deferred)."""

from __future__ import annotations

from typing import Any

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "description": "One entry per stream.",
            "items": {
                "type": "object",
                "properties": {
                    "stream": {
                        "type": "string",
                        "description": "Stream name (the table a target writes).",
                    },
                    "path": {"type": "string", "description": "File path or glob."},
                    "key_properties": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Primary-key columns of the stream.",
                    },
                    "schema": {
                        "type": "object",
                        "description": "JSON Schema of the columns (else inferred).",
                    },
                    "delimiter": {
                        "type": "string",
                        "description": "This stream's delimiter (else the top-level one).",
                    },
                    "encoding": {
                        "type": "string",
                        "description": "This stream's encoding (else the top-level one).",
                    },
                },
                "required": ["stream", "path"],
            },
        },
        "delimiter": {
            "type": "string",
            "default": ",",
            "description": "Field delimiter (one character).",
        },
        "encoding": {
            "type": "string",
            "default": "utf-8",
            "description": "Text encoding of the files.",
        },
        "null_values": {
            "type": "array",
            "items": {"type": "string"},
            "default": [""],
            "description": "Field texts read as null.",
        },
        "block_size_mb": {
            "type": "number",
            "default": 16,
            "description": "Bytes parsed per Arrow batch.",
        },
        "base_dir": {
            "type": "string",
            "description": "Relative paths are resolved against this directory.",
        },
    },
    "required": ["files"],
}
