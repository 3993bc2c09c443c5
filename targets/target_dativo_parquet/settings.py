"""The settings of target-dativo-parquet: its ``config_jsonschema``, apart from the writer so that
the plugin's ``--about`` imports neither it nor pyarrow (dativo_bridge.deferred)."""

from __future__ import annotations

from typing import Any

from dativo_bridge.aws import S3_SETTINGS
from dativo_bridge.row_groups import row_group_settings

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "Directory the stream folders go in."},
        "compression": {
            "type": "string",
            "default": "zstd",
            "enum": ["zstd", "snappy", "gzip", "lz4", "brotli", "none"],
            "description": "Parquet codec of the files.",
        },
        "target_file_size_mb": {
            "type": "number",
            "default": 128,
            "description": "Start a new file once one reaches this size.",
        },
        "partition_by": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Columns for hive-style folders col=value/.",
        },
        **row_group_settings(),
        "load_method": {
            "type": "string",
            "enum": ["append-only", "append", "overwrite"],
            "default": "append-only",
            "description": (
                "singer-sdk's load methods: append-only (alias append) adds the run's "
                "files; overwrite replaces the stream's folder with the run's files in one "
                "step when the run ends (local disk only: on S3 use target-dativo-iceberg). "
                "upsert is refused at start: Parquet files have no keys to update (use "
                "target-dativo-iceberg)."
            ),
        },
        **S3_SETTINGS,
    },
    "required": ["path"],
}
