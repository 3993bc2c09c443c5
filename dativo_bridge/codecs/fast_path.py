"""What the decoder's fast path needs to know of Arrow types: the type Arrow's C++ JSON
reader parses for each declared type (or that it cannot), the floats whose infinities
must be looked at again, and the nested properties the reader found beyond the schema.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.arrow_types import any_nested, map_children
from dativo_bridge.schema import JSON_TYPE, SQL_NULL_KEY


def fast_type(dtype: pa.DataType, top: bool) -> pa.DataType | None:
    """The type Arrow's JSON reader parses for ``dtype``, or None if it cannot."""
    if dtype == JSON_TYPE or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return None
    if pa.types.is_date32(dtype) or dtype == pa.time64("us"):
        return pa.string() if top else None
    if pa.types.is_date64(dtype) or pa.types.is_time(dtype):
        return None
    if pa.types.is_struct(dtype):
        children = []
        for i in range(dtype.num_fields):
            child = fast_type(dtype.field(i).type, False)
            if child is None:
                return None
            children.append(pa.field(dtype.field(i).name, child))
        return pa.struct(children)
    if pa.types.is_list(dtype):
        child = fast_type(dtype.value_type, False)
        return None if child is None else pa.list_(child)
    if pa.types.is_null(dtype):
        return None
    return dtype


def without_annotation(field: pa.Field) -> pa.Field:
    """``field`` without the ``x-sql-null`` metadata, at every depth (the batches a
    decoder makes have the types an in-process reader gives, annotations aside)."""
    dtype = map_children(field.type, without_annotation)
    metadata = field.metadata
    if metadata is not None and SQL_NULL_KEY.encode() in metadata:
        rest = {k: v for k, v in metadata.items() if k != SQL_NULL_KEY.encode()}
        return pa.field(field.name, dtype, field.nullable, metadata=rest or None)
    return field.with_type(dtype)


def has_float(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is or holds a float type."""
    return any_nested(dtype, pa.types.is_floating)


def inf_rows(arr: pa.Array) -> set[int]:
    """The rows of ``arr`` holding an infinite float at any depth (or maybe one: values
    under a null parent count too)."""
    dtype = arr.type
    if pa.types.is_floating(dtype):
        if not pc.any(pc.is_inf(arr)).as_py():
            return set()
        return set(pc.indices_nonzero(pc.fill_null(pc.is_inf(arr), False)).to_pylist())
    if pa.types.is_struct(dtype):
        return set().union(*(inf_rows(arr.field(i)) for i in range(dtype.num_fields)))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        first, last = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
        items = inf_rows(arr.values.slice(first, last - first))
        if not items:
            return set()
        parents = pc.list_parent_indices(arr).to_pylist()  # aligned with those values
        return {parents[i] for i in items}
    return set()


def nested_extra(actual: pa.DataType, declared: pa.DataType, path: str) -> list[str]:
    """Dotted names of the struct children in ``actual`` (as Arrow's reader inferred
    them) that ``declared`` lacks, at every depth."""
    if pa.types.is_struct(actual) and pa.types.is_struct(declared):
        names = {declared.field(i).name: declared.field(i).type for i in range(declared.num_fields)}
        out = []
        for i in range(actual.num_fields):
            child = actual.field(i)
            if child.name not in names:
                out.append(f"{path}.{child.name}")
            else:
                out.extend(nested_extra(child.type, names[child.name], f"{path}.{child.name}"))
        return out
    if pa.types.is_list(actual) and pa.types.is_list(declared):
        return nested_extra(actual.value_type, declared.value_type, path)
    return []
