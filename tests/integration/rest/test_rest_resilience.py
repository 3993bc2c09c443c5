"""Retries with backoff on 5xx and 429 (Retry-After honoured), the retry budget, malformed
JSON, slow responses, the rate limit, and secrets kept out of logs and errors."""

from __future__ import annotations

import itertools
import logging
import random
import time

import pytest

from tap_dativo_rest.http import HttpError, RetryPolicy, mask_url, parse_retry_after

from .common import SERVER, config, read_all, stream
from .server import API_KEY

pytestmark = pytest.mark.integration

_unique = itertools.count()


def _path(prefix: str) -> str:
    """A path whose failure counter no other test shares."""
    return f"{prefix}/{next(_unique)}-{time.monotonic_ns()}"


def test_intermittent_5xx_are_retried_with_exponential_backoff() -> None:
    path = _path("/flaky")
    cfg = config(
        stream(path, params={"fail": 3, "status": 503}),
        max_retries=5,
        backoff_factor=0.1,
        max_backoff=10,
    )
    result = read_all(cfg)
    assert result.ids() == [1, 2, 3]
    hits = SERVER.state.requests_to(path)
    assert len(hits) == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    # Retry n waits 0.1 * 2**n seconds, jittered to between half and all of it.
    for n, gap in enumerate(gaps):
        assert 0.1 * 2**n * 0.5 <= gap <= 0.1 * 2**n + 0.25, gaps
    assert gaps[2] > gaps[0]


def test_429_waits_at_least_retry_after() -> None:
    path = _path("/throttled")
    cfg = config(stream(path, params={"fail": 1, "retry_after": 1}), backoff_factor=0.01)
    result = read_all(cfg)
    assert result.ids() == [1, 2, 3]
    first, second = SERVER.state.requests_to(path)
    assert 1.0 <= second.at - first.at <= 1.6


def test_retry_after_beyond_the_maximum_fails_at_once() -> None:
    path = _path("/throttled")
    cfg = config(stream(path, params={"fail": 1, "retry_after": 3600}), max_retry_after=60)
    started = time.monotonic()
    with pytest.raises(HttpError, match=r"asks to wait 3600s \(Retry-After\)") as failure:
        read_all(cfg)
    assert failure.value.status == 429
    assert time.monotonic() - started < 1


def test_retry_budget_exhausted_names_url_status_and_body_not_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = {"type": "api_key", "api_key": API_KEY, "in": "query"}
    cfg = config(stream("/broken", params={"q": "x"}), auth=auth, max_retries=2)
    before = len(SERVER.state.requests_to("/broken"))
    with caplog.at_level(logging.DEBUG), pytest.raises(HttpError) as failure:
        read_all(cfg)
    message = str(failure.value)
    assert failure.value.status == 500
    assert message.startswith(f"GET {SERVER.url}/broken?")
    assert "api_key=********" in message and "q=x" in message
    assert "failed after 3 attempt(s)" in message
    assert "status 500 Internal Server Error: internal error: database on fire" in message
    assert len(SERVER.state.requests_to("/broken")) - before == 3
    # The key was sent (the server saw it) but never shown, not even in urllib3's debug log.
    assert SERVER.state.requests_to("/broken")[-1].query["api_key"] == API_KEY
    assert API_KEY not in message
    assert "retry 2 of 2" in caplog.text
    assert API_KEY not in caplog.text


def test_malformed_json_is_an_error_without_retries() -> None:
    before = len(SERVER.state.requests_to("/malformed"))
    with pytest.raises(HttpError, match="body is not valid JSON") as failure:
        read_all(config(stream("/malformed")))
    assert 'it starts with: {"data": [{"id": 1, "amount":' in str(failure.value)
    assert len(SERVER.state.requests_to("/malformed")) - before == 1


def test_slow_responses_time_out_then_fail_after_the_retries() -> None:
    cfg = config(stream("/slow", params={"delay": 1.5}), timeout=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(HttpError, match=r"failed after 2 attempt\(s\); last: timed out") as failure:
        read_all(cfg)
    elapsed = time.monotonic() - started
    assert failure.value.status is None
    assert 0.6 <= elapsed < 1.4  # two 0.3 s timeouts and a short backoff, not 2 x 1.5 s


def test_a_slow_response_within_the_timeout_is_fine() -> None:
    result = read_all(config(stream("/slow", params={"delay": 0.2}), timeout=2))
    assert result.ids() == [1, 2]


def test_rate_limit_spaces_requests() -> None:
    ds = f"rate-{next(_unique)}"
    SERVER.state.set_dataset(ds, SERVER.state.datasets["orders"][:20])
    cfg = config(
        stream(
            "/page",
            params={"ds": ds},
            pagination={"type": "page", "size_param": "per_page", "size": 4},
        ),
        requests_per_second=10,
    )
    result = read_all(cfg)
    assert result.ids() == list(range(1, 21))
    hits = [r for r in SERVER.state.log if r.query.get("ds") == ds]
    assert len(hits) == 6  # five full pages and the empty one that ends the stream
    # Measured when the server handles each request, so one gap may look a little short
    # (connection set-up delays the first); over the whole read the jitter cancels out.
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert min(gaps) >= 0.075, gaps
    assert hits[-1].at - hits[0].at >= 0.47, gaps  # 5 intervals of 0.1 s


def test_retry_policy_delays_are_bounded() -> None:
    policy = RetryPolicy(backoff_factor=0.5, max_backoff=4, rng=random.Random(3))
    for attempt in range(8):
        wait = policy.delay(attempt)
        cap = min(4, 0.5 * 2**attempt)
        assert cap / 2 <= wait <= cap
    assert 7 <= policy.delay(0, retry_after=7) <= 7.7


def test_retry_after_parsing_and_url_masking() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("soon") is None
    assert (
        mask_url("https://bob:hunter22@x.io/a?page=2&access_token=abc&key=k1", {"key"})
        == "https://bob:********@x.io/a?page=2&access_token=********&key=********"
    )
