//! The Python face of the Singer RECORD encoder (`singer::encode_batch`), and the
//! `bytes` object its lines are copied into.

#[cfg(not(feature = "abi3"))]
use std::sync::Mutex;

use arrow_schema::{DataType, Field};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::capsule::{import_array, struct_rows};
use crate::singer::{encode_batch, recycle, write_json_string};

/// Encode a record batch (anything with `__arrow_c_array__`) as Singer RECORD lines,
/// exactly as `dativo_bridge.codecs.encode.encode_records` does; `None` when the batch
/// holds a type or value this encoder does not write identically (Python then encodes).
#[pyfunction]
#[pyo3(signature = (batch, stream, version = None))]
pub fn encode_records<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    stream: &str,
    version: Option<i64>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut head = br#"{"type":"RECORD","stream":"#.to_vec();
    write_json_string(&mut head, stream.as_bytes());
    head.extend_from_slice(br#","record":{"#);
    let mut tail = b"}".to_vec();
    if let Some(v) = version {
        tail.extend_from_slice(format!(",\"version\":{v}").as_bytes());
    }
    tail.extend_from_slice(b"}\n");

    // The C data interface cuts names at a NUL: a pyarrow batch whose (nested) field
    // names hold one declines, as its names cannot be read back exactly here.
    if let Ok(schema) = batch.getattr("schema") {
        if let Ok(text) = schema.call_method0("to_string") {
            if text.extract::<&str>().is_ok_and(|t| t.contains('\0')) {
                return Ok(None);
            }
        }
    }
    let (field, array) = import_array(batch)?;
    let DataType::Struct(fields) = field.data_type() else {
        return Err(PyValueError::new_err(
            "expected a record batch (a struct array)",
        ));
    };
    if array.is_empty() {
        return Ok(Some(PyBytes::new(py, b"")));
    }
    let fields: Vec<Field> = fields.iter().map(|f| f.as_ref().clone()).collect();
    let batch = struct_rows(&array)?;
    let encoded = py.detach(move || encode_batch(&fields, &batch, &head, &tail));
    let Ok(parts) = encoded else {
        return Ok(None);
    };
    let bytes = concat_bytes(py, &parts)?;
    recycle(parts);
    Ok(Some(bytes))
}

/// The last output, kept so the next call can write into its memory when nothing else
/// holds it any more (a fresh 100 MB `bytes` costs more in page faults than to fill).
/// Not under the stable ABI (`abi3` feature), which has no way to resize a `bytes`.
#[cfg(not(feature = "abi3"))]
static LAST: Mutex<Option<Py<PyBytes>>> = Mutex::new(None);
/// Outputs up to this size are kept in `LAST`.
#[cfg(not(feature = "abi3"))]
const KEEP_BYTES: usize = 256 << 20;

#[cfg(not(feature = "abi3"))]
unsafe extern "C" {
    // CPython's own resize of a bytes object that only its caller references (used by
    // `bytes.join` and friends); pyo3-ffi does not export it, and the stable ABI lacks it.
    fn _PyBytes_Resize(
        bytes: *mut *mut pyo3::ffi::PyObject,
        newsize: pyo3::ffi::Py_ssize_t,
    ) -> std::os::raw::c_int;
}

/// A `bytes` object of `size` (> 0) bytes with unspecified contents, not shared: the last
/// output resized when this module holds its only reference (so no one can see it
/// change), else a new one.
#[cfg(not(feature = "abi3"))]
fn blank_bytes(py: Python<'_>, size: isize) -> PyResult<Bound<'_, PyBytes>> {
    let last = LAST.lock().ok().and_then(|mut last| last.take());
    if let Some(last) = last {
        let mut ptr = last.into_ptr();
        // SAFETY: `ptr` is a bytes object we own a reference to. With a reference count
        // of 1 that reference is the only one, so resizing it (CPython's contract for
        // _PyBytes_Resize) and rewriting it are invisible to any other code. A resize
        // always resets the cached hash; for an equal size it would return early, so
        // the size is changed twice. On failure the call consumes our reference.
        unsafe {
            if pyo3::ffi::Py_REFCNT(ptr) == 1 && pyo3::ffi::Py_SIZE(ptr) > 0 {
                let same = pyo3::ffi::Py_SIZE(ptr) == size;
                if (same && _PyBytes_Resize(&raw mut ptr, size + 1) != 0)
                    || _PyBytes_Resize(&raw mut ptr, size) != 0
                {
                    return Err(PyErr::fetch(py));
                }
                return Ok(Bound::from_owned_ptr(py, ptr).cast_into_unchecked::<PyBytes>());
            }
            pyo3::ffi::Py_DECREF(ptr);
        }
    }
    new_bytes(py, size)
}

/// Under the stable ABI every output is a new `bytes` object.
#[cfg(feature = "abi3")]
fn blank_bytes(py: Python<'_>, size: isize) -> PyResult<Bound<'_, PyBytes>> {
    new_bytes(py, size)
}

/// A new `bytes` object of `size` bytes, allocated uninitialised (pyo3's
/// `PyBytes::new_with` would zero it first).
fn new_bytes(py: Python<'_>, size: isize) -> PyResult<Bound<'_, PyBytes>> {
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object of n bytes
    // (uninitialised) or NULL with an exception set; it is owned here until returned.
    unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        if ptr.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, ptr).cast_into_unchecked::<PyBytes>())
    }
}

/// One `bytes` object holding `parts` (not all empty) in order, copied in parallel
/// without the GIL.
fn concat_bytes<'py>(py: Python<'py>, parts: &[Vec<u8>]) -> PyResult<Bound<'py, PyBytes>> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let size = isize::try_from(total).map_err(|_| PyValueError::new_err("output too large"))?;
    if total == 0 {
        return Ok(PyBytes::new(py, b""));
    }
    let object = blank_bytes(py, size)?;
    // SAFETY: the object is new and not shared yet, so writing its n bytes is allowed.
    let base = unsafe { pyo3::ffi::PyBytes_AsString(object.as_ptr()) } as usize;
    py.detach(|| {
        std::thread::scope(|scope| {
            let mut at = 0;
            for part in parts {
                let dest = base + at;
                at += part.len();
                // SAFETY: each part goes to its own disjoint range of the buffer.
                scope.spawn(move || unsafe {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), dest as *mut u8, part.len());
                });
            }
        });
    });
    #[cfg(not(feature = "abi3"))]
    if total <= KEEP_BYTES {
        if let Ok(mut last) = LAST.lock() {
            *last = Some(object.clone().unbind());
        }
    }
    Ok(object)
}
