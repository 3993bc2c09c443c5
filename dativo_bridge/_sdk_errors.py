"""Decode errors that are also singer-sdk's exceptions (re-exported by ``errors``).

Kept apart so that ``dativo_bridge.errors`` can be imported without singer-sdk, which
takes a tenth of a second to import (readers and writers run in process do not need it).
"""

from __future__ import annotations

from singer_sdk.exceptions import MissingKeyPropertiesError, RecordsWithoutSchemaException

from dativo_bridge.errors import DecodeError


class RecordBeforeSchemaError(DecodeError, RecordsWithoutSchemaException):
    """A RECORD arrived for a stream whose SCHEMA has not been seen."""


class MissingKeyPropertyError(DecodeError, MissingKeyPropertiesError):
    """A RECORD lacks a value for one of the stream's key properties."""


__all__ = ["MissingKeyPropertyError", "RecordBeforeSchemaError"]
