//! The Python face of the replication client: `ReplicationReader`, an iterator of
//! chunks of pgoutput messages (see `crate::repl`).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::copy::CopyError;
use crate::copy::Error;
use crate::repl::{Replication, Request};

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Connect(m) => super::copy::ConnectError::new_err(m),
        Error::Usage(m) => pyo3::exceptions::PyValueError::new_err(m),
        Error::Server(m) | Error::Decode(m) => CopyError::new_err(m),
    }
}

/// A running `START_REPLICATION ... LOGICAL` read of a slot, iterated as lists of
/// `(wal_position, pgoutput_message)`; it ends once the read reached `upto`.
#[pyclass(module = "dativo_accel", name = "ReplicationReader", frozen)]
pub struct ReplicationReader {
    inner: Mutex<Option<Replication>>,
    chunk: usize,
}

impl ReplicationReader {
    fn with<T>(&self, f: impl FnOnce(&Replication) -> T) -> PyResult<Option<T>> {
        let guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        Ok(guard.as_ref().map(f))
    }
}

#[pymethods]
impl ReplicationReader {
    #[new]
    #[pyo3(signature = (dsn, slot, publication, start, upto, confirmed, chunk = 4096))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dsn: String,
        slot: String,
        publication: String,
        start: u64,
        upto: u64,
        confirmed: u64,
        chunk: usize,
    ) -> PyResult<Self> {
        let request = Request {
            dsn,
            slot,
            publication,
            start,
            upto,
            confirmed,
        };
        let replication = py
            .detach(move || Replication::start(&request))
            .map_err(to_py)?;
        Ok(ReplicationReader {
            inner: Mutex::new(Some(replication)),
            chunk: chunk.max(1),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        let Some(replication) = guard.as_mut() else {
            return Ok(None);
        };
        let chunk = self.chunk;
        let messages = py.detach(|| replication.next_chunk(chunk)).map_err(to_py)?;
        if messages.is_empty() {
            return Ok(None);
        }
        let items = messages
            .iter()
            .map(|(lsn, data)| {
                PyTuple::new(
                    py,
                    [
                        lsn.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, data).into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items).map(Some)
    }

    /// End the session (the server releases the slot as its backend exits).
    fn close(&self) -> PyResult<()> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        if let Some(replication) = guard.as_mut() {
            replication.close();
        }
        Ok(())
    }

    /// The highest LSN a standby status update reported as flushed (0: none sent).
    #[getter]
    fn reported_lsn(&self) -> PyResult<u64> {
        Ok(self.with(|r| r.reported)?.unwrap_or(0))
    }

    /// Standby status updates sent.
    #[getter]
    fn status_updates(&self) -> PyResult<u64> {
        Ok(self.with(|r| r.updates)?.unwrap_or(0))
    }

    /// The highest WAL position the server reported (`XLogData` or keepalive).
    #[getter]
    fn server_lsn(&self) -> PyResult<u64> {
        Ok(self.with(|r| r.server_lsn)?.unwrap_or(0))
    }
}
