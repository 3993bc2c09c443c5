"""PostgreSQL DSNs are parsed by libpq's rules before libpq sees them: valid ones mean what
they mean to libpq, malformed ones are ConfigErrors that hold no part of the password."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from dativo_bridge.errors import ConfigError
from tap_dativo_postgres.dsn import parse_dsn
from tap_dativo_postgres.reader import connect, connection_kwargs

VALID = [
    "host=db.internal port=5433 dbname=app user=alice password=s3cr3t",
    "host = db  password = 'with space and \\' quote'  sslmode=require",
    "password=back\\\\slash\\ and\\ spaces host=h",
    "password='' host=h",
    "host=h password=",
    "postgresql://alice:p%40ss%2Fw0rd%3A%25@db.internal:5433/app?sslmode=require",
    "postgres://alice@h1:1,h2,[::1]:3/db?application_name=x%20y&connect_timeout=5",
    "postgresql:///app?host=/var/run/postgresql",
    "postgresql://%2Ftmp/app",
    "postgresql://alice:pa?ss@h/db",
    "postgresql://alice:@h/db",
    "postgresql://h/db?ssl=true",
    "postgresql://",
]


@pytest.mark.parametrize("dsn", VALID)
def test_valid_dsns_mean_what_they_mean_to_libpq(dsn: str) -> None:
    assert parse_dsn(dsn) == conninfo_to_dict(dsn)


PASSWORD = "SpcB-3e4r"

MALFORMED = [
    f"host=127.0.0.1 password=SpcB {PASSWORD}x",  # unquoted space: libpq quotes the rest
    f"host=127.0.0.1 password='{PASSWORD}",  # unterminated quote
    f"host=127.0.0.1 password={PASSWORD} {PASSWORD}=1",  # a fragment as a keyword
    f"postgresql://alice:{PASSWORD}@x@127.0.0.1:1/db",  # '@' in the password
    f"postgresql://alice:{PASSWORD}/x@127.0.0.1:1/db",  # '/' in the password
    f"postgresql://alice:{PASSWORD}%zz@127.0.0.1:1/db",  # bad percent-encoding
    f"postgresql://alice:{PASSWORD}@127.0.0.1:1/db?{PASSWORD}=1",
]


@pytest.mark.parametrize("dsn", MALFORMED)
def test_malformed_dsn_is_a_config_error_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect({"dsn": dsn, "connect_timeout": 1})
    message = str(caught.value)
    for part in ("SpcB", "3e4r", PASSWORD):
        assert part not in message, message
    assert "dsn" in message


def test_at_in_uri_password_is_named_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="%40"):
        parse_dsn("postgresql://alice:p@ss@db.internal/app")


def test_explicit_settings_override_the_dsn() -> None:
    kwargs = connection_kwargs(
        {"dsn": "postgresql://a:b@h1:1/db1?application_name=x", "host": "h2", "password": "c"}
    )
    assert kwargs["host"] == "h2" and kwargs["password"] == "c"
    assert kwargs["user"] == "a" and kwargs["dbname"] == "db1" and kwargs["port"] == "1"
    assert kwargs["application_name"] == "x" and "conninfo" not in kwargs
