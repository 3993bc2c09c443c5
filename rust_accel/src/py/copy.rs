//! The Python face of the COPY reader: `read_copy(...)` returns a `CopyReader`, which
//! any Arrow PyCapsule consumer reads (`pyarrow.RecordBatchReader.from_stream`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatchReader;
use arrow_schema::SchemaRef;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use super::capsule::{export_schema, export_stream, import_schema};
use crate::copy::{client_config, Error, ParallelStream, Request, TlsMode, TlsSettings};

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

/// The rustls configuration for a `tls` argument (`None`: no TLS), built once per read
/// (the replication reader's too).
pub(super) fn tls_config(
    tls: Option<HashMap<String, String>>,
) -> PyResult<Option<Arc<rustls::ClientConfig>>> {
    let Some(mut tls) = tls else {
        return Ok(None);
    };
    let mode = tls
        .remove("mode")
        .ok_or_else(|| PyValueError::new_err("tls needs a 'mode'"))?;
    let settings = TlsSettings {
        mode: TlsMode::parse(&mode).map_err(to_py)?,
        root_cert: tls.remove("root_cert"),
        cert: tls.remove("cert"),
        key: tls.remove("key"),
    };
    if let Some(unknown) = tls.keys().next() {
        return Err(PyValueError::new_err(format!(
            "unknown tls setting {unknown:?}"
        )));
    }
    Ok(Some(Arc::new(client_config(&settings).map_err(to_py)?)))
}

/// The arguments both readers share, checked and converted.
fn request(
    dsn: String,
    schema: &Bound<'_, PyAny>,
    decoders: Vec<String>,
    batch_bytes: usize,
    setup: Vec<String>,
    tls: Option<HashMap<String, String>>,
) -> PyResult<Request> {
    Ok(Request {
        schema: import_schema(schema)?,
        tls: tls_config(tls)?,
        batch_bytes: batch_bytes.clamp(1, MAX_BATCH_BYTES),
        dsn,
        setup,
        decoders,
    })
}

/// A running binary COPY, readable once as an Arrow stream of record batches.
#[pyclass(module = "dativo_accel", name = "CopyReader", frozen)]
pub struct CopyReader {
    stream: Mutex<Option<Box<dyn RecordBatchReader + Send>>>,
    schema: SchemaRef,
}

impl CopyReader {
    fn new(stream: Box<dyn RecordBatchReader + Send>, schema: SchemaRef) -> Self {
        CopyReader {
            stream: Mutex::new(Some(stream)),
            schema,
        }
    }
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
        export_stream(py, stream)
    }

    /// Export the schema of the batches as an Arrow C schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        export_schema(py, &self.schema)
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
    tls: Option<HashMap<String, String>>,
) -> PyResult<CopyReader> {
    let request = request(dsn, schema, decoders, batch_bytes, setup, tls)?;
    let schema = request.schema.clone();
    let stream = py
        .detach(move || request.open(query, None))
        .map_err(to_py)?;
    Ok(CopyReader::new(Box::new(stream), schema))
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
    tls: Option<HashMap<String, String>>,
) -> PyResult<CopyReader> {
    let request = request(dsn, schema, decoders, batch_bytes, setup, tls)?;
    let schema = request.schema.clone();
    let stream = py
        .detach(move || ParallelStream::start(request, queries, workers))
        .map_err(to_py)?;
    Ok(CopyReader::new(Box::new(stream), schema))
}
