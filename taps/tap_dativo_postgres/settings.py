"""The settings of tap-dativo-postgres: its ``config_jsonschema``, apart from the reader so that
the plugin's ``--about`` imports neither it nor pyarrow (dativo_bridge.deferred)."""

from __future__ import annotations

from typing import Any

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host": {"type": "string", "description": "Server host name or socket directory."},
        "port": {"type": "integer", "description": "Server port (libpq's default: 5432)."},
        "user": {"type": "string", "description": "Role to connect as."},
        "password": {"type": "string", "secret": True, "description": "Password of the role."},
        "database": {"type": "string", "description": "Database to read."},
        "dsn": {
            "type": "string",
            "secret": True,
            "description": "A libpq connection string or URI (instead of host/port/...)",
        },
        "ssl_mode": {
            "type": "string",
            "enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
            "description": "TLS mode, as libpq's sslmode.",
        },
        "ssl_root_cert": {
            "type": "string",
            "description": "CA certificate file (verify-ca, verify-full).",
        },
        "ssl_cert": {"type": "string", "description": "Client certificate file."},
        "ssl_key": {"type": "string", "description": "Client private key file."},
        "connect_timeout": {
            "type": "integer",
            "default": 10,
            "description": "Seconds to wait for a connection.",
        },
        "application_name": {
            "type": "string",
            "default": "dativo",
            "description": "Shown in pg_stat_activity.",
        },
        "filter_schemas": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Schemas to discover (default: all non-system).",
        },
        "stream_options": {
            "type": "object",
            "description": "Per stream id: {custom_where: SQL condition}.",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "custom_where": {
                        "type": "string",
                        "description": "SQL condition added to the stream's WHERE.",
                    }
                },
            },
        },
        "batch_size_bytes": {
            "type": "integer",
            "minimum": 1,
            "description": (
                "COPY bytes per Arrow batch (memory grows with it). Default: 4 MiB of "
                "binary COPY with the Rust extension, 1 MiB of CSV on the pure-Python path "
                "(its CSV parse holds several times a batch while it works)."
            ),
        },
        "max_parallelism": {
            "type": "integer",
            "description": "Connections per table read (default: cores).",
        },
        "pages_per_partition": {
            "type": "integer",
            "default": 20_000,
            "description": "Table pages per parallel ctid range.",
        },
        "accelerator": {
            "type": "string",
            "enum": ["auto", "python", "rust"],
            "default": "auto",
            "description": (
                "COPY decoder and LOG_BASED change reader: rust (dativo_accel), python, or "
                "auto (rust if built)."
            ),
        },
        "max_reconnects": {
            "type": "integer",
            "default": 2,
            "description": (
                "Reconnects after a connection lost during an incremental read (resumed at "
                "its last key) or before a read yielded rows; 0 disables them."
            ),
        },
        "replication_slot": {
            "type": "string",
            "description": (
                "LOG_BASED streams: the logical replication slot, one per pipeline "
                "(default dativo_<database>_<hash of the database and the pipeline's "
                "state id>; a pipeline resuming on the earlier default's slot keeps it; "
                "docs/cdc.md)."
            ),
        },
        "publication": {
            "type": "string",
            "description": (
                "LOG_BASED streams: the publication to read (default: one named as the slot, "
                "created for the selected tables when the role may)."
            ),
        },
        "cdc_stop": {
            "type": "string",
            "enum": ["end", "follow"],
            "default": "end",
            "description": (
                "LOG_BASED streams: end (stop at the end of the WAL seen when the stream's "
                "read starts) or follow (keep reading new changes, for daemons)."
            ),
        },
        "infinity_values": {
            "type": "string",
            "enum": ["clamp", "null"],
            "default": "clamp",
            "description": (
                "How date/timestamp +/-infinity and time 24:00:00 are delivered: clamped to "
                "9999-12-31 23:59:59.999999 / 0001-01-01 00:00:00 / 23:59:59.999999 (values "
                "every engine reads), or as null."
            ),
        },
    },
}
