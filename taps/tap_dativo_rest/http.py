"""HTTP for tap-dativo-rest: one requests Session with timeouts, a rate limit, retries with
exponential backoff and jitter (honouring Retry-After), and errors that never show secrets."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests

from dativo_bridge.codecs.decode import loads
from dativo_bridge.errors import ReadError
from dativo_bridge.redact import MASK, SECRET_NAME, Redactor

if TYPE_CHECKING:
    from tap_dativo_rest.auth import Auth

logger = logging.getLogger("dativo.rest")

#: Statuses worth retrying: request timeout, too many requests, and every 5xx.
RETRY_STATUSES = frozenset({408, 429})
_SPACE = re.compile(r"\s+")


class HttpError(ReadError):
    """A request failed for good.

    Attributes:
        status: The last HTTP status, or None after a connection error or timeout.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attributes:
        max_retries: Retries after the first attempt (0: no retry).
        backoff_factor: Retry ``n`` (0-based) waits about ``backoff_factor * 2**n`` seconds.
        max_backoff: Cap of the computed wait.
        max_retry_after: A Retry-After above this many seconds fails the request instead.
    """

    max_retries: int = 5
    backoff_factor: float = 0.5
    max_backoff: float = 60.0
    max_retry_after: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based).

        The exponential wait is jittered to between half and all of its value ("equal
        jitter"); a server's Retry-After is a lower bound, with up to 10% jitter on top.
        """
        base = min(self.max_backoff, self.backoff_factor * (2**attempt))
        wait = base * self.rng.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, retry_after * self.rng.uniform(1.0, 1.1))
        return wait


class RateLimiter:
    """At most ``per_second`` request starts per second, evenly spaced (no bursts)."""

    def __init__(
        self,
        per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second if per_second and per_second > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next request may start."""
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            if self._next > now:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def mask_url(
    url: str, secret_params: Collection[str] = (), redactor: Redactor | None = None
) -> str:
    """``url`` fit for logs and errors: secret query values and passwords masked.

    Args:
        url: The URL.
        secret_params: Query parameter names whose values are secret (besides names that
            look secret, such as ``token`` or ``api_key``).
        redactor: Masks any known secret value left anywhere in the URL.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(
        f"{quote(k, safe='')}="
        + (MASK if k in secret_params or SECRET_NAME.search(k) else quote(v, safe=":,/"))
        for k, v in pairs
    )
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return redactor.redact(shown) if redactor is not None else shown


def drop_params(url: str, names: Collection[str]) -> str:
    """``url`` without the query parameters ``names``."""
    if not names:
        return url
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


@dataclass
class Response:
    """A successful response with its JSON body.

    Attributes:
        url: The final URL (after redirects), unmasked: for building next-page URLs.
        status: The HTTP status.
        headers: Response headers.
        links: The parsed Link header, by rel.
        body: The decoded JSON body (None for an empty body).
    """

    url: str
    status: int
    headers: Mapping[str, str]
    links: Mapping[str, Mapping[str, str]]
    body: Any


class HttpClient:
    """GET/POST JSON with retries, a rate limit and authentication.

    Args:
        headers: Headers of every request.
        connect_timeout: Seconds to connect.
        read_timeout: Seconds to wait for response data.
        retry: The retry policy.
        limiter: The rate limiter.
        redactor: Masks secret values in messages.
        verify: Verify TLS certificates.
        sleep: The sleep function (tests may replace it).
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        redactor: Redactor | None = None,
        verify: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.headers = dict(headers or {})
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter(None)
        self.redactor = redactor or Redactor()
        self.verify = verify
        self.auth: Auth | None = None
        self._sleep = sleep
        self._session = requests.Session()

    def mask(self, url: str) -> str:
        """``url`` with every secret masked."""
        names = self.auth.query_params if self.auth is not None else ()
        return mask_url(url, names, self.redactor)

    def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """GET ``url`` with ``params``, authenticated and rate limited; see :meth:`request_json`."""
        return self.request_json("GET", url, params=params, headers=headers)

    def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        basic: tuple[str, str] | None = None,
        authenticate: bool = True,
        rate_limited: bool = True,
    ) -> Response:
        """Send a request, retrying transient failures, and decode its JSON body.

        Args:
            method: HTTP method.
            url: Absolute URL (may carry a query string).
            params: Query parameters added to the URL.
            data: Form fields (for POST).
            headers: Extra headers.
            basic: HTTP Basic credentials for this request.
            authenticate: Apply the client's auth (False for the OAuth2 token request).
            rate_limited: Count the request against the rate limit.

        Returns:
            The response with its decoded body.

        Raises:
            HttpError: A 4xx other than 408/429, the retry budget spent, a Retry-After
                above ``max_retry_after``, or a body that is not JSON.
        """
        attempt = 0
        refreshed = False
        while True:
            prepared = self._prepare(method, url, params, data, headers, basic, authenticate)
            full_url = str(prepared.url or url)
            shown = self.mask(full_url)
            if rate_limited:
                self.limiter.wait()
            retry_after: float | None = None
            status: int | None = None
            try:
                settings = self._session.merge_environment_settings(
                    full_url, {}, None, self.verify, None
                )
                resp = self._session.send(prepared, timeout=self.timeout, **settings)
            except requests.Timeout:
                failure = f"timed out (connect {self.timeout[0]}s, read {self.timeout[1]}s)"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                failure = f"connection error: {self.redactor.redact(str(exc))[:300]}"
            except requests.RequestException as exc:  # e.g. too many redirects: not transient
                raise HttpError(
                    f"{method} {shown} failed: {type(exc).__name__}: "
                    f"{self.redactor.redact(str(exc))[:300]}"
                ) from None
            else:
                status = resp.status_code
                auth = self.auth
                if (
                    status == 401
                    and authenticate
                    and auth is not None
                    and auth.refreshable
                    and not refreshed
                ):
                    refreshed = True
                    logger.info("%s %s: 401, fetching a new access token", method, shown)
                    auth.invalidate()
                    continue
                if status in RETRY_STATUSES or 500 <= status <= 599:
                    failure = f"status {status} {resp.reason}: {self._excerpt(resp)}"
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                elif status >= 400:
                    what = "authentication failed: " if status in (401, 403) else ""
                    raise HttpError(
                        f"{what}{method} {shown} returned {status} {resp.reason}: "
                        f"{self._excerpt(resp)}",
                        status,
                    )
                else:
                    return Response(
                        url=resp.url,
                        status=status,
                        headers=resp.headers,
                        links=resp.links,
                        body=self._decode(method, shown, resp),
                    )
            if attempt >= self.retry.max_retries:
                raise HttpError(
                    f"{method} {shown} failed after {attempt + 1} attempt(s); last: {failure}",
                    status,
                )
            if retry_after is not None and retry_after > self.retry.max_retry_after:
                raise HttpError(
                    f"{method} {shown}: the server asks to wait {retry_after:.0f}s (Retry-After), "
                    f"more than max_retry_after={self.retry.max_retry_after:g}; last: {failure}",
                    status,
                )
            wait = self.retry.delay(attempt, retry_after)
            logger.warning(
                "%s %s: %s; retry %d of %d in %.2fs",
                method,
                shown,
                failure,
                attempt + 1,
                self.retry.max_retries,
                wait,
            )
            self._sleep(wait)
            attempt += 1

    def _prepare(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        basic: tuple[str, str] | None,
        authenticate: bool,
    ) -> requests.PreparedRequest:
        all_headers = {**self.headers, **(headers or {})}
        all_params = {k: v for k, v in (params or {}).items() if v is not None}
        if authenticate and self.auth is not None:
            self.auth.apply(all_headers, all_params)
            url = drop_params(url, self.auth.query_params)
        request = requests.Request(
            method, url, params=all_params, data=data, headers=all_headers, auth=basic
        )
        return self._session.prepare_request(request)

    def _excerpt(self, resp: requests.Response, size: int = 200) -> str:
        try:
            text = resp.content[: size * 4].decode(resp.encoding or "utf-8", errors="replace")
        except (LookupError, TypeError):
            text = repr(resp.content[:size])
        text = _SPACE.sub(" ", text).strip()
        if len(text) > size:
            text = text[: size - 3] + "..."
        return self.redactor.redact(text) or "(empty body)"

    def _decode(self, method: str, shown: str, resp: requests.Response) -> Any:
        if not resp.content.strip():
            return None
        try:
            return loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(
                f"{method} {shown} returned {resp.status_code} but the body is not valid JSON "
                f"({exc}); it starts with: {self._excerpt(resp, 120)}",
                resp.status_code,
            ) from None

    def close(self) -> None:
        """Close the session's connections."""
        self._session.close()
