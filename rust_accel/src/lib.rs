//! dativo_accel: PostgreSQL binary COPY decoded straight into Arrow record batches, and
//! the Singer RECORD codecs (`encode`: Arrow -> lines, `decode`: lines -> Arrow).
//!
//! The data path: `source` (a thread reading the socket) -> `stream` -> `batch` (tuple
//! framing from `wire`, a byte budget per batch) -> `columns` (one typed Arrow builder
//! per column, values decoded by `numeric`, `temporal`, `text` and `array`).

pub mod array;
pub mod batch;
pub mod columns;
pub mod decode;
pub mod encode;
pub mod errors;
pub mod lines;
pub mod numeric;
pub mod parallel;
pub mod py_copy;
pub mod py_decode;
pub mod py_encode;
pub mod source;
pub mod stream;
pub mod temporal;
pub mod text;
pub mod tls;
pub mod wire;

use pyo3::prelude::*;

/// Every export of the extension module, in one place.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(py_copy::read_copy, m)?)?;
    m.add_function(wrap_pyfunction!(py_copy::read_copy_parallel, m)?)?;
    m.add_class::<py_copy::CopyReader>()?;
    m.add_function(wrap_pyfunction!(py_encode::encode_records, m)?)?;
    m.add_class::<py_decode::RecordDecoder>()?;
    m.add_class::<py_decode::DecodedBatch>()?;
    m.add_function(wrap_pyfunction!(py_decode::record_run, m)?)?;
    m.add("CopyError", py.get_type::<py_copy::CopyError>())?;
    m.add("ConnectError", py.get_type::<py_copy::ConnectError>())?;
    Ok(())
}
