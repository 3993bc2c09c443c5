"""The error hierarchy: every error a user can see, with a message they can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dativo_bridge._sdk_errors import MissingKeyPropertyError as MissingKeyPropertyError
    from dativo_bridge._sdk_errors import RecordBeforeSchemaError as RecordBeforeSchemaError


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


class EncodeError(DativoError):
    """An Arrow value has no valid Singer encoding (its text would break the column's schema).

    Attributes:
        stream: The stream being encoded (or None if unknown).
        column: The column, with a dotted path inside structs and ``[]`` for list items.
        row: 0-based row of the value in the batch given to the encoder.
    """

    def __init__(
        self,
        reason: str,
        *,
        stream: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.reason = reason
        self.stream = stream
        self.column = column
        self.row = row
        parts = []
        if stream is not None:
            parts.append(f"stream '{stream}'")
        if column is not None:
            parts.append(f"column '{column}'")
        if row is not None:
            parts.append(f"row {row}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {reason}" if where else reason)


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


class ReadError(DativoError):
    """A reader could not read its source: a file, a query, a response or a value in it
    (a setting problem is a ConfigError instead)."""


class WriteError(DativoError):
    """A writer could not write or commit its data."""


class ReaderContractError(DativoError):
    """A reader yielded data that breaks its own declaration: a batch that does not match
    the stream's schema, or a replication key that goes backwards in a sorted stream."""


#: Errors that are also singer-sdk's exceptions (so its target tests recognise them); they
#: live in ``_sdk_errors`` so that importing this module does not import singer-sdk.
_SDK_ERRORS = ("MissingKeyPropertyError", "RecordBeforeSchemaError")


def __getattr__(name: str) -> Any:
    if name in _SDK_ERRORS:
        from dativo_bridge import _sdk_errors

        return getattr(_sdk_errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
