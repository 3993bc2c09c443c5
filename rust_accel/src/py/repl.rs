//! The Python face of the replication client: `ReplicationReader`, an iterator of
//! chunks of pgoutput messages (see `crate::repl`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use arrow_array::RecordBatch;
use bytes::Bytes;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::copy::{tls_config, CopyError};
use super::decode::DecodedBatch;
use crate::copy::Error;
use crate::repl::changes::{Event, TableChanges};
use crate::repl::{Replication, Request};

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Connect(m) => super::copy::ConnectError::new_err(m),
        Error::Usage(m) => pyo3::exceptions::PyValueError::new_err(m),
        Error::Server(m) | Error::Decode(m) => CopyError::new_err(m),
    }
}

/// A running `START_REPLICATION ... LOGICAL` read of a slot, iterated as lists of
/// `(wal_position, pgoutput_message)`; it ends once the read reached `upto`. Given
/// `unchanged`, row changes come decoded (`change`) and other messages as bytes.
#[pyclass(module = "dativo_accel", name = "ReplicationReader", frozen)]
pub struct ReplicationReader {
    inner: Mutex<Option<Replication>>,
    chunk: usize,
    /// With it, row changes come decoded (see `change`), an unchanged TOAST-ed value as
    /// this object.
    unchanged: Option<Py<PyAny>>,
}

/// One column value of a pgoutput tuple: None ('n'), `unchanged` ('u'), str ('t') or
/// bytes ('b'); returns the position after it.
fn value<'py>(
    py: Python<'py>,
    data: &[u8],
    pos: usize,
    unchanged: &Py<PyAny>,
) -> PyResult<(Bound<'py, PyAny>, usize)> {
    let bad = || CopyError::new_err("pgoutput: a truncated tuple");
    let kind = *data.get(pos).ok_or_else(bad)?;
    match kind {
        b'n' => Ok((py.None().into_bound(py), pos + 1)),
        b'u' => Ok((unchanged.clone_ref(py).into_bound(py), pos + 1)),
        b't' | b'b' => {
            let head = data.get(pos + 1..pos + 5).ok_or_else(bad)?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let raw = data.get(pos + 5..pos + 5 + len).ok_or_else(bad)?;
            let item = if kind == b't' {
                let text = std::str::from_utf8(raw)
                    .map_err(|_| CopyError::new_err("pgoutput: a text value is not UTF-8"))?;
                PyString::new(py, text).into_any()
            } else {
                PyBytes::new(py, raw).into_any()
            };
            Ok((item, pos + 5 + len))
        }
        other => Err(CopyError::new_err(format!(
            "pgoutput: unknown tuple value kind {:?}",
            char::from(other)
        ))),
    }
}

/// A pgoutput `TupleData` at `pos` as a Python tuple; returns the position after it.
fn tuple<'py>(
    py: Python<'py>,
    data: &[u8],
    pos: usize,
    unchanged: &Py<PyAny>,
) -> PyResult<(Bound<'py, PyTuple>, usize)> {
    let head = data
        .get(pos..pos + 2)
        .ok_or_else(|| CopyError::new_err("pgoutput: a truncated tuple"))?;
    let count = u16::from_be_bytes([head[0], head[1]]) as usize;
    let mut pos = pos + 2;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let (item, next) = value(py, data, pos, unchanged)?;
        values.push(item);
        pos = next;
    }
    Ok((PyTuple::new(py, values)?, pos))
}

/// An insert, update or delete message as `(kind, relation, new, old, key_only)`, the
/// fields of `tap_dativo_postgres.pgoutput.Change`; None for any other message.
fn change<'py>(
    py: Python<'py>,
    data: &[u8],
    unchanged: &Py<PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let kind = match data.first() {
        Some(b'I') => "insert",
        Some(b'U') => "update",
        Some(b'D') => "delete",
        _ => return Ok(None),
    };
    let head = data
        .get(1..5)
        .ok_or_else(|| CopyError::new_err("pgoutput: a truncated change"))?;
    let relation = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let mut pos = 5;
    let mut old = py.None().into_bound(py);
    let mut new = py.None().into_bound(py);
    let mut key_only = false;
    if let Some(&marker @ (b'K' | b'O')) = data.get(pos) {
        key_only = marker == b'K';
        let (values, next) = tuple(py, data, pos + 1, unchanged)?;
        old = values.into_any();
        pos = next;
    }
    if data.get(pos) == Some(&b'N') {
        let (values, _) = tuple(py, data, pos + 1, unchanged)?;
        new = values.into_any();
    }
    let items = [
        PyString::new(py, kind).into_any(),
        relation.into_pyobject(py)?.into_any(),
        new,
        old,
        key_only.into_pyobject(py)?.to_owned().into_any(),
    ];
    Ok(Some(PyTuple::new(py, items)?))
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
    #[pyo3(signature = (dsn, slot, publication, start, upto, confirmed, chunk = 4096, unchanged = None, tls = None))]
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
        unchanged: Option<Py<PyAny>>,
        tls: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let request = Request {
            dsn,
            tls: tls_config(tls)?,
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
            unchanged,
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
                let decoded = match &self.unchanged {
                    Some(unchanged) => change(py, data, unchanged)?.map(Bound::into_any),
                    None => None,
                };
                let item = decoded.unwrap_or_else(|| PyBytes::new(py, data).into_any());
                PyTuple::new(py, [lsn.into_pyobject(py)?.into_any(), item])
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

/// The state of a `TableChangeReader`: the stream, the assembler, and the messages of the
/// last chunk not yet fed (a batch can end inside a chunk).
struct TableRead {
    replication: Replication,
    changes: TableChanges,
    queue: VecDeque<(u64, Bytes)>,
    ended: bool,
}

/// What one step of a `TableChangeReader` gives.
enum Step {
    Batch(RecordBatch, u64, Option<Vec<String>>),
    End,
}

impl TableRead {
    fn step(&mut self, chunk: usize) -> Result<Step, Error> {
        if self.ended {
            return Ok(Step::End);
        }
        loop {
            while let Some((_, data)) = self.queue.pop_front() {
                match self.changes.feed(&data)? {
                    Event::Nothing => {}
                    Event::Batch => {
                        let batch = self.changes.take()?;
                        return Ok(Step::Batch(batch, self.changes.position, None));
                    }
                    Event::SchemaChange(added) => {
                        self.ended = true;
                        let batch = self.changes.take()?;
                        return Ok(Step::Batch(batch, self.changes.position, Some(added)));
                    }
                }
            }
            let messages = self.replication.next_chunk(chunk)?;
            if messages.is_empty() {
                self.ended = true;
                if self.changes.committed() == 0 {
                    return Ok(Step::End);
                }
                let batch = self.changes.take()?;
                return Ok(Step::Batch(batch, self.changes.position, None));
            }
            self.queue.extend(messages);
        }
    }
}

/// One table's changes read from a slot over `START_REPLICATION ... LOGICAL`, assembled
/// in Rust (see `crate::repl::changes`): an iterator of `(batch, position, added)`, where
/// `batch` exports (`__arrow_c_array__`) the wanted columns as text plus `_lsn`,
/// `_commit_us` and `_deleted`; `position` is the end LSN of the batch's last transaction;
/// `added` (the last item only) names the columns whose appearance stopped the read.
#[pyclass(module = "dativo_accel", name = "TableChangeReader", frozen)]
pub struct TableChangeReader {
    inner: Mutex<Option<TableRead>>,
    chunk: usize,
}

#[pymethods]
impl TableChangeReader {
    #[new]
    #[pyo3(signature = (dsn, slot, publication, start, upto, confirmed, oid, columns, keys, known, batch_rows, chunk = 4096, tls = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dsn: String,
        slot: String,
        publication: String,
        start: u64,
        upto: u64,
        confirmed: u64,
        oid: u32,
        columns: Vec<String>,
        keys: Vec<String>,
        known: Vec<String>,
        batch_rows: usize,
        chunk: usize,
        tls: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let request = Request {
            dsn,
            tls: tls_config(tls)?,
            slot,
            publication,
            start,
            upto,
            confirmed,
        };
        let replication = py
            .detach(move || Replication::start(&request))
            .map_err(to_py)?;
        let changes = TableChanges::new(oid, columns, keys, known, start, batch_rows);
        Ok(TableChangeReader {
            inner: Mutex::new(Some(TableRead {
                replication,
                changes,
                queue: VecDeque::new(),
                ended: false,
            })),
            chunk: chunk.max(1),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        let Some(read) = guard.as_mut() else {
            return Ok(None);
        };
        let chunk = self.chunk;
        match py.detach(|| read.step(chunk)).map_err(to_py)? {
            Step::End => Ok(None),
            Step::Batch(batch, position, added) => {
                let batch = Bound::new(py, DecodedBatch::new(batch))?.into_any();
                let added = match added {
                    Some(names) => PyList::new(py, names)?.into_any(),
                    None => py.None().into_bound(py),
                };
                let items = [batch, position.into_pyobject(py)?.into_any(), added];
                PyTuple::new(py, items).map(Some)
            }
        }
    }

    /// End the session (the server releases the slot as its backend exits).
    fn close(&self) -> PyResult<()> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        if let Some(read) = guard.as_mut() {
            read.replication.close();
        }
        Ok(())
    }

    /// The highest LSN a standby status update reported as flushed (0: none sent).
    #[getter]
    fn reported_lsn(&self) -> PyResult<u64> {
        let guard = self
            .inner
            .lock()
            .map_err(|_| CopyError::new_err("the replication reader is unusable after a panic"))?;
        Ok(guard.as_ref().map_or(0, |r| r.replication.reported))
    }
}
