"""singer-sdk's record flattening on Arrow batches.

A struct column becomes one column per child, named as singer-sdk names them
(``parent__child``, shortened past ``flattening_max_key_length`` by the SDK's own
:func:`flatten_key`), down to ``flattening_max_depth`` levels; a struct deeper than that
and every list become a string column holding the value's JSON text, encoded as the SDK
encodes it (:func:`singer_sdk.singerlib.json.serialize_json` of the same Python value).
Every other column, at any depth, keeps its Arrow type.
"""

from __future__ import annotations

import pyarrow as pa
from singer_sdk.helpers._flattening import FlatteningOptions, flatten_key
from singer_sdk.singerlib.json import serialize_json

from dativo_bridge.errors import ConfigError


def _is_list(dtype: pa.DataType) -> bool:
    return (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_large_list_view(dtype)
        or pa.types.is_map(dtype)
    )


def _json_text(array: pa.Array) -> pa.Array:
    values = array.to_pylist()
    return pa.array([None if v is None else serialize_json(v) for v in values], pa.string())


def _flatten(
    field: pa.Field,
    array: pa.Array,
    parents: list[str],
    level: int,
    options: FlatteningOptions,
    out: list[tuple[pa.Field, pa.Array]],
) -> None:
    key = flatten_key(field.name, parents, options.separator, max_key_length=options.max_key_length)
    dtype = field.type
    if pa.types.is_struct(dtype) and level < options.max_level:
        children = array.flatten()  # each child null where its parent is null
        for index in range(dtype.num_fields):
            child = dtype.field(index)
            if field.nullable:
                child = child.with_nullable(True)
            _flatten(child, children[index], [*parents, field.name], level + 1, options, out)
    elif pa.types.is_struct(dtype) or _is_list(dtype):
        out.append((pa.field(key, pa.string(), nullable=field.nullable), _json_text(array)))
    else:
        out.append((field.with_name(key), array))


def flatten_batch(batch: pa.RecordBatch, options: FlatteningOptions) -> pa.RecordBatch:
    """The batch flattened as singer-sdk flattens its records (see the module docstring).

    Raises:
        ConfigError: Two columns get the same flattened name.
    """
    out: list[tuple[pa.Field, pa.Array]] = []
    for index, field in enumerate(batch.schema):
        _flatten(field, batch.column(index), [], 0, options, out)
    names = [f.name for f, _ in out]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"flattening gives the column name(s) {twice} more than once")
    return pa.RecordBatch.from_arrays([a for _, a in out], schema=pa.schema([f for f, _ in out]))
