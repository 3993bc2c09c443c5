//! `dativo_accel`: PostgreSQL binary COPY decoded straight into Arrow record batches, and
//! the Singer RECORD codecs (`encode`: Arrow -> lines, `decode`: lines -> Arrow), and a
//! logical replication client (`repl`: a slot's pgoutput messages).
//!
//! Two subsystems without PyO3, so `cargo test` runs without Python: `copy` (source ->
//! stream -> batch -> columns, see its module docs) and `singer` (the codecs). `py` is
//! the glue that exposes both to Python; the one `#[pymodule]` below lists every export.

mod copy;
mod py;
mod repl;
mod singer;

use pyo3::prelude::*;

/// Every export of the extension module, in one place.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(py::read_copy, m)?)?;
    m.add_function(wrap_pyfunction!(py::read_copy_parallel, m)?)?;
    m.add_class::<py::CopyReader>()?;
    m.add_function(wrap_pyfunction!(py::encode_records, m)?)?;
    m.add_class::<py::RecordDecoder>()?;
    m.add_class::<py::DecodedBatch>()?;
    m.add_class::<py::ReplicationReader>()?;
    m.add_class::<py::TableChangeReader>()?;
    m.add_function(wrap_pyfunction!(py::record_run, m)?)?;
    m.add("CopyError", py.get_type::<py::CopyError>())?;
    m.add("ConnectError", py.get_type::<py::ConnectError>())?;
    Ok(())
}
