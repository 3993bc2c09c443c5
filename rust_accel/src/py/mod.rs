//! The PyO3 glue: the Python classes and functions of `dativo_accel` over the Rust
//! cores in `crate::copy` and `crate::singer`, Arrow crossing through `capsule` (the
//! Arrow PyCapsule interface). The module itself, and its list of exports, is
//! `crate::_core`.

mod capsule;
mod copy;
mod decode;
mod encode;
mod repl;

pub use copy::{read_copy, read_copy_parallel, ConnectError, CopyError, CopyReader};
pub use decode::{record_run, DecodedBatch, RecordDecoder};
pub use encode::encode_records;
pub use repl::{ReplicationReader, TableChangeReader};
