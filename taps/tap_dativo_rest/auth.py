"""Authentication schemes of tap-dativo-rest: bearer, API key (header or query), basic and
OAuth2 client credentials with token refresh. Secret values are registered with the
client's redactor so no log line or error can show them."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from dativo_bridge.errors import ConfigError, ReadError
from dativo_bridge.settings import with_defaults
from tap_dativo_rest.config import AUTH_SCHEMA
from tap_dativo_rest.http import HttpError

if TYPE_CHECKING:
    from tap_dativo_rest.http import HttpClient

logger = logging.getLogger("dativo.rest")


class Auth:
    """No authentication; the base of every scheme.

    Attributes:
        query_params: Query parameter names that carry a secret (masked in URLs).
        refreshable: Whether a 401 may be cured by :meth:`invalidate` and one more try.
    """

    query_params: frozenset[str] = frozenset()
    refreshable: ClassVar[bool] = False

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add credentials to one request's headers or query parameters."""

    def invalidate(self) -> None:
        """Forget cached credentials (a 401 was received)."""


class BearerAuth(Auth):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add the bearer header."""
        headers["Authorization"] = f"Bearer {self._token}"


class ApiKeyAuth(Auth):
    """An API key in a header (``X-API-Key`` by default) or a query parameter."""

    def __init__(self, key: str, name: str | None, location: str, prefix: str = "") -> None:
        if location not in ("header", "query"):
            raise ConfigError(f"auth 'in' must be 'header' or 'query', got {location!r}")
        self._key = key
        self._location = location
        self._name = name or ("X-API-Key" if location == "header" else "api_key")
        self._prefix = prefix
        if location == "query":
            self.query_params = frozenset({self._name})

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add the key to the header or the query."""
        if self._location == "header":
            headers[self._name] = f"{self._prefix}{self._key}"
        else:
            params[self._name] = self._key


class BasicAuth(Auth):
    """HTTP Basic authentication."""

    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode("ascii")

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add the Authorization header."""
        headers["Authorization"] = self._header


class OAuth2ClientCredentials(Auth):
    """OAuth2 client-credentials grant: a bearer token fetched from ``token_url``, fetched
    again shortly before ``expires_in`` runs out, or once after a 401.

    Args:
        client: The HTTP client that sends the token request (with its retries).
        token_url: The token endpoint.
        client_id: Client id.
        client_secret: Client secret.
        scope: Requested scope, if any.
        extra: More form fields (e.g. ``audience``).
        client_auth: ``body`` (credentials as form fields) or ``basic`` (HTTP Basic).
        clock: Monotonic clock (tests may replace it).
    """

    refreshable = True
    #: Refresh this long before the token expires (at most 10% of its lifetime).
    EXPIRY_MARGIN = 30.0

    def __init__(
        self,
        client: HttpClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        extra: Mapping[str, Any] | None = None,
        client_auth: str = "body",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._extra = dict(extra or {})
        self._client_auth = client_auth
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add a valid bearer token, fetching one if needed."""
        if self._token is None or self._clock() >= self._expires_at:
            self._fetch()
        headers["Authorization"] = f"Bearer {self._token}"

    def invalidate(self) -> None:
        """Drop the current token."""
        self._token = None

    def _fetch(self) -> None:
        data: dict[str, Any] = {"grant_type": "client_credentials", **self._extra}
        if self._scope:
            data["scope"] = self._scope
        basic = None
        if self._client_auth == "basic":
            basic = (self._client_id, self._client_secret)
        else:
            data["client_id"] = self._client_id
            data["client_secret"] = self._client_secret
        try:
            response = self._client.request_json(
                "POST",
                self._token_url,
                data=data,
                basic=basic,
                headers={"Accept": "application/json"},
                authenticate=False,
                rate_limited=False,
            )
        except HttpError as exc:
            raise HttpError(f"OAuth2 token request failed: {exc}", exc.status) from None
        body = response.body if isinstance(response.body, Mapping) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ReadError(
                f"OAuth2 token response from {self._client.mask(self._token_url)} "
                "has no 'access_token'"
            )
        self._client.redactor.add([token])
        try:
            lifetime = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        margin = min(self.EXPIRY_MARGIN, lifetime * 0.1)
        self._token = token
        self._expires_at = self._clock() + lifetime - margin
        self.tokens_fetched += 1
        logger.info("OAuth2: new access token, valid for %.0fs", lifetime)


def _need(settings: Mapping[str, Any], kind: str, *names: str) -> list[str]:
    missing = [n for n in names if not settings.get(n)]
    if missing:
        raise ConfigError(f"auth type '{kind}' needs {', '.join(repr(n) for n in missing)}")
    return [str(settings[n]) for n in names]


def make_auth(settings: Mapping[str, Any] | None, client: HttpClient) -> Auth:
    """The auth scheme of the ``auth`` setting, bound to ``client``.

    Raises:
        ConfigError: Unknown type or missing credentials.
    """
    settings = with_defaults(AUTH_SCHEMA, settings or {})
    kind = settings["type"]
    if kind == "none":
        return Auth()
    if kind == "bearer":
        (token,) = _need(settings, kind, "token")
        return BearerAuth(token)
    if kind == "api_key":
        (key,) = _need(settings, kind, "api_key")
        return ApiKeyAuth(key, settings.get("name"), settings["in"], settings.get("prefix") or "")
    if kind == "basic":
        username = _need(settings, kind, "username")[0]
        return BasicAuth(username, str(settings.get("password") or ""))
    if kind == "oauth2":
        token_url, client_id, secret = _need(
            settings, kind, "token_url", "client_id", "client_secret"
        )
        return OAuth2ClientCredentials(
            client,
            token_url,
            client_id,
            secret,
            scope=settings.get("scope"),
            extra=settings.get("token_params"),
            client_auth=settings["client_auth"],
        )
    raise ConfigError(f"unknown auth type {kind!r} (one of none, bearer, api_key, basic, oauth2)")
