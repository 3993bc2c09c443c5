"""Pagination styles: none, page number, offset/limit, cursor in the body, Link header and
next URL in the body. A paginator turns one response into the next request, or None."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from singer_sdk.helpers.jsonpath import extract_jsonpath

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.settings import with_defaults
from tap_dativo_rest.config import PAGINATION_SCHEMA
from tap_dativo_rest.http import Response


@dataclass(frozen=True)
class PageRequest:
    """One page's request: a URL (possibly with a query) and more query parameters."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)


def first_match(expression: str, body: Any) -> Any:
    """The first value ``expression`` (JSONPath) selects in ``body``, or None."""
    if not isinstance(body, dict | list):
        return None
    for value in extract_jsonpath(expression, body):
        return value
    return None


class Paginator(abc.ABC):
    """Makes the request of each page from the previous page's response."""

    def first(self, url: str, params: Mapping[str, Any]) -> PageRequest:
        """The first page's request."""
        return PageRequest(url, dict(params))

    @abc.abstractmethod
    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The next page's request, or None after the last page.

        Args:
            request: The request just answered.
            response: Its response.
            count: How many records the page held.
        """


class NoPagination(Paginator):
    """A single request."""

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """Always None."""
        return None


class PageNumberPaginator(Paginator):
    """``?page=1``, ``?page=2``... until an empty page (or a short one, when the size is set)."""

    def __init__(self, param: str, start: int, size_param: str | None, size: int | None) -> None:
        self.param = param
        self.start = start
        self.size_param = size_param
        self.size = size

    def first(self, url: str, params: Mapping[str, Any]) -> PageRequest:
        """Page ``start`` (and the page size, if set)."""
        first = {**params, self.param: self.start}
        if self.size_param and self.size:
            first[self.size_param] = self.size
        return PageRequest(url, first)

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The next page number, unless this page was empty or short."""
        if count == 0 or (self.size and count < self.size):
            return None
        return PageRequest(
            request.url, {**request.params, self.param: request.params[self.param] + 1}
        )


class OffsetPaginator(Paginator):
    """``?offset=0&limit=100``, then ``offset=100``... until a short page or ``total``."""

    def __init__(
        self, param: str, start: int, limit_param: str, limit: int, total_path: str | None
    ) -> None:
        self.param = param
        self.start = start
        self.limit_param = limit_param
        self.limit = limit
        self.total_path = total_path

    def first(self, url: str, params: Mapping[str, Any]) -> PageRequest:
        """Offset ``start`` with the limit."""
        return PageRequest(url, {**params, self.param: self.start, self.limit_param: self.limit})

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The offset after this page's records, unless it was the last."""
        if count == 0 or count < self.limit:
            return None
        offset = int(request.params[self.param]) + count
        if self.total_path:
            total = first_match(self.total_path, response.body)
            if isinstance(total, int) and offset >= total:
                return None
        return PageRequest(request.url, {**request.params, self.param: offset})


class CursorPaginator(Paginator):
    """A next-page token from the body (``next_path``) sent back in ``param``."""

    def __init__(self, next_path: str, param: str) -> None:
        self.next_path = next_path
        self.param = param

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The same request with the new cursor; None when the body has no cursor."""
        cursor = first_match(self.next_path, response.body)
        if cursor is None or cursor == "" or cursor is False:
            return None
        if request.params.get(self.param) == cursor:
            raise ReadError(
                f"cursor pagination: the server returned the same cursor {cursor!r} twice "
                f"(at {self.next_path}); stopping instead of looping"
            )
        return PageRequest(request.url, {**request.params, self.param: cursor})


class _UrlPaginator(Paginator):
    """Follows absolute or relative next-page URLs; never the same URL twice."""

    def __init__(self, keep_params: bool) -> None:
        self.keep_params = keep_params
        self._first_params: dict[str, Any] = {}
        self._seen: set[str] = set()

    def first(self, url: str, params: Mapping[str, Any]) -> PageRequest:
        """The configured URL and parameters."""
        self._first_params = dict(params)
        self._seen = set()
        return PageRequest(url, dict(params))

    def _follow(self, response: Response, target: Any) -> PageRequest | None:
        if not target or not isinstance(target, str):
            return None
        url = urljoin(response.url, target)
        if url in self._seen or url == response.url:
            raise ReadError(
                "pagination: the next-page URL was already requested; stopping instead of looping"
            )
        self._seen.add(url)
        params: dict[str, Any] = {}
        if self.keep_params:
            present = {k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
            params = {k: v for k, v in self._first_params.items() if k not in present}
        return PageRequest(url, params)


class LinkHeaderPaginator(_UrlPaginator):
    """The ``Link: <...>; rel="next"`` response header (RFC 8288)."""

    def __init__(self, rel: str, keep_params: bool) -> None:
        super().__init__(keep_params)
        self.rel = rel

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The URL of the ``rel`` link, if any."""
        link = response.links.get(self.rel) or {}
        return self._follow(response, link.get("url"))


class NextUrlPaginator(_UrlPaginator):
    """A next-page URL in the body (``next_path``), absolute or relative to the page's URL."""

    def __init__(self, next_path: str, keep_params: bool) -> None:
        super().__init__(keep_params)
        self.next_path = next_path

    def next(self, request: PageRequest, response: Response, count: int) -> PageRequest | None:
        """The URL at ``next_path``, if any."""
        return self._follow(response, first_match(self.next_path, response.body))


def make_paginator(settings: Mapping[str, Any]) -> Paginator:
    """A fresh paginator for one read of a stream.

    Raises:
        ConfigError: Unknown type or missing settings.
    """
    settings = with_defaults(PAGINATION_SCHEMA, settings)
    kind = settings["type"]
    if kind == "none":
        return NoPagination()
    if kind == "page":
        size = settings.get("size")
        return PageNumberPaginator(
            settings.get("param") or "page",
            int(settings.get("start", 1)),
            settings.get("size_param"),
            int(size) if size else None,
        )
    if kind == "offset":
        return OffsetPaginator(
            settings.get("param") or "offset",
            int(settings.get("start", 0)),
            settings["limit_param"],
            int(settings["limit"]),
            settings.get("total_path"),
        )
    if kind == "cursor":
        return CursorPaginator(str(settings["next_path"]), str(settings["param"]))
    keep = bool(settings["keep_params"])
    if kind == "link":
        return LinkHeaderPaginator(settings["rel"], keep)
    if kind == "next_url":
        return NextUrlPaginator(str(settings["next_path"]), keep)
    raise ConfigError(f"unknown pagination type {kind!r}")
