"""The error hierarchy: every error a user can see, with a message they can act on."""

from __future__ import annotations

from singer_sdk.exceptions import MissingKeyPropertiesError, RecordsWithoutSchemaException


class DativoError(Exception):
    """Base class of every error Dativo raises on purpose."""


class ConfigError(DativoError):
    """A setting is missing, malformed or contradicts another."""


class SchemaMappingError(DativoError):
    """A JSON Schema or Arrow type cannot be mapped."""


class DecodeError(DativoError):
    """A Singer input line could not be decoded.

    Attributes:
        stream: The stream the line belongs to (or None if unknown).
        line_number: 1-based line number in the input.
        expected: What was expected at that place.
    """

    def __init__(
        self,
        reason: str,
        *,
        stream: str | None = None,
        line_number: int | None = None,
        expected: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.stream = stream
        self.line_number = line_number
        self.expected = expected
        self.field = field
        parts = []
        if line_number is not None:
            parts.append(f"line {line_number}")
        if stream is not None:
            parts.append(f"stream '{stream}'")
        if field is not None:
            parts.append(f"property '{field}'")
        where = ", ".join(parts)
        message = f"{where}: {reason}" if where else reason
        if expected is not None:
            message += f" (expected {expected})"
        super().__init__(message)


class RecordBeforeSchemaError(DecodeError, RecordsWithoutSchemaException):
    """A RECORD arrived for a stream whose SCHEMA has not been seen."""


class MissingKeyPropertyError(DecodeError, MissingKeyPropertiesError):
    """A RECORD lacks a value for one of the stream's key properties."""


class PluginLoadError(DativoError):
    """A `module:Class` reference could not be loaded (or is not allowed)."""


class PluginFailedError(DativoError):
    """A subprocess plugin exited non-zero or crashed.

    Attributes:
        plugin: The plugin name.
        returncode: The exit status.
        stderr_tail: The last lines the plugin wrote to stderr.
    """

    def __init__(self, plugin: str, returncode: int | None, stderr_tail: str) -> None:
        self.plugin = plugin
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        status = "was killed" if returncode is None or returncode < 0 else f"exited {returncode}"
        tail = stderr_tail.strip() or "(no stderr output)"
        super().__init__(f"plugin '{plugin}' {status}; last stderr lines:\n{tail}")


class WriteError(DativoError):
    """A writer could not write or commit its data."""
