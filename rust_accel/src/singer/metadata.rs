//! What both Singer codecs read from an Arrow field's metadata: the `arrow.json`
//! extension (a string column holding JSON text, written and read as JSON rather than as
//! a string) and the SCHEMA's `x-sql-null` annotation (docs/singer-codecs.md).

use arrow_schema::Field;

pub const EXTENSION_NAME: &str = "ARROW:extension:name";
pub const JSON_EXTENSION: &str = "arrow.json";
/// Field metadata (from the SCHEMA's `x-sql-null` annotation, docs/singer-codecs.md).
pub const SQL_NULL_KEY: &str = "x-sql-null";
pub const SQL_NULL_OMITTED: &str = "omitted";

/// A field's Arrow extension type, as far as the codecs care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// No extension type: the storage type is the type.
    None,
    /// `arrow.json`: JSON text.
    Json,
    /// Any other extension type (the codecs decline it).
    Other,
}

pub fn extension(field: &Field) -> Extension {
    match field.metadata().get(EXTENSION_NAME).map(String::as_str) {
        None => Extension::None,
        Some(JSON_EXTENSION) => Extension::Json,
        Some(_) => Extension::Other,
    }
}

/// Whether a JSON-text field's SQL NULL is an omitted property (`x-sql-null: omitted`
/// in its metadata), so that a `null` in the record is the JSON value.
pub fn sql_null_omitted(field: &Field) -> bool {
    field.metadata().get(SQL_NULL_KEY).map(String::as_str) == Some(SQL_NULL_OMITTED)
}
