"""Secrets never reach logs, errors or outputs: one Redactor, applied to every log record
of the process (whichever logger or handler) and to every message Dativo prints.

What is masked (docs/secrets.md):

- each secret value and the forms it takes on the way out: base64 (standard and URL-safe,
  with and without padding), JSON-escaped (ASCII and not), Python-escaped and URL-encoded
  (``quote`` and ``quote_plus``, upper- and lower-case hex);
- ``user:password`` pairs (a setting that names a user next to a secret, or a URL's user
  info), so a server echoing a Basic ``Authorization`` header shows only ``********``;
- a form of LONG_SECRET characters or more wherever it occurs; a shorter form only where
  it stands as a value, not where it continues a name (letters, digits or ``_`` next to
  it, or ``-``/``.`` followed by them): with password ``postgres``, ``password=postgres``
  is masked and ``tap-dativo-postgres-to-x`` or ``postgres.public.t`` are not;
- nothing shorter than MIN_SECRET characters (masking it would corrupt every line).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "********"

#: Values shorter than this are never masked.
MIN_SECRET = 4
#: Forms at least this long are masked anywhere, even inside a longer token.
LONG_SECRET = 12

#: Setting names treated as secret even when a plugin does not mark them.
SECRET_NAME = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential)", re.IGNORECASE
)
#: Setting names whose value is the user half of a ``user:password`` pair.
USER_NAME = re.compile(r"^(user(_?name)?|login|client_id|(aws_)?access_key(_id)?)$", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def derived_forms(secret: str) -> set[str]:
    """``secret`` and the encodings under which it can leave the process."""
    forms = {secret}
    raw = secret.encode("utf-8")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw).decode("ascii")
        forms.update((text, text.rstrip("=")))
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.add(repr(secret)[1:-1])
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded))
    return {f for f in forms if len(f) >= MIN_SECRET}


def _bounded(form: str) -> str:
    """A pattern matching ``form`` only where it does not continue a name."""
    left = r"(?<!\w)(?<!\w[.\-])" if re.match(r"\w", form) else ""
    right = r"(?!\w)(?![.\-]\w)" if re.search(r"\w$", form) else ""
    return left + re.escape(form) + right


class Redactor:
    """Replaces every known secret, in any of its derived forms, with ``********``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._anywhere: re.Pattern[str] | None = None
        self._bounded: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Register more secret values (values shorter than MIN_SECRET are ignored)."""
        with self._lock:
            before = len(self._secrets)
            for value in secrets:
                if isinstance(value, str) and len(value) >= MIN_SECRET:
                    self._secrets.add(value)
            if len(self._secrets) == before:
                return
            forms = set().union(*(derived_forms(s) for s in self._secrets))
            ordered = sorted(forms, key=lambda f: (-len(f), f))
            anywhere = [re.escape(f) for f in ordered if len(f) >= LONG_SECRET]
            bounded = [_bounded(f) for f in ordered if len(f) < LONG_SECRET]
            self._anywhere = re.compile("|".join(anywhere)) if anywhere else None
            self._bounded = re.compile("|".join(bounded)) if bounded else None

    def redact(self, text: str) -> str:
        """``text`` with every secret masked."""
        if not text:
            return text
        if self._anywhere is not None:
            text = self._anywhere.sub(MASK, text)
        if self._bounded is not None:
            text = self._bounded.sub(MASK, text)
        return text

    def install(self) -> None:
        """Mask secrets in every log record this process creates from now on."""
        with _installed_lock:
            if not any(r is self for r in _installed):
                _installed.append(self)
            _install_record_factory()


_installed: list[Redactor] = []
_installed_lock = threading.Lock()
_factory_installed = False
_process_redactor = Redactor()


def process_redactor() -> Redactor:
    """The process-wide Redactor installed on logging (Singer plugins add their secrets)."""
    _process_redactor.install()
    return _process_redactor


def redact(text: str) -> str:
    """``text`` masked by every installed Redactor."""
    for redactor in list(_installed):
        text = redactor.redact(text)
    return text


def _install_record_factory() -> None:
    # A record factory, not handler filters: it also covers loggers with their own
    # handlers (botocore, boto3, urllib3) and handlers added after the install.
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call must still not show its arguments unmasked
        message = f"{record.msg} {record.args}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def secret_values(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    sensitive: Iterable[str] = (),
) -> list[str]:
    """Values in ``config`` that are secret: marked in ``schema`` (``secret: true``),
    named in ``sensitive``, or whose setting name looks like a secret; plus the
    ``user:password`` pairs they form and the passwords inside secret URLs or DSNs."""
    marked = set(sensitive)
    props = (schema or {}).get("properties", {}) if schema else {}
    for key, prop in props.items():
        if isinstance(prop, Mapping) and (prop.get("secret") or prop.get("sensitive")):
            marked.add(key)
    found: list[str] = []

    def is_secret(key: str | None) -> bool:
        return key is not None and (key in marked or bool(SECRET_NAME.search(key)))

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, Mapping):
            users = [
                v
                for k, v in value.items()
                if isinstance(v, str) and USER_NAME.match(str(k)) and not is_secret(str(k))
            ]
            for k, v in value.items():
                if isinstance(v, str) and is_secret(str(k)):
                    found.extend(f"{user}:{v}" for user in users)
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and is_secret(key):
            found.append(value)
            found.extend(_embedded_passwords(value))

    walk(config, None)
    return found


def _embedded_passwords(value: str) -> list[str]:
    """The password (and ``user:password``) inside a URL or a ``password=`` DSN."""
    found: list[str] = []
    if "://" in value:
        try:
            parts = urlsplit(value.strip())
            user, password = parts.username, parts.password
        except ValueError:
            user = password = None
        if password:
            found += [password, unquote(password), f"{unquote(user or '')}:{unquote(password)}"]
    for match in _DSN_PASSWORD.finditer(value):
        text = match.group(1)
        if text.startswith("'"):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        found.append(text)
    return found


def environment_secrets(prefix: str, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Secret values of settings given as ``<PREFIX><SETTING>`` environment variables."""
    settings = {
        name[len(prefix) :].lower(): value
        for name, value in os.environ.items()
        if name.startswith(prefix)
    }
    return secret_values(settings, schema)
