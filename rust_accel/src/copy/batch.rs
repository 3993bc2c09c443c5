//! Binary COPY bytes -> Arrow record batches cut by a byte budget. No I/O here: the
//! caller feeds buffers (see `stream.rs`), so everything is testable without a server.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::columns::{arrow_name, parse_decoder, Column};
use super::errors::Error;
use super::wire::{parse_header, scan_tuple, FieldRef, Scan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Decodes the tuples of one binary COPY into batches of `schema`.
pub struct BatchDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    fields: Vec<FieldRef>,
    state: State,
    rows: usize,
    bytes: usize,
    batch_bytes: usize,
}

impl BatchDecoder {
    /// A decoder for `schema`, whose fields are decoded by `decoders` (one name per field:
    /// `"int4"`, `"numeric"`, `"text[]"`, ... see `columns::Wire::NAMES`). A batch is cut
    /// after the tuple that brings its COPY bytes to `batch_bytes` or more.
    pub fn new(schema: SchemaRef, decoders: &[String], batch_bytes: usize) -> Result<Self, Error> {
        if decoders.len() != schema.fields().len() {
            return Err(Error::Usage(format!(
                "{} decoders for {} columns",
                decoders.len(),
                schema.fields().len()
            )));
        }
        let mut columns = Vec::with_capacity(decoders.len());
        for (field, name) in schema.fields().iter().zip(decoders) {
            let (wire, array) = parse_decoder(name).ok_or_else(|| {
                Error::Usage(format!(
                    "column '{}': unknown decoder '{name}'",
                    field.name()
                ))
            })?;
            let column = Column::new(wire, array, field.data_type()).map_err(|m| {
                Error::Usage(format!(
                    "column '{}' ({name} as {}): {m}",
                    field.name(),
                    arrow_name(field.data_type())
                ))
            })?;
            columns.push(column);
        }
        Ok(BatchDecoder {
            schema,
            columns,
            fields: Vec::new(),
            state: State::Header,
            rows: 0,
            bytes: 0,
            batch_bytes: batch_bytes.max(1),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// True once the end-of-data trailer was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Rows decoded into the current batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Decode the whole tuples of `buf[*pos..]`, moving `*pos` past them. Returns true as
    /// soon as the current batch is full (call [`Self::finish_batch`], then feed again);
    /// false when `buf` holds no further whole tuple or the trailer was read.
    pub fn feed(&mut self, buf: &[u8], pos: &mut usize) -> Result<bool, Error> {
        if self.state == State::Header {
            match parse_header(&buf[*pos..]).map_err(|e| Error::Decode(e.0))? {
                None => return Ok(false),
                Some(len) => {
                    *pos += len;
                    self.state = State::Tuples;
                }
            }
        }
        while self.state == State::Tuples {
            let scan = scan_tuple(buf, *pos, self.columns.len(), &mut self.fields)
                .map_err(|e| Error::Decode(e.0))?;
            match scan {
                Scan::Incomplete => return Ok(false),
                Scan::Trailer(end) => {
                    *pos = end;
                    self.state = State::Done;
                }
                Scan::Tuple(end) => {
                    for (i, (column, field)) in
                        self.columns.iter_mut().zip(&self.fields).enumerate()
                    {
                        if let Err(e) = column.append(field.value(buf)) {
                            let name = self.schema.field(i).name();
                            return Err(Error::Decode(format!("column '{name}': {e}")));
                        }
                    }
                    self.bytes += end - *pos;
                    self.rows += 1;
                    *pos = end;
                    if self.bytes >= self.batch_bytes {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// The rows decoded since the last batch, as a batch; the decoder starts a new one.
    pub fn finish_batch(&mut self) -> Result<RecordBatch, Error> {
        let arrays = self
            .columns
            .iter_mut()
            .map(Column::finish)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Decode(e.to_string()))?;
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| Error::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::wire::tests::copy_bytes;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("t", DataType::Utf8, true),
        ]))
    }

    fn rows(n: i32) -> Vec<u8> {
        let rows: Vec<_> = (0..n)
            .map(|i| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 2 == 0).then(|| b"abc".to_vec()),
                ]
            })
            .collect();
        copy_bytes(&rows)
    }

    fn decode_all(data: &[u8], budget: usize, piece: usize) -> Vec<RecordBatch> {
        let decoders = vec!["int4".to_string(), "text".to_string()];
        let mut decoder = BatchDecoder::new(schema(), &decoders, budget).unwrap();
        let mut batches = Vec::new();
        // Feed in pieces, carrying an unfinished tuple over as stream.rs does.
        let mut buf = Vec::new();
        let mut pos = 0;
        for chunk in data.chunks(piece) {
            buf.drain(..pos);
            pos = 0;
            buf.extend_from_slice(chunk);
            while decoder.feed(&buf, &mut pos).unwrap() {
                batches.push(decoder.finish_batch().unwrap());
            }
        }
        assert!(decoder.is_done());
        if decoder.rows() > 0 {
            batches.push(decoder.finish_batch().unwrap());
        }
        batches
    }

    #[test]
    fn batches_are_cut_by_bytes() {
        // Each tuple: 2 (count) + 4 + 4 (id) + 4 (+3 text or NULL) = 14 or 17 bytes.
        let data = rows(100);
        let batches = decode_all(&data, 155, data.len());
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n == 10),
            "{sizes:?}"
        );
        let ids: Vec<i32> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
            .collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(batches[0].column(1).as_string::<i32>().value(0), "abc");
        assert!(batches[0].column(1).is_null(1));
    }

    #[test]
    fn tuples_split_across_buffers_decode_the_same() {
        let data = rows(50);
        for piece in [1, 3, 7, 64, 1000] {
            let batches = decode_all(&data, 1 << 20, piece);
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].num_rows(), 50);
        }
    }

    #[test]
    fn an_empty_copy_has_no_batch() {
        assert!(decode_all(&rows(0), 100, 7).is_empty());
    }

    #[test]
    fn errors_name_the_column() {
        let data = copy_bytes(&[vec![Some(vec![1, 2]), None]]);
        let decoders = vec!["int4".to_string(), "text".to_string()];
        let mut decoder = BatchDecoder::new(schema(), &decoders, 100).unwrap();
        let err = decoder.feed(&data, &mut 0).unwrap_err();
        assert_eq!(
            err,
            Error::Decode("column 'id': int4 value of 2 bytes, expected 4".into())
        );
        assert!(BatchDecoder::new(schema(), &decoders[..1], 1).is_err());
        let bad = vec!["int8".to_string(), "text".to_string()];
        assert!(BatchDecoder::new(schema(), &bad, 1).is_err());
    }
}
