"""Batch -> schema conformance: the one step that gives a batch exactly a stream's columns
and types, used by the reader side (:func:`dativo_bridge.reading.check_batch`), the
writer side (:class:`~dativo_bridge.delivery.StreamWriters`, a writer used directly,
BATCH files) and a writer whose schema evolved (buffered Iceberg batches).

The variants are parameters: which casts are allowed (any Arrow cast, or a reader's safe
casts), whether a missing column is an error or nulls, and which columns must hold no
null. Each caller turns a :class:`Mismatch` into its own error (a reader's contract, a
writer's), so messages keep naming who broke what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc


class Mismatch(Exception):
    """Why a batch does not conform (``str()`` says it in a user's words)."""


class MissingColumns(Mismatch):
    """The batch lacks columns of the schema."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"lacks column(s) {names}")
        self.names = names


class TypeMismatch(Mismatch):
    """A column's type is not the schema's, and the cast is not allowed."""

    def __init__(self, field: pa.Field, got: pa.DataType) -> None:
        super().__init__(f"column '{field.name}' has type {got}, not {field.type}")
        self.field = field
        self.got = got


class CastFailed(Mismatch):
    """Arrow could not cast a column (or found no such column)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class NullValue(Mismatch):
    """A column that must hold values has a null."""

    def __init__(self, name: str, row: int) -> None:
        super().__init__(f"row {row} of a batch has no value for '{name}'")
        self.name = name
        self.row = row


def first_null(column: pa.Array | pa.ChunkedArray) -> int | None:
    """The row of ``column``'s first null, or None."""
    if not column.null_count:
        return None
    row: int = pc.index(column.is_null(), True).as_py()
    return row


def conform(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    *,
    allowed: Callable[[pa.DataType, pa.DataType], bool] | None = None,
    fill_missing: bool = False,
    not_null: Iterable[str] = (),
) -> pa.RecordBatch:
    """``batch`` with exactly the columns of ``schema`` (taken by name, in its order) and
    their types; ``batch`` itself when it already has that schema.

    Args:
        batch: The batch.
        schema: The schema to give it.
        allowed: ``allowed(got, want)``: whether a column of type ``got`` may be cast to
            ``want`` (None: any cast Arrow can make without loss).
        fill_missing: A column of ``schema`` the batch lacks is all nulls (else an error).
        not_null: Columns that must hold no null (key properties, non-nullable fields).

    Raises:
        MissingColumns, TypeMismatch, CastFailed, NullValue: The batch does not conform.
    """
    same = batch.schema.names == schema.names and batch.schema.types == schema.types
    if same:
        columns = batch.columns
    else:
        names = set(batch.schema.names)
        missing = [n for n in schema.names if n not in names]
        if missing and not fill_missing:
            raise MissingColumns(missing)
        columns = []
        for want in schema:
            if want.name not in names:
                columns.append(pa.nulls(batch.num_rows, want.type))
                continue
            column = batch.column(want.name)
            if column.type != want.type:
                if allowed is not None and not allowed(column.type, want.type):
                    raise TypeMismatch(want, column.type)
                try:
                    column = column.cast(want.type)
                except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                    raise CastFailed(exc) from exc
            columns.append(column)
    index = {name: i for i, name in enumerate(schema.names)}
    for name in not_null:
        row = first_null(columns[index[name]])
        if row is not None:
            raise NullValue(name, row)
    if same and batch.schema == schema:
        return batch
    return pa.RecordBatch.from_arrays(columns, schema=schema)
