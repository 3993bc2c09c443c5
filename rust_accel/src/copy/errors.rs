//! Errors: [`DecodeError`] for a value that does not fit its column, [`Error`] for
//! everything a read can end with. Python sees them as `dativo_accel.CopyError` and its
//! subclass `ConnectError` (see `py/copy.rs`).

use std::fmt;

/// Why one value could not be decoded (the column name is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError(message.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server could not be reached or refused the login (password never included).
    Connect(String),
    /// The server reported an error for a statement or during the COPY.
    Server(String),
    /// The data does not fit the requested Arrow schema.
    Decode(String),
    /// The caller's arguments are inconsistent (a programming error).
    Usage(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(m) | Error::Server(m) | Error::Decode(m) | Error::Usage(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Error {}
