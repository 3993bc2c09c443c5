//! Singer RECORD encoding of an Arrow record batch, byte for byte what
//! `dativo_bridge/codecs/encode.py` writes (conventions in docs/singer-codecs.md).
//!
//! Every supported column gets an encoder up front; rows are then written one after the
//! other into one buffer (`columns`: one encoder per column; `values` and `float`: the
//! text of one value). A SQL NULL in a JSON-text column (top level or struct child)
//! leaves its property out of the object (`null` is JSON's null, the text `null`). An
//! Arrow type (or a value, e.g. a date outside years 1-9999) this module cannot write
//! exactly as the Python path does makes the whole batch decline (`Err(Decline)`), and
//! the caller falls back to Python.

mod columns;
mod float;
mod values;

use arrow_array::{Array, StructArray};
use arrow_schema::Field;

use columns::Child;
pub use values::write_json_string;

/// The batch holds something this module does not write exactly like Python.
#[derive(Debug, PartialEq, Eq)]
pub struct Decline;

type Res<T> = Result<T, Decline>;

/// Batches of at least twice this many rows are encoded in parallel row ranges.
const MIN_SLICE_ROWS: usize = 8_192;
/// Output buffers kept for the next batch (their pages stay mapped: no page faults).
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// At most this much capacity is kept in `POOL`.
const POOL_BYTES: usize = 128 << 20;

fn pooled_buffer() -> Vec<u8> {
    POOL.lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_default()
}

/// Give the parts of an encoded batch back once they were copied out.
pub fn recycle(parts: Vec<Vec<u8>>) {
    let Ok(mut pool) = POOL.lock() else {
        return;
    };
    let mut kept: usize = pool.iter().map(Vec::capacity).sum();
    for mut part in parts {
        if kept + part.capacity() <= POOL_BYTES {
            kept += part.capacity();
            part.clear();
            pool.push(part);
        }
    }
}

/// Encode every row of `batch` as `head` + `"name":value,...` + `tail`, in consecutive
/// parts (one per thread) to be concatenated in order.
/// `fields` are the batch's fields as exported (with their extension metadata).
pub fn encode_batch(
    fields: &[Field],
    batch: &StructArray,
    head: &[u8],
    tail: &[u8],
) -> Res<Vec<Vec<u8>>> {
    let columns = batch.columns();
    if columns.len() != fields.len() {
        return Err(Decline);
    }
    let mut encoders = Vec::with_capacity(fields.len());
    for (k, (field, column)) in fields.iter().zip(columns).enumerate() {
        let mut prefix = if k == 0 { head.to_vec() } else { vec![b','] };
        write_json_string(&mut prefix, field.name().as_bytes());
        prefix.push(b':');
        encoders.push((prefix, Child::new(field, column)?));
    }
    // Members that may be left out: the separators are then decided row by row.
    let omitting = encoders.iter().any(|(_, c)| c.omit_nulls);
    let skip_head = |k: usize| if k == 0 { head.len() } else { 1 };
    let rows = batch.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let threads = if rows >= 2 * MIN_SLICE_ROWS {
        threads
    } else {
        1
    };
    let step = rows.div_ceil(threads);
    let encode_rows = |lo: usize, hi: usize| -> Res<Vec<u8>> {
        let mut out = pooled_buffer();
        let mut scratch = String::new();
        for i in lo..hi {
            if i == lo + 64 {
                // Room for the rest at the size of the first rows, plus an eighth.
                let per_row = out.len() / 64;
                out.reserve((hi - i) * (per_row + per_row / 8));
            }
            if encoders.is_empty() {
                out.extend_from_slice(head);
            }
            if omitting {
                out.extend_from_slice(head);
                let mut first = true;
                for (k, (prefix, child)) in encoders.iter().enumerate() {
                    if child.omitted(i) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(&prefix[skip_head(k)..]);
                    child.write(i, &mut out, &mut scratch)?;
                }
            } else {
                for (prefix, child) in &encoders {
                    out.extend_from_slice(prefix);
                    child.write(i, &mut out, &mut scratch)?;
                }
            }
            out.extend_from_slice(tail);
        }
        Ok(out)
    };
    if threads == 1 {
        return Ok(vec![encode_rows(0, rows)?]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..rows)
            .step_by(step)
            .map(|lo| {
                let encode_rows = &encode_rows;
                scope.spawn(move || encode_rows(lo, (lo + step).min(rows)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(Decline)))
            .collect()
    })
}
