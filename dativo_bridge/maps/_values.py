"""The values of compiled stream-map expressions: what a compiled expression is, the names
it sees, its errors, and the Arrow types that stand for Python's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.errors import DativoError

Value: TypeAlias = Any  # a pa.Array, or a pa.Scalar for an expression without columns
Evaluate = Callable[[pa.RecordBatch], Value]


class Unsupported(Exception):
    """An expression (or part of one) with no Arrow compilation."""


class MapEvaluationError(DativoError):
    """A stream-map expression failed on a row, where singer-sdk's evaluation fails too."""


@dataclass(frozen=True)
class Compiled:
    """A compiled expression.

    Attributes:
        evaluate: Batch -> array (or a scalar, for an expression without columns).
        dtype: The Arrow type of the result.
        field: The input field (a column, or a struct's child), when the expression is
            just a reference to it: its type, nullability and metadata are the result's.
    """

    evaluate: Evaluate
    dtype: pa.DataType
    field: pa.Field | None = None


@dataclass(frozen=True)
class Scope:
    """The names an expression sees (singer-sdk's ``names`` for ``_eval``)."""

    schema: pa.Schema
    map_config: Mapping[str, Any]
    stream_alias: str
    stream_name: str
    property_name: str | None = None
    expression: str = ""


def is_python_exact(dtype: pa.DataType) -> bool:
    """Types whose Python values are the ones singer-sdk's mapper sees in its records."""
    return (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_null(dtype)
    )


def is_number(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def widened(value: Value) -> Value:
    """Integers as int64 and floats as float64 (Python's int and float)."""
    dtype = value.type
    if pa.types.is_integer(dtype) and dtype not in (pa.int64(), pa.uint64()):
        return pc.cast(value, pa.int64())
    if pa.types.is_floating(dtype) and dtype != pa.float64():
        return pc.cast(value, pa.float64())
    return value


def literal_type(value: Any) -> pa.DataType:
    """The Arrow type of a Python literal (Unsupported for others)."""
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return pa.int64()
        raise Unsupported(f"integer literal {value} is beyond 64 bits")
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    raise Unsupported(f"a literal of type {type(value).__name__}")


def literal(value: Any) -> Compiled:
    dtype = literal_type(value)
    scalar = pa.scalar(value, type=dtype)
    return Compiled(lambda batch: scalar, dtype)


def broadcast(value: Value, rows: int) -> pa.Array:
    """An expression result as an array of ``rows`` values."""
    if isinstance(value, pa.Scalar):
        if pa.types.is_null(value.type):
            return pa.nulls(rows)
        return pa.repeat(value, rows)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


__all__ = [
    "Compiled",
    "Evaluate",
    "MapEvaluationError",
    "Scope",
    "Unsupported",
    "Value",
    "broadcast",
    "is_number",
    "is_python_exact",
    "is_text",
    "literal",
    "literal_type",
    "widened",
]
