"""Each auth scheme: success, and a 401 failure whose message is clear and secret-free;
OAuth2 token fetch, refresh after a 401 and refresh before expiry."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tap_dativo_rest.auth import OAuth2ClientCredentials
from tap_dativo_rest.http import HttpError
from tap_dativo_rest.reader import RestReader

from .common import SERVER, config, read_all, stream
from .server import (
    API_KEY,
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
)

pytestmark = pytest.mark.integration


def _oauth(secret: str = CLIENT_SECRET, client_auth: str = "body") -> dict[str, Any]:
    return {
        "type": "oauth2",
        "token_url": f"{SERVER.url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "scope": "orders:read",
        "client_auth": client_auth,
    }


# scheme -> (path, good auth, bad auth, the secret of the bad auth)
SCHEMES: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "bearer": (
        "/secure/bearer",
        {"type": "bearer", "token": BEARER_TOKEN},
        {"type": "bearer", "token": "wrong-bearer-token"},
        "wrong-bearer-token",
    ),
    "api_key_header": (
        "/secure/apikey-header",
        {"type": "api_key", "api_key": API_KEY, "in": "header", "name": "X-API-Key"},
        {"type": "api_key", "api_key": "wrong-api-key-1", "in": "header", "name": "X-API-Key"},
        "wrong-api-key-1",
    ),
    "api_key_query": (
        "/secure/apikey-query",
        {"type": "api_key", "api_key": API_KEY, "in": "query", "name": "api_key"},
        {"type": "api_key", "api_key": "wrong-api-key-2", "in": "query", "name": "api_key"},
        "wrong-api-key-2",
    ),
    "basic": (
        "/secure/basic",
        {"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD},
        {"type": "basic", "username": BASIC_USER, "password": "wrong-password"},
        "wrong-password",
    ),
    "oauth2_body": (
        "/secure/oauth",
        _oauth(),
        _oauth("wrong-client-secret"),
        "wrong-client-secret",
    ),
    "oauth2_basic": (
        "/secure/oauth",
        _oauth(client_auth="basic"),
        _oauth("wrong-client-secret", "basic"),
        "wrong-client-secret",
    ),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_auth_scheme_succeeds(scheme: str) -> None:
    path, good, _, _ = SCHEMES[scheme]
    result = read_all(config(stream(path), auth=good))
    assert result.ids() == [1, 2, 3]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_auth_failure_is_a_clear_error_without_the_secret(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, _, bad, secret = SCHEMES[scheme]
    before = len(SERVER.state.log)
    with caplog.at_level(logging.DEBUG), pytest.raises(HttpError) as failure:
        read_all(config(stream(path), auth=bad))
    message = str(failure.value)
    assert failure.value.status == 401
    assert "authentication failed" in message
    assert "401" in message
    assert secret not in message
    assert secret not in caplog.text
    target = "/oauth/token" if scheme.startswith("oauth2") else path
    assert target in message
    if scheme == "api_key_query":
        assert "api_key=********" in message
    # 401 is not retried (OAuth2 fetched no token, so there is nothing to refresh).
    assert len(SERVER.state.log) - before == 1


def test_oauth2_token_is_fetched_once_and_refreshed_after_a_401() -> None:
    reader = RestReader()
    reader.open(config(stream("/secure/oauth"), auth=_oauth()))
    try:
        auth = reader.client.auth
        assert isinstance(auth, OAuth2ClientCredentials)
        info = reader.discover()[0]
        for _ in range(2):
            assert sum(b.num_rows for b in reader.read(info, None)) == 3
        assert auth.tokens_fetched == 1

        SERVER.state.revoke_tokens()  # the server forgets the token: next call gets 401
        before = len(SERVER.state.requests_to("/secure/oauth"))
        assert sum(b.num_rows for b in reader.read(info, None)) == 3
        assert auth.tokens_fetched == 2
        assert len(SERVER.state.requests_to("/secure/oauth")) - before == 2  # 401, then 200
    finally:
        reader.close()


def test_oauth2_token_is_refreshed_before_it_expires() -> None:
    reader = RestReader()
    reader.open(config(stream("/secure/oauth"), auth=_oauth()))
    try:
        auth = reader.client.auth
        assert isinstance(auth, OAuth2ClientCredentials)
        now = [1000.0]
        auth._clock = lambda: now[0]
        info = reader.discover()[0]
        list(reader.read(info, None))
        assert auth.tokens_fetched == 1
        now[0] += 3600 - 31  # the server said expires_in=3600; 30 s margin
        list(reader.read(info, None))
        assert auth.tokens_fetched == 1
        now[0] += 2
        before = len(SERVER.state.requests_to("/secure/oauth"))
        list(reader.read(info, None))
        assert auth.tokens_fetched == 2
        assert len(SERVER.state.requests_to("/secure/oauth")) - before == 1  # no 401 first
    finally:
        reader.close()


def test_credentials_in_plain_headers_work_and_count_as_secrets() -> None:
    cfg = config(stream("/secure/bearer"), headers={"Authorization": f"Bearer {BEARER_TOKEN}"})
    result = read_all(cfg)
    assert result.ids() == [1, 2, 3]
    assert result.reader is not None
    shown = result.reader.client.redactor.redact(f"server echoed {BEARER_TOKEN}")
    assert shown == "server echoed ********"
