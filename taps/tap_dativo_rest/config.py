"""The settings of tap-dativo-rest: the JSON Schema and the parsed per-stream specs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dativo_bridge.errors import ConfigError
from dativo_bridge.settings import with_defaults

PAGINATION_TYPES = ("none", "page", "offset", "cursor", "link", "next_url")
AUTH_TYPES = ("none", "bearer", "api_key", "basic", "oauth2")

PAGINATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How to get the next page (see docs/rest-tap.md).",
    "properties": {
        "type": {
            "type": "string",
            "enum": list(PAGINATION_TYPES),
            "default": "none",
            "description": "Pagination style (docs/rest-tap.md).",
        },
        "param": {
            "type": "string",
            "description": "Query parameter carrying the page number, offset or cursor.",
        },
        "start": {"type": "integer", "description": "First page number (1) or offset (0)."},
        "size_param": {"type": "string", "description": "page: parameter for the page size."},
        "size": {"type": "integer", "description": "page: page size sent in size_param."},
        "limit_param": {
            "type": "string",
            "default": "limit",
            "description": "Query parameter of the page size.",
        },
        "limit": {"type": "integer", "default": 100, "description": "offset: page size."},
        "total_path": {
            "type": "string",
            "description": "offset: JSONPath of the total record count, to stop early.",
        },
        "next_path": {
            "type": "string",
            "description": "cursor / next_url: JSONPath of the next cursor or URL in the body.",
        },
        "rel": {"type": "string", "default": "next", "description": "link: the rel to follow."},
        "keep_params": {
            "type": "boolean",
            "default": False,
            "description": "next_url / link: re-send the first request's parameters.",
        },
    },
}

AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How requests authenticate (see docs/rest-tap.md).",
    "properties": {
        "type": {
            "type": "string",
            "enum": list(AUTH_TYPES),
            "default": "none",
            "description": "Authentication scheme.",
        },
        "token": {"type": "string", "secret": True, "description": "bearer: the token."},
        "api_key": {"type": "string", "secret": True, "description": "api_key: the key."},
        "name": {
            "type": "string",
            "description": "api_key: header or query parameter name (X-API-Key / api_key).",
        },
        "in": {
            "type": "string",
            "enum": ["header", "query"],
            "default": "header",
            "description": "Where api_key goes: a header or a query parameter.",
        },
        "prefix": {
            "type": "string",
            "description": "api_key: text before the key in the header (e.g. 'Token ').",
        },
        "username": {"type": "string", "description": "basic: user name."},
        "password": {"type": "string", "secret": True, "description": "basic: password."},
        "token_url": {"type": "string", "description": "oauth2: the token endpoint."},
        "client_id": {"type": "string", "description": "oauth2: client id."},
        "client_secret": {"type": "string", "secret": True, "description": "oauth2: secret."},
        "scope": {"type": "string", "description": "oauth2: requested scope(s)."},
        "token_params": {
            "type": "object",
            "description": "oauth2: extra form fields of the token request (e.g. audience).",
        },
        "client_auth": {
            "type": "string",
            "enum": ["body", "basic"],
            "default": "body",
            "description": "oauth2: send the client credentials in the form or as Basic auth.",
        },
    },
}

_STREAM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Stream name."},
        "path": {"type": "string", "description": "Path after api_url (or an absolute URL)."},
        "records_path": {
            "type": "string",
            "default": "$[*]",
            "description": "JSONPath of the records in a response body.",
        },
        "primary_keys": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Key properties of the stream.",
        },
        "replication_key": {
            "type": "string",
            "description": "Property whose maximum is the bookmark (makes the stream incremental).",
        },
        "bookmark_param": {
            "type": "string",
            "description": "Query parameter receiving the bookmark (e.g. updated_since).",
        },
        "params": {"type": "object", "description": "Query parameters of the first request."},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Extra HTTP headers of this stream.",
        },
        "require_records_path": {
            "type": "boolean",
            "description": "Fail (instead of warning) when records_path matches nothing on "
            "every page; default: the global setting.",
        },
        "schema": {"type": "object", "description": "JSON Schema of a record."},
        "infer_schema": {
            "type": "boolean",
            "default": True,
            "description": "Without 'schema': infer one from the first page (else an error).",
        },
        "pagination": PAGINATION_SCHEMA,
    },
    "required": ["name", "path"],
}

CONFIG_JSONSCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "api_url": {"type": "string", "description": "Base URL, e.g. https://api.example.com"},
        "streams": {"type": "array", "items": _STREAM, "description": "One entry per stream."},
        "auth": AUTH_SCHEMA,
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Headers sent with every request (put secrets in 'auth').",
        },
        "params": {"type": "object", "description": "Query parameters sent with every request."},
        "pagination": {**PAGINATION_SCHEMA, "description": "Default pagination of every stream."},
        "start_date": {
            "type": "string",
            "description": "Bookmark to send on a stream's first incremental run.",
        },
        "timeout": {"type": "number", "default": 30, "description": "Read timeout (seconds)."},
        "connect_timeout": {
            "type": "number",
            "default": 10,
            "description": "Seconds to wait for a connection.",
        },
        "max_retries": {
            "type": "integer",
            "default": 5,
            "description": "Retries of a request after a connection error, timeout, 5xx or 429.",
        },
        "backoff_factor": {
            "type": "number",
            "default": 0.5,
            "description": "Retry n waits backoff_factor * 2**n seconds (jittered, capped).",
        },
        "max_backoff": {
            "type": "number",
            "default": 60,
            "description": "Longest wait between retries, in seconds.",
        },
        "max_retry_after": {
            "type": "number",
            "default": 300,
            "description": "Fail instead of waiting when Retry-After asks for more seconds.",
        },
        "requests_per_second": {
            "type": "number",
            "description": "Rate limit: at most this many requests per second (no bursts).",
        },
        "dead_letter_path": {
            "type": "string",
            "description": "Records that do not fit the schema go here (JSON lines) "
            "instead of failing the run.",
        },
        "require_records_path": {
            "type": "boolean",
            "default": False,
            "description": "Fail a stream whose records_path matches nothing on every page "
            "(else a warning); an empty array at the path is not a failure.",
        },
        "user_agent": {
            "type": "string",
            "default": "tap-dativo-rest",
            "description": "User-Agent header of every request.",
        },
        "verify_ssl": {
            "type": "boolean",
            "default": True,
            "description": "Verify the server's TLS certificate.",
        },
    },
    "required": ["api_url", "streams"],
}


@dataclass(frozen=True)
class StreamSpec:
    """One configured stream.

    Attributes:
        name: Stream name.
        url: Absolute URL of the first request.
        records_path: JSONPath of the records in a body.
        primary_keys: Key properties.
        replication_key: The bookmark property, if incremental.
        bookmark_param: Query parameter that receives the bookmark.
        params: Query parameters of the first request.
        headers: Extra headers of this stream.
        schema: The declared JSON Schema, or None to infer one.
        pagination: The pagination settings.
        require_records_path: A records_path matching nothing on every page is an error.
    """

    name: str
    url: str
    records_path: str = "$[*]"
    primary_keys: tuple[str, ...] = ()
    replication_key: str | None = None
    bookmark_param: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    pagination: dict[str, Any] = field(default_factory=dict)
    require_records_path: bool = False


def join_url(base: str, path: str) -> str:
    """``base`` + ``path``, keeping any path in ``base``; absolute ``path`` URLs win."""
    if path.startswith(("http://", "https://")):
        return path
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


def parse_streams(config: Mapping[str, Any]) -> list[StreamSpec]:
    """The stream specs of a config, with the schema's defaults and the global settings
    applied.

    Raises:
        ConfigError: If a stream is incomplete, duplicated or contradicts itself.
    """
    config = with_defaults(CONFIG_JSONSCHEMA, config)
    base = str(config.get("api_url") or "")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"'api_url' must be an http(s) URL, got {base!r}")
    streams = config.get("streams") or []
    if not streams:
        raise ConfigError("tap-dativo-rest needs 'streams': a list of {name, path, ...}")
    default_pagination = dict(config.get("pagination") or {})
    global_params = dict(config.get("params") or {})
    specs: list[StreamSpec] = []
    for raw in streams:
        name = raw.get("name")
        if not name or "path" not in raw:
            raise ConfigError(f"every stream needs 'name' and 'path', got {raw!r}")
        if any(s.name == name for s in specs):
            raise ConfigError(f"stream '{name}' is configured twice")
        schema = raw.get("schema")
        if not schema and raw.get("infer_schema") is False:
            raise ConfigError(f"stream '{name}': give a 'schema' or set 'infer_schema': true")
        pagination = with_defaults(PAGINATION_SCHEMA, raw.get("pagination") or default_pagination)
        kind = pagination["type"]
        if kind not in PAGINATION_TYPES:
            raise ConfigError(
                f"stream '{name}': unknown pagination type {kind!r} "
                f"(one of {', '.join(PAGINATION_TYPES)})"
            )
        if kind in ("cursor", "next_url") and not pagination.get("next_path"):
            raise ConfigError(f"stream '{name}': {kind} pagination needs 'next_path'")
        if kind == "cursor" and not pagination.get("param"):
            raise ConfigError(f"stream '{name}': cursor pagination needs 'param'")
        bookmark_param = raw.get("bookmark_param")
        if bookmark_param and not raw.get("replication_key"):
            raise ConfigError(f"stream '{name}': 'bookmark_param' needs a 'replication_key'")
        specs.append(
            StreamSpec(
                name=str(name),
                url=join_url(base, str(raw["path"])),
                records_path=str(raw["records_path"]),
                primary_keys=tuple(raw.get("primary_keys") or ()),
                replication_key=raw.get("replication_key") or None,
                bookmark_param=bookmark_param or None,
                params={**global_params, **dict(raw.get("params") or {})},
                headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
                schema=dict(schema) if schema else None,
                pagination=pagination,
                require_records_path=bool(
                    raw.get("require_records_path", config["require_records_path"])
                ),
            )
        )
    return specs
