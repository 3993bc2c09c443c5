"""PostgreSQL connection strings parsed here, by libpq's rules, before libpq sees them.

libpq's own parse errors quote the string around the fault (``missing "=" after
"SpcB-3e4r"``), which may be part of a password. Parsing first means a malformed DSN is a
ConfigError that names only connection keywords and positions, never a value; libpq then
receives keyword arguments it has no reason to reject.

Forms (as in the libpq documentation, "Connection Strings"):

- ``keyword = value`` pairs separated by whitespace; a value is either unquoted (up to
  the next whitespace) or in single quotes, and a backslash escapes the next character in
  both.
- ``postgresql://`` or ``postgres://`` URIs: ``[user[:password]@][host[:port][,...]]
  [/dbname][?keyword=value&...]``, each part percent-decoded; IPv6 hosts in brackets;
  ``ssl=true`` means ``sslmode=require``. An ``@`` inside the user name or password must be
  written ``%40``: libpq ends the user info at the first ``@``, so an unescaped one would
  send the rest of the password as a host name; it is refused here instead.
"""

from __future__ import annotations

import functools
import re

import psycopg

from dativo_bridge.errors import ConfigError

_URI_PREFIXES = ("postgresql://", "postgres://")
#: ``host[:port],...`` as libpq reads it (a password with '/' makes a "port" of letters).
_HOST_LIST = re.compile(r"[^:,]*(:\d*)?(,[^:,]*(:\d*)?)*|\[.*")


@functools.cache
def keywords() -> frozenset[str]:
    """The connection keywords the installed libpq knows."""
    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def parse_dsn(dsn: str) -> dict[str, str]:
    """Keyword arguments for libpq from a connection string or URI.

    Raises:
        ConfigError: The DSN is malformed; the message never contains a value from it.
    """
    text = dsn.strip()
    if text.startswith(_URI_PREFIXES):
        return _parse_uri(text)
    return _parse_keywords(text)


def _known(keyword: str, where: str) -> str:
    if keyword not in keywords():
        raise ConfigError(
            f"dsn: {where} is not a PostgreSQL connection keyword (a value with spaces "
            "needs single quotes: password='a b')"
        )
    return keyword


def _parse_keywords(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    i, n, item = 0, len(text), 0
    previous = "the start"
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return result
        item += 1
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        keyword = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=" or not keyword:
            raise ConfigError(
                f'dsn: item {item} (after {previous}) has no "=": write keyword=value pairs, '
                "and quote a value with spaces in single quotes (password='a b')"
            )
        _known(keyword, f"item {item} (after {previous})")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise ConfigError(f"dsn: the quoted value of '{keyword}' is not terminated")
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    value.append(text[i])
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
        result[keyword] = "".join(value)
        previous = f"the value of '{keyword}'"


def _decode(part: str, what: str) -> str:
    """Percent-decode ``part`` as libpq does (``+`` stays ``+``)."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", part):
        raise ConfigError(f"dsn: the {what} has an invalid percent-encoding (write % as %25)")
    out = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "%":
            out.append(int(part[i + 1 : i + 3], 16))
            i += 3
        else:
            out += part[i].encode()
            i += 1
    if 0 in out:
        raise ConfigError(f"dsn: the {what} contains a NUL byte (%00)")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"dsn: the {what} is not UTF-8 once percent-decoded") from None


def _parse_uri(text: str) -> dict[str, str]:
    rest = text.split("://", 1)[1]
    result: dict[str, str] = {}
    # libpq: the user info ends at the first '@' before the first '/'.
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    tail = "" if slash < 0 else rest[slash:]
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        if "@" in userinfo:
            raise ConfigError(
                "dsn: the URI's user name or password contains '@'; percent-encode it as %40 "
                "(libpq would read the rest of the password as the host)"
            )
        user, colon, password = userinfo.partition(":")
        if user:
            result["user"] = _decode(user, "user name")
        if colon and password:
            result["password"] = _decode(password, "password")
    else:
        hosts = authority
        if "@" in tail.split("?", 1)[0] and not re.fullmatch(
            r"[^:]*(:\d*)?(,[^:]*(:\d*)?)*", hosts
        ):
            raise ConfigError(
                "dsn: the URI's password seems to contain '/'; percent-encode it as %2F "
                "(and '@' as %40)"
            )
    hosts, _, query = hosts.partition("?")
    if tail:
        path, _, query = tail[1:].partition("?")
    else:
        path = ""
    names: list[str] = []
    ports: list[str] = []
    for number, spec in enumerate(hosts.split(",") if hosts else [], start=1):
        if spec.startswith("["):
            end = spec.find("]")
            if end < 0:
                raise ConfigError(f"dsn: IPv6 host {number} of the URI lacks its closing ']'")
            host, after = spec[1:end], spec[end + 1 :]
            if after and not after.startswith(":"):
                raise ConfigError(f"dsn: unexpected text after IPv6 host {number} of the URI")
            port = after[1:]
        else:
            host, _, port = spec.partition(":")
        port = _decode(port, f"port of host {number}")
        if port and not port.isdigit():
            raise ConfigError(f"dsn: the port of host {number} in the URI is not a number")
        names.append(_decode(host, f"host {number}"))
        ports.append(port)
    if any(names):
        result["host"] = ",".join(names)
    if any(ports):
        result["port"] = ",".join(ports)
    if path:
        result["dbname"] = _decode(path, "database name")
    for number, pair in enumerate(query.split("&") if query else [], start=1):
        key, equals, value = pair.partition("=")
        if not equals or "=" in value:
            raise ConfigError(f"dsn: URI query parameter {number} is not keyword=value")
        key = _decode(key, f"keyword of URI query parameter {number}")
        value = _decode(value, f"value of URI query parameter {number}")
        if key == "ssl" and value == "true":
            key, value = "sslmode", "require"
        result[_known(key, f"URI query parameter {number}")] = value
    return result
