//! The Python face of the Singer RECORD decoder (`singer::RecordDecoder`) and of
//! `singer::record_run`.

use std::sync::Mutex;

use arrow_array::RecordBatch;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule};

use super::capsule::{export_batch, import_schema};
use crate::singer::{self, split_lines, RecordDecoder as Decoder};

/// Decodes the RECORD lines of one stream into Arrow batches of its schema, giving the
/// values `dativo_bridge.codecs.decode.RecordDecoder` gives, or declining a batch.
#[pyclass(module = "dativo_accel", name = "RecordDecoder", frozen)]
pub struct RecordDecoder {
    inner: Decoder,
}

#[pymethods]
impl RecordDecoder {
    /// `schema`: anything with `__arrow_c_schema__`; raises `ValueError` when one of its
    /// types is not supported (the caller then decodes in Python).
    #[new]
    #[pyo3(signature = (schema, key_properties = Vec::new(), float32_direct = true))]
    fn new(
        schema: &Bound<'_, PyAny>,
        key_properties: Vec<String>,
        float32_direct: bool,
    ) -> PyResult<Self> {
        let schema = import_schema(schema)?;
        let inner = Decoder::new(schema, &key_properties, float32_direct)
            .map_err(|d| PyValueError::new_err(format!("not supported: {}", d.0)))?;
        Ok(RecordDecoder { inner })
    }

    /// Decode whole RECORD messages, without the GIL. Returns the batch and the names of
    /// record properties not in the schema, or the reason the batch was declined.
    fn decode(
        &self,
        py: Python<'_>,
        lines: Vec<Bound<'_, PyBytes>>,
    ) -> (Option<DecodedBatch>, Vec<String>, Option<&'static str>) {
        let slices: Vec<&[u8]> = lines.iter().map(PyBytesMethods::as_bytes).collect();
        self.decode_slices(py, &slices)
    }

    /// `decode` of the lines of `(data, start, end)` segments, split after each `\n` (a
    /// last piece without one is a line too): whole blocks of input, no object per line.
    fn decode_segments(
        &self,
        py: Python<'_>,
        segments: Vec<(Bound<'_, PyBytes>, usize, usize)>,
    ) -> PyResult<(Option<DecodedBatch>, Vec<String>, Option<&'static str>)> {
        let mut slices: Vec<&[u8]> = Vec::new();
        for (data, start, end) in &segments {
            let bytes = data.as_bytes();
            let piece = bytes
                .get(*start..*end)
                .ok_or_else(|| PyValueError::new_err("segment out of range"))?;
            slices.extend(split_lines(piece));
        }
        Ok(self.decode_slices(py, &slices))
    }
}

impl RecordDecoder {
    /// `decode`'s result for lines given as slices, decoded without the GIL.
    fn decode_slices(
        &self,
        py: Python<'_>,
        slices: &[&[u8]],
    ) -> (Option<DecodedBatch>, Vec<String>, Option<&'static str>) {
        let inner = &self.inner;
        match py.detach(|| inner.decode(slices)) {
            Ok(decoded) => (
                Some(DecodedBatch {
                    batch: Mutex::new(Some(decoded.batch)),
                }),
                decoded.extra,
                None,
            ),
            Err(decline) => (None, Vec::new(), Some(decline.0)),
        }
    }
}

/// The run of RECORD lines of one stream at `start` in `data` (see `singer::record_run`):
/// `(stream named by the first line's head or None, end of the run, lines in it)`.
#[pyfunction]
#[pyo3(signature = (data, start, stream, max_lines, max_bytes))]
pub fn record_run<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    start: usize,
    stream: Option<&[u8]>,
    max_lines: usize,
    max_bytes: usize,
) -> (Option<Bound<'py, PyBytes>>, usize, usize) {
    let run = singer::record_run(data.as_bytes(), start, stream, max_lines, max_bytes);
    (run.head.map(|h| PyBytes::new(py, h)), run.end, run.count)
}

/// One decoded record batch, exported once through `__arrow_c_array__`.
#[pyclass(module = "dativo_accel", name = "DecodedBatch", frozen)]
pub struct DecodedBatch {
    batch: Mutex<Option<RecordBatch>>,
}

impl DecodedBatch {
    /// `batch`, to be exported once.
    pub fn new(batch: RecordBatch) -> Self {
        DecodedBatch {
            batch: Mutex::new(Some(batch)),
        }
    }
}

#[pymethods]
impl DecodedBatch {
    /// Export the batch as an Arrow C struct array with its schema (once).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Bound<'py, PyCapsule>)> {
        let _ = requested_schema;
        let batch = self
            .batch
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the batch is unusable after a panic"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the batch was already exported"))?;
        export_batch(py, batch)
    }
}
