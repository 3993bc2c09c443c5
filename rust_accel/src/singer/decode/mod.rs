//! Singer RECORD lines -> an Arrow record batch of a given schema, with the values
//! `dativo_bridge/codecs/decode.py` produces (conventions in docs/singer-codecs.md).
//!
//! Each line is parsed once, by hand (`parser`, over the `json` scanner), straight into
//! one typed builder per column (`columns`; values read by `values`): the `record`
//! object's properties are matched to columns by name (the schema's order is tried
//! first), other keys of the message are skipped but still validated.
//!
//! This decoder never reports a bad value itself: anything the Python decoder would
//! reject, and anything it would read in a way this module does not reproduce exactly
//! (a property given twice, a lone surrogate, a date outside years 1-9999, a decimal
//! written as a float with more than 15 significant digits, ...), makes the whole batch
//! decline (`Err(Decline)`). The caller then decodes the batch in Python, which either
//! produces it or names the line, stream, property and expected type of the bad value:
//! the errors are the Python decoder's own, by construction.

mod columns;
mod parser;
mod values;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};

use columns::StructCol;
use parser::{message, Scratch};

use crate::singer::json::Parser;

/// The batch (or the schema) holds something this decoder does not read exactly like
/// Python; the reason is for tests and debugging only.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Decline(pub &'static str);

pub type Res<T> = Result<T, Decline>;

/// Decodes Singer RECORD lines of one stream into batches of its schema.
pub struct RecordDecoder {
    schema: SchemaRef,
    keys: Vec<usize>,
    f32_direct: bool,
}

/// A decoded batch and the names of properties not in the schema (dropped).
pub struct Decoded {
    pub batch: RecordBatch,
    pub extra: Vec<String>,
}

impl RecordDecoder {
    /// `keys`: properties that must be present and not null in every record.
    /// `f32_direct`: read float32 properties with one rounding (as Arrow's JSON reader,
    /// which the Python decoder uses when the whole schema allows) instead of via f64.
    pub fn new(schema: SchemaRef, keys: &[String], f32_direct: bool) -> Res<RecordDecoder> {
        // Building the columns once checks every type is supported.
        StructCol::new(schema.fields(), f32_direct)?;
        let keys = keys
            .iter()
            .map(|k| {
                schema
                    .index_of(k)
                    .map_err(|_| Decline("unknown key property"))
            })
            .collect::<Res<Vec<_>>>()?;
        Ok(RecordDecoder {
            schema,
            keys,
            f32_direct,
        })
    }

    /// Decode whole RECORD messages (each one line, with or without its newline). A panic
    /// in a builder (a 32-bit offset buffer past 2 GiB) declines rather than unwinding.
    pub fn decode(&self, lines: &[&[u8]]) -> Res<Decoded> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_lines(lines)))
            .unwrap_or(Err(Decline("internal error in the decoder")))
    }

    fn decode_lines(&self, lines: &[&[u8]]) -> Res<Decoded> {
        let mut top = StructCol::new(self.schema.fields(), self.f32_direct)?;
        let mut sc = Scratch {
            text: Vec::new(),
            out: Vec::new(),
            keys: Vec::new(),
            row_keys: Vec::new(),
        };
        let mut extra = Vec::new();
        for line in lines {
            let mut p = Parser { buf: line, pos: 0 };
            message(&mut p, &mut top, &mut sc, &mut extra)?;
            p.ws();
            if p.pos != line.len() {
                return Err(Decline("text after the message"));
            }
        }
        let columns = top
            .children
            .into_iter()
            .map(columns::Col::finish)
            .collect::<Res<Vec<_>>>()?;
        for &k in &self.keys {
            if columns[k].null_count() > 0 || columns[k].data_type() == &DataType::Null {
                return Err(Decline("key property missing or null"));
            }
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(lines.len())),
        )
        .map_err(|_| Decline("batch rejected by Arrow"))?;
        Ok(Decoded { batch, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singer::metadata::{EXTENSION_NAME, JSON_EXTENSION, SQL_NULL_KEY, SQL_NULL_OMITTED};
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use arrow_schema::{Field, Schema, TimeUnit};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn decoder(fields: Vec<Field>, keys: &[&str]) -> RecordDecoder {
        let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
        RecordDecoder::new(Arc::new(Schema::new(fields)), &keys, true).unwrap()
    }

    fn decode(d: &RecordDecoder, lines: &[&str]) -> Res<Decoded> {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        d.decode(&lines)
    }

    #[test]
    fn reads_typed_columns_and_drops_extra_properties() {
        let d = decoder(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("x", DataType::Float64, true),
                Field::new("n", DataType::Decimal128(12, 2), true),
                Field::new(
                    "t",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
            ],
            &["id"],
        );
        let out = decode(
            &d,
            &[
                r#"{"type":"RECORD","stream":"s","record":{"id":1,"x":1.5,"n":"12.30","t":"2020-01-01T00:00:01.5+01:00","zz":[1,{"a":null}]}}"#,
                r#"{"record":{"x":NaN,"id":-2},"stream":"s"}"#,
            ],
        )
        .unwrap();
        let b = out.batch;
        assert_eq!(out.extra, vec!["zz".to_string()]);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, -2]);
        assert!(b.column(1).as_primitive::<Float64Type>().value(1).is_nan());
        assert_eq!(b.column(2).as_primitive::<Decimal128Type>().value(0), 1230);
        assert!(b.column(2).is_null(1));
        assert_eq!(
            b.column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            (1_577_836_800 + 1 - 3600) * 1_000_000 + 500_000
        );
    }

    #[test]
    fn declines_duplicate_keys_and_undeclared_nested_properties() {
        let d = decoder(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new(
                    "o",
                    DataType::Struct(vec![Field::new("c", DataType::Int64, true)].into()),
                    true,
                ),
            ],
            &["id"],
        );
        for bad in [
            r#"{"type":"RECORD","stream":"s","stream":"t","record":{"id":1}}"#,
            r#"{"stream":"s","record":{"id":1},"stream":"t"}"#,
            r#"{"record":{"id":1,"z":1,"z":2}}"#,
            r#"{"record":{"id":1,"o":{"c":1,"c":2}}}"#,
            r#"{"record":{"id":1,"o":{"c":1,"d":2}}}"#,
            r#"{"str\u0065am":"s","record":{"id":1}}"#,
        ] {
            assert!(decode(&d, &[bad]).is_err(), "{bad}");
        }
        // The same undeclared name in two records is no duplicate.
        let out = decode(
            &d,
            &[
                r#"{"stream":"s","record":{"id":1,"z":1,"y":2}}"#,
                r#"{"stream":"s","record":{"id":2,"z":1}}"#,
            ],
        )
        .unwrap();
        assert_eq!(out.extra, vec!["z".to_string(), "y".to_string()]);
    }

    #[test]
    fn declines_what_python_rejects_or_reads_differently() {
        let d = decoder(
            vec![
                Field::new("id", DataType::Int64, false),
                Field::new("n", DataType::Decimal128(5, 2), true),
                Field::new("d", DataType::Date32, true),
            ],
            &["id"],
        );
        for bad in [
            r#"{"record":{"n":"1.00"}}"#,                       // key missing
            r#"{"record":{"id":1.0}}"#,                         // float for an integer
            r#"{"record":{"id":1,"id":2}}"#,                    // property twice
            r#"{"record":{"id":1,"n":"1.234"}}"#,               // inexact decimal
            r#"{"record":{"id":1,"n":"1234.5"}}"#,              // precision
            r#"{"record":{"id":1,"n":0.1000000000000000055}}"#, // float repr != digits
            r#"{"record":{"id":1,"d":"0000-01-01"}}"#,          // year 0
            r#"{"record":{"id":1,"d":"2021-02-29"}}"#,          // no such day
            r#"{"record":{"id":1}} x"#,                         // trailing text
            r#"{"record":{"id":1,"n":"\ud800"}}"#,              // lone surrogate
            r#"{"stream":"s"}"#,                                // no record
            r#"{"record":[1]}"#,                                // record not an object
        ] {
            assert!(decode(&d, &[bad]).is_err(), "{bad}");
        }
        assert!(decode(&d, &[r#"{"record":{"id":1,"n":-0.5e1}}"#]).is_ok());
    }

    fn json_field(name: &str, omitted: bool) -> Field {
        let mut meta = HashMap::new();
        meta.insert(EXTENSION_NAME.to_string(), JSON_EXTENSION.to_string());
        if omitted {
            meta.insert(SQL_NULL_KEY.to_string(), SQL_NULL_OMITTED.to_string());
        }
        Field::new(name, DataType::Utf8, true).with_metadata(meta)
    }

    #[test]
    fn json_columns_keep_their_text() {
        let d = decoder(vec![json_field("j", false)], &[]);
        let text = r#"{"b": [1, 2.50, -0, 1E2, "\u00e9\n\u001f", true, null, 1e400, 12345678901234567.89, 18446744073709551616], "b": {}}"#;
        let line = format!(r#"{{"record":{{"j": {text} }}}}"#);
        let out = decode(&d, &[&line]).unwrap();
        assert_eq!(out.batch.column(0).as_string::<i32>().value(0), text);
        for bad in [
            r#"{"record":{"j":[NaN]}}"#,
            r#"{"record":{"j":{"a":Infinity}}}"#,
            r#"{"record":{"j":-Infinity}}"#,
        ] {
            assert!(decode(&d, &[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_null_is_a_value_where_sql_null_is_omitted() {
        let list = Field::new(
            "l",
            DataType::List(Arc::new(json_field("item", true))),
            true,
        );
        let d = decoder(
            vec![json_field("j", true), json_field("k", false), list],
            &[],
        );
        let out = decode(
            &d,
            &[
                r#"{"record":{"j":null,"k":null,"l":[null,1]}}"#,
                r#"{"record":{}}"#,
            ],
        )
        .unwrap();
        let j = out.batch.column(0).as_string::<i32>();
        assert_eq!(j.value(0), "null");
        assert!(j.is_null(1));
        assert!(out.batch.column(1).is_null(0));
        let items = out.batch.column(2).as_list::<i32>().values().clone();
        assert!(items.is_null(0)); // a list item's null stays SQL NULL
    }

    #[test]
    fn numbers_beyond_the_float_range_decline() {
        let d = decoder(
            vec![
                Field::new("f", DataType::Float64, true),
                Field::new("g", DataType::Float32, true),
            ],
            &[],
        );
        for bad in [
            r#"{"record":{"f":1e400}}"#,
            r#"{"record":{"f":-1e400}}"#,
            r#"{"record":{"g":1e39}}"#,
            r#"{"record":{"g":-3.5e38}}"#,
        ] {
            assert!(decode(&d, &[bad]).is_err(), "{bad}");
        }
        let out = decode(&d, &[r#"{"record":{"f":Infinity,"g":-Infinity}}"#]).unwrap();
        assert!(out.batch.column(0).as_primitive::<Float64Type>().value(0) == f64::INFINITY);
    }
}
