"""A real HTTP server on 127.0.0.1 for the tap-dativo-rest tests (stdlib http.server in a
daemon thread): every pagination style, every auth scheme, 429 with Retry-After,
intermittent 5xx, slow responses, malformed JSON and records that do not fit.

Datasets are named lists of orders, chosen with the ``ds`` query parameter (default
``orders``), so tests that add rows do not disturb the others.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BEARER_TOKEN = "bearer-s3cret-token-xyz"
API_KEY = "k3y-of-the-api-0042"
BASIC_USER = "alice"
BASIC_PASSWORD = "pa55word-s3cret"
CLIENT_ID = "dativo-client"
CLIENT_SECRET = "client-s3cret-value"

#: The declared JSON Schema of an order.
ORDERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "updated_at": {"type": "string", "format": "date-time"},
        "amount": {"type": ["number", "null"]},
        "status": {"type": ["string", "null"]},
        "paid": {"type": ["boolean", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "customer": {
            "type": ["object", "null"],
            "properties": {
                "name": {"type": ["string", "null"]},
                "vip": {"type": ["boolean", "null"]},
            },
        },
        "note": {"type": ["string", "null"]},
    },
}


def iso(moment: dt.datetime) -> str:
    """A UTC date-time as the API writes it: ``2024-01-01T05:00:00Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_order(i: int) -> dict[str, Any]:
    """Order ``i``: updated ``i`` hours after BASE_TIME."""
    return {
        "id": i,
        "updated_at": iso(BASE_TIME + dt.timedelta(hours=i)),
        "amount": i * 1.5,
        "status": ("open", "paid", "shipped")[i % 3],
        "paid": i % 2 == 0,
        "tags": ["t1", "t2"][: i % 3],
        "customer": {"name": f"customer {i}", "vip": i % 5 == 0},
        "note": None if i % 4 else f"note {i}",
    }


@dataclass
class Logged:
    """One request the server received."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class ServerState:
    """Datasets, the request log, per-key counters and issued OAuth2 tokens."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.datasets: dict[str, list[dict[str, Any]]] = {
            "orders": [make_order(i) for i in range(1, 26)]
        }
        self.log: list[Logged] = []
        self.counters: dict[str, int] = {}
        self.tokens: set[str] = set()
        self.tokens_issued = 0

    def set_dataset(self, name: str, records: list[dict[str, Any]]) -> None:
        """Create or replace a dataset."""
        with self.lock:
            self.datasets[name] = list(records)

    def add_records(self, name: str, records: list[dict[str, Any]]) -> None:
        """Append records to a dataset."""
        with self.lock:
            self.datasets.setdefault(name, []).extend(records)

    def requests_to(self, path: str) -> list[Logged]:
        """Logged requests whose path starts with ``path``."""
        with self.lock:
            return [r for r in self.log if r.path.startswith(path)]

    def hit(self, key: str) -> int:
        """Count one more request for ``key``; returns the new count."""
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    def revoke_tokens(self) -> None:
        """Make every issued OAuth2 token invalid (as if expired server-side)."""
        with self.lock:
            self.tokens.clear()


def _since_filter(
    records: list[dict[str, Any]], since: str | None, ordered: bool = True
) -> list[dict[str, Any]]:
    if not ordered:  # served as stored: for records that are deliberately malformed
        return records
    rows = sorted(records, key=lambda r: (r["updated_at"], r["id"]))
    if not since:
        return rows
    bound = dt.datetime.fromisoformat(since)
    if bound.tzinfo is None:
        bound = bound.replace(tzinfo=dt.UTC)
    return [r for r in rows if dt.datetime.fromisoformat(r["updated_at"]) > bound]


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the behaviours the tests need."""

    protocol_version = "HTTP/1.1"
    server: RestTestServer.HTTPServer  # type: ignore[name-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    # -- plumbing ---------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self.server.state  # type: ignore[no-any-return]

    def _send(
        self,
        status: int,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _records(self) -> list[dict[str, Any]]:
        with self.state.lock:
            records = list(self.state.datasets.get(self.query.get("ds", "orders"), []))
        ordered = self.query.get("sort") != "none"
        return _since_filter(records, self.query.get("updated_since"), ordered)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.route = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        with self.state.lock:
            self.state.log.append(
                Logged(time.monotonic(), method, parts.path, dict(self.query), dict(self.headers))
            )
        for prefix, handler in self._routes():
            if parts.path == prefix or parts.path.startswith(prefix + "/"):
                handler()
                return
        self._send(404, {"error": f"no route {parts.path}"})

    def _routes(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("/page", self.page),
            ("/offset", self.offset),
            ("/cursor", self.cursor),
            ("/link", self.link),
            ("/next_url", self.next_url),
            ("/all", self.all),
            ("/v1/orders", self.v1_orders),
            ("/secure", self.secure),
            ("/oauth/token", self.oauth_token),
            ("/flaky", self.flaky),
            ("/throttled", self.throttled),
            ("/broken", self.broken),
            ("/slow", self.slow),
            ("/malformed", self.malformed),
            ("/same_cursor", self.same_cursor),
        ]

    # -- pagination styles ----------------------------------------------------------

    def page(self) -> None:
        page = int(self.query.get("page", 1))
        size = int(self.query.get("per_page", 10))
        records = self._records()[(page - 1) * size : page * size]
        self._send(200, {"data": records, "page": page})

    def offset(self) -> None:
        records = self._records()
        start = int(self.query.get("offset", 0))
        limit = int(self.query.get("limit", 10))
        self._send(200, {"items": records[start : start + limit], "total": len(records)})

    def _cursor_page(self) -> dict[str, Any]:
        records = self._records()
        cursor = self.query.get("cursor")
        start = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        limit = int(self.query.get("limit", 10))
        end = start + limit
        token = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(records) else None
        return {"data": records[start:end], "next_cursor": token}

    def cursor(self) -> None:
        self._send(200, self._cursor_page())

    def v1_orders(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {BEARER_TOKEN}":
            self._send(401, {"error": "invalid token"})
            return
        self._send(200, self._cursor_page())

    def _next_query(self, page: int) -> str:
        return urlencode({**self.query, "page": page})

    def link(self) -> None:
        page = int(self.query.get("page", 1))
        size = int(self.query.get("per_page", 10))
        records = self._records()
        headers = {}
        if page * size < len(records):
            host = self.headers.get("Host")
            headers["Link"] = (
                f'<http://{host}/link?{self._next_query(page + 1)}>; rel="next", '
                f'<http://{host}/link?{self._next_query(1)}>; rel="first"'
            )
        self._send(200, records[(page - 1) * size : page * size], headers=headers)

    def next_url(self) -> None:
        page = int(self.query.get("page", 1))
        size = int(self.query.get("per_page", 10))
        records = self._records()
        following = None
        if page * size < len(records):
            following = f"/next_url?{self._next_query(page + 1)}"  # relative on purpose
        body = {"results": records[(page - 1) * size : page * size], "links": {"next": following}}
        self._send(200, body)

    def all(self) -> None:
        self._send(200, {"data": self._records()})

    def same_cursor(self) -> None:
        self._send(200, {"data": self._records()[:2], "next_cursor": "again"})

    # -- auth ----------------------------------------------------------------------

    def _authorized(self, scheme: str) -> bool:
        header = self.headers.get("Authorization") or ""
        if scheme == "bearer":
            return header == f"Bearer {BEARER_TOKEN}"
        if scheme == "apikey-header":
            return self.headers.get("X-API-Key") == API_KEY
        if scheme == "apikey-query":
            return self.query.get("api_key") == API_KEY
        if scheme == "basic":
            expected = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
            return header == f"Basic {expected}"
        if scheme == "oauth":
            with self.state.lock:
                return header.startswith("Bearer ") and header[7:] in self.state.tokens
        return False

    def secure(self) -> None:
        scheme = self.route.split("/")[2] if self.route.count("/") >= 2 else ""
        if not self._authorized(scheme):
            self._send(401, {"error": "invalid credentials"}, headers={"WWW-Authenticate": "x"})
            return
        self._send(200, {"data": self._records()[:3]})

    def oauth_token(self) -> None:
        form = dict(parse_qsl(self.body.decode()))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("Authorization") or ""
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if (
            form.get("grant_type") != "client_credentials"
            or client_id != CLIENT_ID
            or secret != CLIENT_SECRET
        ):
            self._send(401, {"error": "invalid_client"})
            return
        with self.state.lock:
            self.state.tokens_issued += 1
            token = f"access-{self.state.tokens_issued}-{time.monotonic_ns()}"
            self.state.tokens.add(token)
        self._send(200, {"access_token": token, "token_type": "bearer", "expires_in": 3600})

    # -- resilience ------------------------------------------------------------------

    def flaky(self) -> None:
        """The first ``fail`` requests per path get ``status`` (default 500)."""
        count = self.state.hit(self.route)
        if count <= int(self.query.get("fail", 2)):
            status = int(self.query.get("status", 500))
            self._send(status, {"error": "temporary failure"})
            return
        self._send(200, {"data": self._records()[:3]})

    def throttled(self) -> None:
        """The first ``fail`` requests per path get 429 with Retry-After ``retry_after``."""
        count = self.state.hit(self.route)
        if count <= int(self.query.get("fail", 1)):
            headers = {"Retry-After": self.query.get("retry_after", "1")}
            self._send(429, {"error": "slow down"}, headers=headers)
            return
        self._send(200, {"data": self._records()[:3]})

    def broken(self) -> None:
        self._send(500, raw=b"internal error: database on fire")

    def slow(self) -> None:
        time.sleep(float(self.query.get("delay", 1)))
        self._send(200, {"data": self._records()[:2]})

    def malformed(self) -> None:
        self._send(200, raw=b'{"data": [{"id": 1, "amount": ')


class RestTestServer:
    """The server in a daemon thread on 127.0.0.1 and a free port."""

    class HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        state: ServerState

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that timed out (the slow-response tests) closed its socket.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    def __init__(self) -> None:
        self.httpd = RestTestServer.HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.state = ServerState()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def state(self) -> ServerState:
        """The server's data and request log."""
        return self.httpd.state

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


_lock = threading.Lock()
_shared: list[RestTestServer] = []


def shared_server() -> RestTestServer:
    """The server shared by the rest tests, started on first use (safe at import time)."""
    with _lock:
        if not _shared:
            _shared.append(RestTestServer())
        return _shared[0]
