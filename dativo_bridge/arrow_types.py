"""The one walk over nested Arrow types: a struct's children, a list's item field.

Schema mappings, codecs and writers rebuild a type with each child changed
(:func:`map_children`), or ask whether a type or anything nested in it is of some kind
(:func:`any_nested`). Walks that do something else at each level (the JSON Schema
mapping, the value converters, the encoder) keep their own recursion.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa


def map_children(dtype: pa.DataType, child: Callable[[pa.Field], pa.Field]) -> pa.DataType:
    """``dtype`` with ``child`` applied to each of its child fields (a struct's fields, a
    list's or large list's item field); any other type unchanged."""
    if pa.types.is_struct(dtype):
        return pa.struct([child(dtype.field(i)) for i in range(dtype.num_fields)])
    if pa.types.is_list(dtype):
        return pa.list_(child(dtype.value_field))
    if pa.types.is_large_list(dtype):
        return pa.large_list(child(dtype.value_field))
    return dtype


def any_nested(dtype: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``test`` holds for ``dtype`` or for a type nested in it (struct fields, the
    items of any kind of list, a dictionary's values), at every depth."""
    if test(dtype):
        return True
    if pa.types.is_struct(dtype):
        return any(any_nested(dtype.field(i).type, test) for i in range(dtype.num_fields))
    if (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_dictionary(dtype)
    ):
        return any_nested(dtype.value_type, test)
    return False
