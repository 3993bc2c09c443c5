"""RestReader: REST API endpoints, configured not coded, read page by page into Arrow."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from singer_sdk.helpers.jsonpath import extract_jsonpath

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.redact import Redactor, secret_values
from dativo_bridge.schema import jsonschema_to_arrow
from dativo_bridge.settings import with_defaults
from tap_dativo_rest.auth import make_auth
from tap_dativo_rest.config import CONFIG_JSONSCHEMA, StreamSpec, parse_streams
from tap_dativo_rest.http import HttpClient, RateLimiter, RetryPolicy
from tap_dativo_rest.pagination import PageRequest, make_paginator
from tap_dativo_rest.records import BatchBuilder, DeadLetters, infer_jsonschema

logger = logging.getLogger("dativo.rest")


class _RedactingFilter(logging.Filter):
    """Masks secrets in records of a third-party logger (urllib3 logs request URLs)."""

    def __init__(self, client: HttpClient) -> None:
        super().__init__()
        self._client = client

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._client.redactor.redact(record.getMessage())
        record.args = None
        return True


_URLLIB3_LOGGER = "urllib3.connectionpool"

#: The trailing wildcard of a records_path: ``$.data[*]`` -> ``$.data``.
_CONTAINER = re.compile(r"(\[\*\]|\.\*)$")


class RestReader(ArrowReader):
    """Reads each configured endpoint; every page of records becomes one Arrow batch.

    Streams have a declared JSON Schema or one inferred once from the first page. With a
    ``replication_key`` a stream is incremental: the bookmark (the largest key seen) is
    sent in ``bookmark_param`` on the next run.
    """

    name = "tap-dativo-rest"
    config_jsonschema = CONFIG_JSONSCHEMA

    def open(self, config: Mapping[str, Any]) -> None:
        """Parse the settings and prepare the HTTP client (no request is sent yet)."""
        config = with_defaults(self.config_jsonschema, config)
        super().open(config)
        self._specs: dict[str, StreamSpec] = {s.name: s for s in parse_streams(config)}
        redactor = Redactor(_secrets(config))
        headers = {"User-Agent": str(config["user_agent"])}
        headers["Accept"] = "application/json"
        headers.update({str(k): str(v) for k, v in (config.get("headers") or {}).items()})
        self.client = HttpClient(
            headers=headers,
            connect_timeout=_setting(config, "connect_timeout"),
            read_timeout=_setting(config, "timeout"),
            retry=RetryPolicy(
                max_retries=int(_setting(config, "max_retries")),
                backoff_factor=_setting(config, "backoff_factor"),
                max_backoff=_setting(config, "max_backoff"),
                max_retry_after=_setting(config, "max_retry_after"),
            ),
            limiter=RateLimiter(config.get("requests_per_second")),
            redactor=redactor,
            verify=bool(config["verify_ssl"]),
        )
        self.client.auth = make_auth(config.get("auth"), self.client)
        path = config.get("dead_letter_path")
        self.dead_letters = DeadLetters(path) if path else None
        self._filter = _RedactingFilter(self.client)
        logging.getLogger(_URLLIB3_LOGGER).addFilter(self._filter)
        self._streams: list[StreamInfo] | None = None
        self._unmatched_warned: set[str] = set()

    def discover(self) -> Sequence[StreamInfo]:
        """Every configured stream; inferring a schema costs one request (once per run)."""
        if self._streams is None:
            self._streams = [self._stream_info(spec) for spec in self._specs.values()]
        return self._streams

    def _stream_info(self, spec: StreamSpec) -> StreamInfo:
        schema = jsonschema_to_arrow(spec.schema) if spec.schema else self._infer(spec)
        for key in (*spec.primary_keys, spec.replication_key):
            if key is not None and key not in schema.names:
                raise ConfigError(
                    f"stream '{spec.name}': '{key}' (a primary or replication key) is not a "
                    f"property of its schema ({', '.join(schema.names)})"
                )
        return StreamInfo(
            spec.name,
            schema,
            spec.primary_keys,
            spec.replication_key,
            "INCREMENTAL" if spec.replication_key else "FULL_TABLE",
        )

    def _infer(self, spec: StreamSpec) -> pa.Schema:
        request = make_paginator(spec.pagination).first(spec.url, self._params(spec, None))
        response = self.client.get_json(request.url, request.params, spec.headers)
        records = [r for r in self._records(spec, response.body) if isinstance(r, dict)]
        if not records:
            raise ReadError(
                f"stream '{spec.name}': cannot infer a schema, the first page of "
                f"{self.client.mask(spec.url)} has no records at {spec.records_path}; "
                "declare a 'schema' instead"
            )
        jsonschema = infer_jsonschema(records, spec.primary_keys)
        schema = jsonschema_to_arrow(jsonschema)
        logger.info(
            "stream '%s': schema inferred once from %d records: %s",
            spec.name,
            len(records),
            ", ".join(f"{f.name}:{f.type}" for f in schema),
        )
        return schema

    def _params(self, spec: StreamSpec, bookmark: Any | None) -> dict[str, Any]:
        params = dict(spec.params)
        if spec.bookmark_param:
            since = bookmark if bookmark is not None else self.config.get("start_date")
            if since is not None and since != "":
                params[spec.bookmark_param] = _as_param(since)
        return params

    def _records(self, spec: StreamSpec, body: Any) -> list[Any]:
        if body is None:
            return []
        if not isinstance(body, dict | list):
            raise ReadError(
                f"stream '{spec.name}': the response body is a JSON {type(body).__name__}, "
                f"not an object or array to apply {spec.records_path} to"
            )
        return list(extract_jsonpath(spec.records_path, body))

    def _path_found(self, spec: StreamSpec, body: Any) -> bool:
        """Whether a page without records still has the records' container: ``{"data": []}``
        for ``$.data[*]`` is an empty page, ``{"items": [...]}`` is a wrong path."""
        if body is None:
            return True  # an empty body (204) is an empty page, not a different shape
        container = _CONTAINER.sub("", spec.records_path)
        if container in ("", "$"):
            return True
        return any(True for _ in extract_jsonpath(container, body))

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        """One batch per page, in the API's order (ascending replication key, for resuming)."""
        spec = self._specs[stream.name]
        builder = BatchBuilder(stream.name, stream.schema, spec.primary_keys, self.dead_letters)
        paginator = make_paginator(spec.pagination)
        request: PageRequest | None = paginator.first(spec.url, self._params(spec, bookmark))
        index = 0
        page = 0
        path_found = False
        first_url = ""
        while request is not None:
            page += 1
            response = self.client.get_json(request.url, request.params, spec.headers)
            records = self._records(spec, response.body)
            where = f"page {page} (GET {self.client.mask(response.url)})"
            first_url = first_url or self.client.mask(response.url)
            path_found = path_found or bool(records) or self._path_found(spec, response.body)
            yield builder.build(records, first_index=index, where=where)
            index += len(records)
            request = paginator.next(request, response, len(records))
        if page and not path_found:
            self._unmatched(spec, page, first_url)
        if builder.rejected:
            logger.warning(
                "stream '%s': %d record(s) did not fit the schema and went to %s",
                stream.name,
                builder.rejected,
                self.dead_letters.path if self.dead_letters else "(nowhere)",
            )
        logger.info("stream '%s': %d records in %d page(s)", stream.name, index, page)

    def _unmatched(self, spec: StreamSpec, pages: int, url: str) -> None:
        """records_path matched nothing on any page: most likely a wrong path, not an empty
        API; a warning (once per stream and run), or an error with require_records_path."""
        message = (
            f"stream '{spec.name}': records_path {spec.records_path} matched nothing in "
            f"{pages} page(s) from {url}, so the stream has 0 records; check records_path "
            "against a response body"
        )
        if spec.require_records_path:
            raise ReadError(message + " (require_records_path is set)")
        if spec.name not in self._unmatched_warned:
            self._unmatched_warned.add(spec.name)
            logger.warning("%s (set require_records_path to fail instead)", message)

    def close(self) -> None:
        """Close the HTTP session and the dead-letter file."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            logging.getLogger(_URLLIB3_LOGGER).removeFilter(self._filter)
        if getattr(self, "dead_letters", None) is not None:
            assert self.dead_letters is not None
            self.dead_letters.close()


def _setting(config: Mapping[str, Any], key: str) -> float:
    """A numeric setting of the defaulted config, never negative."""
    value = config[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"'{key}' must be a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"'{key}' must not be negative, got {value!r}")
    return number


_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie"}


def _secrets(config: Mapping[str, Any]) -> list[str]:
    """The config's secret values: marked or secret-looking settings (the OAuth2
    ``token_url`` only looks like one by name) and credential headers in ``headers``."""
    token_url = (config.get("auth") or {}).get("token_url")
    found = [v for v in secret_values(config, CONFIG_JSONSCHEMA) if v != token_url]
    header_sets = [config.get("headers") or {}]
    header_sets += [s.get("headers") or {} for s in config.get("streams") or []]
    for headers in header_sets:
        for name, value in headers.items():
            if str(name).lower() in _SECRET_HEADERS and isinstance(value, str):
                found.append(value)
                found.extend(value.split(" ", 1)[1:])  # the credential after a scheme word
    return found


def _as_param(value: Any) -> str:
    """A bookmark as query text: ISO 8601 for date-times (UTC), else its string form."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
