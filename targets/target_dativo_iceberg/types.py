"""Arrow types as Iceberg can store them: the few conversions Iceberg's type system needs.

Iceberg has 32- and 64-bit integers only, no unsigned types, no JSON type, decimals up to
38 digits, microsecond timestamps (format v2) and UTC as the only zone. Everything else of
the core mapping passes unchanged (see docs/iceberg-target.md).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute

from dativo_bridge.schema import JSON_TYPE


def iceberg_type(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type a column of ``dtype`` is written as in an Iceberg table."""
    if dtype == JSON_TYPE or isinstance(dtype, pa.ExtensionType):
        return pa.string()
    if pa.types.is_dictionary(dtype):
        return iceberg_type(dtype.value_type)
    if (
        pa.types.is_int8(dtype)
        or pa.types.is_int16(dtype)
        or pa.types.is_uint8(dtype)
        or pa.types.is_uint16(dtype)
    ):
        return pa.int32()
    if pa.types.is_uint32(dtype):
        return pa.int64()
    if pa.types.is_uint64(dtype):
        return pa.decimal128(20, 0)
    if pa.types.is_float16(dtype):
        return pa.float32()
    if pa.types.is_large_string(dtype) or pa.types.is_null(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype):
        return pa.binary()
    if pa.types.is_decimal256(dtype):
        return pa.decimal128(dtype.precision, dtype.scale) if dtype.precision <= 38 else pa.string()
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz else None)
    if pa.types.is_time(dtype):
        return pa.time64("us")
    if pa.types.is_date64(dtype):
        return pa.date32()
    if pa.types.is_struct(dtype):
        return pa.struct(
            [
                dtype.field(i).with_type(iceberg_type(dtype.field(i).type))
                for i in range(dtype.num_fields)
            ]
        )
    if (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    ):
        return pa.list_(dtype.value_field.with_type(iceberg_type(dtype.value_type)))
    return dtype


def iceberg_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field converted by :func:`iceberg_type`."""
    return pa.schema([f.with_type(iceberg_type(f.type)) for f in schema])


def to_iceberg(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a batch to its Iceberg schema (JSON text and extension types via storage)."""
    arrays = []
    for field, target in zip(batch.schema, schema, strict=True):
        column = batch.column(field.name)
        arrays.append(_cast(column, target.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    if array.type == target:
        return array
    if isinstance(array.type, pa.ExtensionType):
        return _cast(array.storage, target)
    if pa.types.is_struct(array.type) and pa.types.is_struct(target):
        children = [_cast(array.field(i), target.field(i).type) for i in range(target.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if (
        pa.types.is_list(array.type)
        and pa.types.is_list(target)
        and isinstance(array.type.value_type, pa.ExtensionType | pa.StructType)
    ):
        values = _cast(array.flatten(), target.value_type)
        offsets = pa.compute.subtract(array.offsets, array.offsets[0])
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=array.is_null())
    if pa.types.is_timestamp(array.type) and array.type.unit == "ns":
        return array.cast(target, safe=False)  # Iceberg v2 keeps microseconds
    return array.cast(target)
