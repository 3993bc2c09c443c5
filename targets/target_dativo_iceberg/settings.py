"""The settings of target-dativo-iceberg: its ``config_jsonschema``, apart from the writer so that
the plugin's ``--about`` imports neither it nor pyarrow (dativo_bridge.deferred)."""

from __future__ import annotations

from typing import Any

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "catalog": {
            "type": "object",
            "description": (
                "pyiceberg catalog properties (type: rest|sql|glue|hive|..., uri, warehouse, "
                "s3.endpoint, ...). Default: an embedded SQL catalog on SQLite in `warehouse`."
            ),
        },
        "catalog_name": {
            "type": "string",
            "default": "dativo",
            "description": "Name pyiceberg gives the catalog (the embedded one's SQLite rows).",
        },
        "warehouse": {
            "type": "string",
            "default": "output/iceberg",
            "description": "Directory of the embedded catalog and its tables.",
        },
        "namespace": {
            "type": "string",
            "default": "singer",
            "description": "Iceberg namespace the tables go in (created if missing).",
        },
        "table_names": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Table name per stream (default: the stream name).",
        },
        "partition_by": {
            "type": "array",
            "description": (
                "Partition spec of new tables: a list of {column, transform}; an existing "
                "table keeps its spec."
            ),
            "items": {
                "type": "object",
                "properties": {
                    "column": {"type": "string", "description": "Source column."},
                    "transform": {
                        "type": "string",
                        "description": "identity, year, month, day, hour, bucket[N], truncate[N]",
                    },
                },
            },
        },
        "load_method": {
            "type": "string",
            "enum": ["append-only", "append", "upsert", "overwrite"],
            "default": "append-only",
            "description": (
                "singer-sdk's load methods: append-only (alias append) adds rows; upsert "
                "replaces rows by the stream's key properties; overwrite replaces the table "
                "once, at the end of a run that read the stream to its end."
            ),
        },
        "hard_delete": {
            "type": "boolean",
            "default": False,
            "title": "Hard Delete",
            "description": (
                "singer-sdk's hard_delete, with load_method upsert: a record whose "
                "_sdc_deleted_at is set removes its key's row. False keeps the row, with "
                "_sdc_deleted_at set and its last known values (a soft delete)."
            ),
        },
        "target_file_size_mb": {
            "type": "number",
            "default": 256,
            "description": "Start a new Parquet data file past this size.",
        },
        "compression": {
            "type": "string",
            "default": "zstd",
            "description": "Parquet codec of the data files (the table's "
            "write.parquet.compression-codec).",
        },
        "commit_retries": {
            "type": "integer",
            "default": 5,
            "description": "Retries of a commit the catalog refuses as stale (another "
            "writer committed first); the table's commit.retry.num-retries.",
        },
    },
}
