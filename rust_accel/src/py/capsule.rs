//! Arrow across the boundary through the Arrow PyCapsule interface, zero copy: a schema
//! or a record batch imported from any object that exports one (pyarrow, ...), and a
//! schema, a stream of batches or one batch exported as capsules.

use std::sync::Arc;

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{Array, RecordBatch, RecordBatchReader, StructArray};
use arrow_data::ArrayData;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

fn value_error(e: &ArrowError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The schema behind any object with `__arrow_c_schema__` (a pyarrow.Schema, ...).
pub fn import_schema(obj: &Bound<'_, PyAny>) -> PyResult<SchemaRef> {
    let capsule = obj
        .call_method0("__arrow_c_schema__")?
        .cast_into::<PyCapsule>()?;
    let pointer = capsule
        .pointer_checked(Some(c"arrow_schema"))?
        .cast::<FFI_ArrowSchema>();
    // SAFETY: a capsule named "arrow_schema" holds a valid ArrowSchema (the PyCapsule
    // interface's contract); it is only borrowed while `capsule` is alive.
    let ffi = unsafe { pointer.as_ref() };
    let schema = Schema::try_from(ffi).map_err(|e| value_error(&e))?;
    Ok(Arc::new(schema))
}

/// The field and data of any object with `__arrow_c_array__` (a record batch exports a
/// struct field and array).
pub fn import_array(obj: &Bound<'_, PyAny>) -> PyResult<(Field, ArrayData)> {
    let pair = obj
        .call_method0("__arrow_c_array__")?
        .cast_into::<PyTuple>()?;
    let schema_capsule = pair.get_item(0)?.cast_into::<PyCapsule>()?;
    let array_capsule = pair.get_item(1)?.cast_into::<PyCapsule>()?;
    let schema_ptr = schema_capsule
        .pointer_checked(Some(c"arrow_schema"))?
        .cast::<FFI_ArrowSchema>();
    let array_ptr = array_capsule
        .pointer_checked(Some(c"arrow_array"))?
        .cast::<FFI_ArrowArray>();
    // SAFETY: capsules named "arrow_schema"/"arrow_array" hold valid C structs (the
    // PyCapsule interface's contract). The schema is only borrowed; the array is moved
    // out (its release callback now belongs to us) and an empty one left behind, which
    // the capsule's destructor sees as already released.
    unsafe {
        let field = Field::try_from(schema_ptr.as_ref()).map_err(|e| value_error(&e))?;
        let array = std::ptr::replace(array_ptr.as_ptr(), FFI_ArrowArray::empty());
        let data = from_ffi(array, schema_ptr.as_ref()).map_err(|e| value_error(&e))?;
        Ok((field, data))
    }
}

/// The rows of an imported struct array (see [`window`]).
pub fn struct_rows(data: &ArrayData) -> PyResult<StructArray> {
    Ok(StructArray::from(
        window(data, 0, data.len()).map_err(|e| value_error(&e))?,
    ))
}

/// Rows `start..start + len` of `data`, with every struct node at offset 0.
///
/// arrow-rs slices struct children both in `ArrayData::slice` and again in
/// `StructArray::from`, so a struct nested in a sliced struct (as pyarrow exports a
/// sliced batch) would be read at twice its offset; here struct offsets are pushed down
/// into their children once.
fn window(data: &ArrayData, start: usize, len: usize) -> Result<ArrayData, ArrowError> {
    if let DataType::Struct(_) = data.data_type() {
        let children = data
            .child_data()
            .iter()
            .map(|c| window(c, data.offset() + start, len))
            .collect::<Result<Vec<_>, _>>()?;
        return ArrayData::builder(data.data_type().clone())
            .len(len)
            .nulls(data.nulls().map(|n| n.slice(start, len)))
            .child_data(children)
            .build();
    }
    let sliced = if start == 0 && len == data.len() {
        data.clone()
    } else {
        data.slice(start, len)
    };
    if sliced.child_data().is_empty() {
        return Ok(sliced);
    }
    let children = sliced
        .child_data()
        .iter()
        .map(|c| window(c, 0, c.len()))
        .collect::<Result<Vec<_>, _>>()?;
    sliced.into_builder().child_data(children).build()
}

/// `schema` as an `"arrow_schema"` capsule.
pub fn export_schema<'py>(py: Python<'py>, schema: &Schema) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema).map_err(|e| value_error(&e))?;
    PyCapsule::new_with_value(py, ffi, c"arrow_schema")
}

/// `stream` as an `"arrow_array_stream"` capsule; its consumer calls `next` without the GIL.
pub fn export_stream(
    py: Python<'_>,
    stream: Box<dyn RecordBatchReader + Send>,
) -> PyResult<Bound<'_, PyCapsule>> {
    let ffi = FFI_ArrowArrayStream::new(stream);
    PyCapsule::new_with_value(py, ffi, c"arrow_array_stream")
}

/// `batch` as the (`"arrow_schema"`, `"arrow_array"`) capsules of a struct array, with the
/// schema's metadata.
pub fn export_batch(
    py: Python<'_>,
    batch: RecordBatch,
) -> PyResult<(Bound<'_, PyCapsule>, Bound<'_, PyCapsule>)> {
    let schema = batch.schema();
    let array = StructArray::from(batch);
    let data = array.to_data();
    let (ffi_array, _) = to_ffi(&data).map_err(|e| value_error(&e))?;
    let struct_type = DataType::Struct(schema.fields().clone());
    let mut ffi_schema = FFI_ArrowSchema::try_from(&struct_type).map_err(|e| value_error(&e))?;
    if !schema.metadata().is_empty() {
        ffi_schema = ffi_schema
            .with_metadata(schema.metadata())
            .map_err(|e| value_error(&e))?;
    }
    Ok((
        PyCapsule::new_with_value(py, ffi_schema, c"arrow_schema")?,
        PyCapsule::new_with_value(py, ffi_array, c"arrow_array")?,
    ))
}
