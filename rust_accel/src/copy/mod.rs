//! PostgreSQL binary COPY decoded straight into Arrow record batches.
//!
//! The data path: `source` (a thread reading the socket, TLS from `tls`) -> `stream` ->
//! `batch` (tuple framing from `wire`, a byte budget per batch) -> `columns` (one typed
//! Arrow builder per column, values decoded by `numeric`, `temporal`, `text` and
//! `array`); a `request` holds what opening one needs, `parallel` runs several COPYs at
//! once and merges their streams. No PyO3 here: the Python face is `crate::py::copy`.

mod array;
mod batch;
mod columns;
mod errors;
mod numeric;
mod parallel;
mod request;
mod source;
mod stream;
mod temporal;
mod text;
mod tls;
mod wire;

pub use errors::Error;
pub use parallel::ParallelStream;
pub use request::Request;
pub use tls::{client_config, Mode as TlsMode, Settings as TlsSettings};
