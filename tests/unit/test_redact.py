"""The Redactor masks secrets in the forms they leave in (base64, JSON, URL encoding, Basic
auth pairs), masks short secrets only where they stand as values, and covers every logger."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest

from dativo_bridge.redact import MASK, Redactor, process_redactor, secret_values

TOKEN = 's3cr3t-T0k"en/+with\\ üñí'
PASSWORD = "hunter2!x"


def _b64_forms(raw: bytes) -> list[str]:
    forms = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw).decode()
        forms += [text, text.rstrip("=")]
    return forms


@pytest.mark.parametrize(
    "shown",
    [
        TOKEN,
        *_b64_forms(TOKEN.encode()),
        json.dumps(TOKEN)[1:-1],
        json.dumps(TOKEN, ensure_ascii=False)[1:-1],
        quote(TOKEN, safe=""),
        quote(TOKEN),
        quote_plus(TOKEN),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(TOKEN, safe="")),
    ],
)
def test_derived_forms_of_a_token_are_masked(shown: str) -> None:
    redactor = Redactor([TOKEN])
    assert redactor.redact(f"server said: {shown}!") == f"server said: {MASK}!"


def test_echoed_basic_auth_header_is_masked() -> None:
    config = {"auth": {"username": "alice", "password": PASSWORD}}
    redactor = Redactor(secret_values(config))
    header = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    masked = redactor.redact(f"echo: Authorization: Basic {header}")
    assert header not in masked and masked.endswith(f"Basic {MASK}")
    # ... also the pair from a URL's user info, in base64 and plain
    redactor = Redactor(secret_values({"url_secret": "https://bob:p%40ss-w0rd@api.example"}))
    header = base64.b64encode(b"bob:p@ss-w0rd").decode()
    assert redactor.redact(f"Basic {header}") == f"Basic {MASK}"
    assert "p@ss-w0rd" not in redactor.redact("password p@ss-w0rd")


def test_short_secret_is_not_masked_inside_names() -> None:
    redactor = Redactor(["postgres"])
    assert (
        redactor.redact("state id tap-dativo-postgres-to-target-dativo-parquet")
        == "state id tap-dativo-postgres-to-target-dativo-parquet"
    )
    assert redactor.redact("stream postgres.public.users") == "stream postgres.public.users"
    assert redactor.redact("table postgres_users, mypostgres") == "table postgres_users, mypostgres"
    # ... but where it stands as a value it is
    for shown in ("password=postgres", "'postgres'", "user:postgres@host", "is postgres."):
        assert "postgres" not in redactor.redact(shown), shown


def test_long_secret_is_masked_anywhere_and_tiny_ones_never() -> None:
    redactor = Redactor(["Xq7-longsecret-99", "abc"])
    assert redactor.redact("idXq7-longsecret-99suffix") == f"id{MASK}suffix"
    assert redactor.redact("abc abcdef") == "abc abcdef"


def test_every_logger_is_masked_including_botocore_with_its_own_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    process_redactor().add(["AKIAEXAMPLEKEY12345"])
    botocore = logging.getLogger("botocore.endpoint")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    botocore.addHandler(handler)
    botocore.setLevel(logging.DEBUG)
    try:
        botocore.debug("params: %s", {"aws_access_key_id": "AKIAEXAMPLEKEY12345"})
        try:
            raise RuntimeError("refused AKIAEXAMPLEKEY12345")
        except RuntimeError:
            botocore.exception("failed")
    finally:
        botocore.removeHandler(handler)
        botocore.setLevel(logging.NOTSET)
    texts = [logging.Formatter().format(r) for r in records]
    assert texts and all("AKIAEXAMPLEKEY12345" not in t for t in texts), texts
    assert MASK in texts[0] and MASK in texts[1]
