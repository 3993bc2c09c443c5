//! The Python face of the COPY reader: `read_copy(...)` returns a `CopyReader`, which
//! any Arrow PyCapsule consumer reads (`pyarrow.RecordBatchReader.from_stream`).

use std::sync::{Arc, Mutex};

use arrow_array::ffi::FFI_ArrowSchema;
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::RecordBatchReader;
use arrow_schema::{Schema, SchemaRef};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::batch::BatchDecoder;
use crate::errors::Error;
use crate::parallel::ParallelStream;
use crate::source::Source;
use crate::stream::CopyStream;
use crate::tls;

create_exception!(
    dativo_accel,
    CopyError,
    PyException,
    "A binary COPY read failed: a server error, or a value that does not fit its column."
);
create_exception!(
    dativo_accel,
    ConnectError,
    CopyError,
    "The server could not be reached or refused the login (the message never holds the password)."
);

/// Batches cut above this many COPY bytes could overflow Arrow's 32-bit string offsets.
const MAX_BATCH_BYTES: usize = 256 << 20;

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Connect(m) => ConnectError::new_err(m),
        Error::Usage(m) => PyValueError::new_err(m),
        Error::Server(m) | Error::Decode(m) => CopyError::new_err(m),
    }
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
    let schema = Schema::try_from(ffi).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Arc::new(schema))
}

/// The rustls configuration for a `tls` argument (`None`: no TLS), built once per read.
fn tls_config(
    tls: Option<std::collections::HashMap<String, String>>,
) -> PyResult<Option<Arc<rustls::ClientConfig>>> {
    let Some(mut tls) = tls else {
        return Ok(None);
    };
    let mode = tls
        .remove("mode")
        .ok_or_else(|| PyValueError::new_err("tls needs a 'mode'"))?;
    let settings = tls::Settings {
        mode: tls::Mode::parse(&mode).map_err(to_py)?,
        root_cert: tls.remove("root_cert"),
        cert: tls.remove("cert"),
        key: tls.remove("key"),
    };
    if let Some(unknown) = tls.keys().next() {
        return Err(PyValueError::new_err(format!(
            "unknown tls setting {unknown:?}"
        )));
    }
    Ok(Some(Arc::new(
        tls::client_config(&settings).map_err(to_py)?,
    )))
}

/// A running binary COPY, readable once as an Arrow stream of record batches.
#[pyclass(module = "dativo_accel", name = "CopyReader", frozen)]
pub struct CopyReader {
    stream: Mutex<Option<Box<dyn RecordBatchReader + Send>>>,
    schema: SchemaRef,
}

#[pymethods]
impl CopyReader {
    /// Export the batches as an Arrow C stream (once; the requested schema is ignored).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let stream = self
            .stream
            .lock()
            .map_err(|_| CopyError::new_err("the COPY stream is unusable after a panic"))?
            .take()
            .ok_or_else(|| CopyError::new_err("the COPY stream was already read"))?;
        let ffi = FFI_ArrowArrayStream::new(stream);
        PyCapsule::new_with_value(py, ffi, c"arrow_array_stream")
    }

    /// Export the schema of the batches as an Arrow C schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let ffi = FFI_ArrowSchema::try_from(self.schema.as_ref())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        PyCapsule::new_with_value(py, ffi, c"arrow_schema")
    }
}

/// Run `query` (a `COPY ... TO STDOUT (FORMAT binary)`) and stream its rows as batches of
/// `schema`, each field decoded by the matching name in `decoders`.
#[pyfunction]
#[pyo3(signature = (dsn, query, schema, decoders, batch_bytes, setup = Vec::new(), tls = None))]
#[allow(clippy::too_many_arguments)]
pub fn read_copy(
    py: Python<'_>,
    dsn: String,
    query: String,
    schema: &Bound<'_, PyAny>,
    decoders: Vec<String>,
    batch_bytes: usize,
    setup: Vec<String>,
    tls: Option<std::collections::HashMap<String, String>>,
) -> PyResult<CopyReader> {
    let schema = import_schema(schema)?;
    let tls = tls_config(tls)?;
    let budget = batch_bytes.clamp(1, MAX_BATCH_BYTES);
    let decoder = BatchDecoder::new(schema.clone(), &decoders, budget).map_err(to_py)?;
    let source = py
        .detach(move || Source::open(&dsn, setup, query, None, tls))
        .map_err(to_py)?;
    Ok(CopyReader {
        stream: Mutex::new(Some(Box::new(CopyStream::new(decoder, source)))),
        schema,
    })
}

/// Run several COPY queries at once on `workers` Rust threads (one connection per query,
/// each running `setup` first, e.g. to join an exported snapshot) and stream the rows of
/// all of them as batches of `schema`, in arrival order.
#[pyfunction]
#[pyo3(signature = (dsn, queries, schema, decoders, batch_bytes, workers, setup = Vec::new(), tls = None))]
#[allow(clippy::too_many_arguments)]
pub fn read_copy_parallel(
    py: Python<'_>,
    dsn: String,
    queries: Vec<String>,
    schema: &Bound<'_, PyAny>,
    decoders: Vec<String>,
    batch_bytes: usize,
    workers: usize,
    setup: Vec<String>,
    tls: Option<std::collections::HashMap<String, String>>,
) -> PyResult<CopyReader> {
    let schema = import_schema(schema)?;
    let tls = tls_config(tls)?;
    let budget = batch_bytes.clamp(1, MAX_BATCH_BYTES);
    let for_stream = schema.clone();
    let stream = py
        .detach(move || {
            ParallelStream::start(
                dsn, setup, queries, for_stream, decoders, budget, workers, tls,
            )
        })
        .map_err(to_py)?;
    Ok(CopyReader {
        stream: Mutex::new(Some(Box::new(stream))),
        schema,
    })
}
