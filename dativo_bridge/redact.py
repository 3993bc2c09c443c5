"""Secrets never reach logs, errors or outputs: one Redactor, installed on every handler."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"

#: Setting names treated as secret even when a plugin does not mark them.
SECRET_NAME = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential)", re.IGNORECASE
)


class Redactor:
    """Replaces every known secret value in text with ``********``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Register more secret values (values shorter than 4 characters are ignored)."""
        for value in secrets:
            if isinstance(value, str) and len(value) >= 4:
                self._secrets.add(value)
        if self._secrets:
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        """``text`` with every secret masked."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def install(self) -> None:
        """Mask secrets in every record handled by the root logger's handlers."""
        flt = _RedactingFilter(self)
        for handler in logging.getLogger().handlers:
            handler.addFilter(flt)


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self._redactor.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        return True


def secret_values(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    sensitive: Iterable[str] = (),
) -> list[str]:
    """Values in ``config`` that are secret: marked in ``schema`` (``secret: true``),
    named in ``sensitive``, or whose setting name looks like a secret."""
    marked = set(sensitive)
    props = (schema or {}).get("properties", {}) if schema else {}
    for key, prop in props.items():
        if isinstance(prop, Mapping) and (prop.get("secret") or prop.get("sensitive")):
            marked.add(key)
    found: list[str] = []

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif (
            isinstance(value, str)
            and key is not None
            and (key in marked or SECRET_NAME.search(key))
        ):
            found.append(value)

    walk(config, None)
    return found
