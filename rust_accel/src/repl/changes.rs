//! One table's changes from a stream of pgoutput (protocol version 1) messages, assembled
//! into whole transactions in commit order and handed on as columns of text: what
//! `tap_dativo_postgres.cdc.ChangeStream` does in Python for the peek path, done here so
//! the Rust client's rows never become Python objects one value at a time.
//!
//! The rules are the Python path's (cdc.py `_transactions`, `_rows`, pgoutput.py
//! `new_row`), and its tests compare both:
//! - only the table's changes count; a transaction is kept when its commit's end LSN is
//!   past `after` and it changed the table; a rolled-back one never reaches the stream;
//! - insert: the new row; delete: the old row (the key under `REPLICA IDENTITY DEFAULT`);
//!   update: the new row, after a delete of the old key when the key changed; an unchanged
//!   toasted value ('u') is taken from the old row where the WAL carries one (`REPLICA
//!   IDENTITY FULL`), and is an error where it does not (it would become NULL);
//! - TRUNCATE of the table: a row with every column null, deleted;
//! - a Relation message of the table naming a column the stream was discovered without,
//!   inside a transaction not yet read, stops the read before that transaction
//!   (`SchemaChange`);
//! - transactions are never split: a batch ends at the first commit that brings it to
//!   `batch_rows` rows or more.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};

use crate::copy::Error;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Names of the bookkeeping columns of a batch, after the table's own.
pub const LSN: &str = "_lsn";
pub const COMMIT_US: &str = "_commit_us";
pub const DELETED: &str = "_deleted";

fn bad(what: &str) -> Error {
    Error::Decode(format!("pgoutput: {what}"))
}

/// A column of text values that can be cut back to an earlier length (a transaction
/// that turns out not to count is dropped from the pending rows).
#[derive(Default)]
struct TextColumn {
    offsets: Vec<i32>,
    data: Vec<u8>,
    valid: Vec<bool>,
}

impl TextColumn {
    fn new() -> Self {
        TextColumn {
            offsets: vec![0],
            data: Vec::new(),
            valid: Vec::new(),
        }
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Error> {
        if let Some(bytes) = value {
            self.data.extend_from_slice(bytes);
        }
        let end = i32::try_from(self.data.len()).map_err(|_| {
            Error::Decode(
                "a batch of changes holds over 2 GiB of one column's text (transactions are \
                 never split); lower batch_rows or read this table with the Python path \
                 (accelerator: python)"
                    .into(),
            )
        })?;
        self.offsets.push(end);
        self.valid.push(value.is_some());
        Ok(())
    }

    fn truncate(&mut self, rows: usize) {
        self.offsets.truncate(rows + 1);
        self.data.truncate(self.offsets[rows] as usize);
        self.valid.truncate(rows);
    }

    fn take(&mut self) -> Result<StringArray, Error> {
        let taken = std::mem::replace(self, TextColumn::new());
        let nulls = NullBuffer::from(taken.valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(taken.offsets));
        // try_new checks the UTF-8 of the values and that no offset splits a character.
        StringArray::try_new(offsets, Buffer::from_vec(taken.data), nulls)
            .map_err(|e| Error::Decode(format!("pgoutput: a text value is not UTF-8 ({e})")))
    }
}

/// A column value of a pgoutput tuple.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Null,
    Unchanged,
    Text(&'a [u8]),
}

struct Relation {
    /// For each wanted column, its position in the relation's tuples.
    positions: Vec<Option<usize>>,
    /// The positions of the primary key's columns.
    keys: Vec<usize>,
    names: Vec<String>,
    namespace: String,
    name: String,
    identity: u8,
}

/// What `feed` saw at the end of a message.
pub enum Event {
    /// Nothing for the caller yet.
    Nothing,
    /// Pending rows reached `batch_rows` at a commit: `take` them.
    Batch,
    /// A column was added (its names): the read stops before the transaction.
    SchemaChange(Vec<String>),
}

/// The assembler of one table's changes (see the module docs).
pub struct TableChanges {
    oid: u32,
    wanted: Vec<String>,
    keys: Vec<String>,
    known: HashSet<String>,
    after: u64,
    batch_rows: usize,
    relation: Option<Relation>,
    in_txn: bool,
    final_lsn: u64,
    txn_start: usize,
    columns: Vec<TextColumn>,
    lsn: Vec<i64>,
    commit_us: Vec<i64>,
    deleted: Vec<bool>,
    /// After `take`: every change of the table up to this end LSN is in a taken batch.
    pub position: u64,
}

fn be_u16(data: &[u8], pos: usize) -> Result<u16, Error> {
    let b = data
        .get(pos..pos + 2)
        .ok_or_else(|| bad("a truncated message"))?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(data: &[u8], pos: usize) -> Result<u32, Error> {
    let b = data
        .get(pos..pos + 4)
        .ok_or_else(|| bad("a truncated message"))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(data: &[u8], pos: usize) -> Result<u64, Error> {
    let b = data
        .get(pos..pos + 8)
        .ok_or_else(|| bad("a truncated message"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

fn c_string(data: &[u8], pos: usize) -> Result<(String, usize), Error> {
    let rest = data.get(pos..).ok_or_else(|| bad("a truncated message"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("an unterminated name"))?;
    let text = std::str::from_utf8(&rest[..end]).map_err(|_| bad("a name is not UTF-8"))?;
    Ok((text.to_string(), pos + end + 1))
}

/// A `TupleData` at `pos`; returns the position after it.
fn tuple<'a>(data: &'a [u8], pos: usize, out: &mut Vec<Value<'a>>) -> Result<usize, Error> {
    out.clear();
    let count = be_u16(data, pos)? as usize;
    let mut pos = pos + 2;
    for _ in 0..count {
        let kind = *data.get(pos).ok_or_else(|| bad("a truncated tuple"))?;
        pos += 1;
        match kind {
            b'n' => out.push(Value::Null),
            b'u' => out.push(Value::Unchanged),
            b't' => {
                let len = be_u32(data, pos)? as usize;
                let raw = data
                    .get(pos + 4..pos + 4 + len)
                    .ok_or_else(|| bad("a truncated tuple"))?;
                out.push(Value::Text(raw));
                pos += 4 + len;
            }
            b'b' => {
                return Err(bad(
                    "a value in binary format (the stream asks for text: is another \
                     client's 'binary' option on this slot?)",
                ))
            }
            other => {
                return Err(bad(&format!(
                    "unknown tuple value kind {:?}",
                    char::from(other)
                )))
            }
        }
    }
    Ok(pos)
}

fn identity_name(identity: u8) -> &'static str {
    match identity {
        b'd' => "DEFAULT",
        b'n' => "NOTHING",
        b'f' => "FULL",
        b'i' => "USING INDEX",
        _ => "unknown",
    }
}

impl TableChanges {
    /// Args: the table's oid; the columns wanted in the batches, in order; the primary
    /// key's columns; the columns the stream was discovered with; transactions whose
    /// commit ends at or before `after` are skipped; rows per batch.
    pub fn new(
        oid: u32,
        wanted: Vec<String>,
        keys: Vec<String>,
        known: Vec<String>,
        after: u64,
        batch_rows: usize,
    ) -> Self {
        let columns = wanted.iter().map(|_| TextColumn::new()).collect();
        TableChanges {
            oid,
            wanted,
            keys,
            known: known.into_iter().collect(),
            after,
            batch_rows: batch_rows.max(1),
            relation: None,
            in_txn: false,
            final_lsn: 0,
            txn_start: 0,
            columns,
            lsn: Vec::new(),
            commit_us: Vec::new(),
            deleted: Vec::new(),
            position: after,
        }
    }

    /// Rows of committed transactions not yet taken.
    pub fn committed(&self) -> usize {
        if self.in_txn {
            self.txn_start
        } else {
            self.deleted.len()
        }
    }

    fn push_row(&mut self, values: &[Value<'_>], deleted: bool) -> Result<(), Error> {
        let relation = self.relation.as_ref().expect("a relation before rows");
        for (column, position) in self.columns.iter_mut().zip(&relation.positions) {
            let value = match position.and_then(|p| values.get(p)) {
                Some(Value::Text(raw)) => Some(*raw),
                Some(Value::Unchanged) => {
                    return Err(Error::Decode(
                        "pgoutput: an unchanged TOASTed value reached a batch".into(),
                    ))
                }
                Some(Value::Null) | None => None,
            };
            column.push(value)?;
        }
        self.deleted.push(deleted);
        Ok(())
    }

    fn truncate_row(&mut self) -> Result<(), Error> {
        for column in &mut self.columns {
            column.push(None)?;
        }
        self.deleted.push(true);
        Ok(())
    }

    fn relation_message(&mut self, data: &[u8]) -> Result<Event, Error> {
        let oid = be_u32(data, 1)?;
        if oid != self.oid {
            return Ok(Event::Nothing);
        }
        let (namespace, pos) = c_string(data, 5)?;
        let (name, pos) = c_string(data, pos)?;
        let identity = *data.get(pos).ok_or_else(|| bad("a truncated relation"))?;
        let count = be_u16(data, pos + 1)? as usize;
        let mut pos = pos + 3;
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            let (column, next) = c_string(data, pos + 1)?;
            names.push(column);
            pos = next + 8;
        }
        if pos > data.len() {
            return Err(bad("a truncated relation"));
        }
        let find = |wanted: &String| names.iter().position(|n| n == wanted);
        let positions = self.wanted.iter().map(find).collect();
        let keys = names
            .iter()
            .enumerate()
            .filter(|(_, n)| self.keys.contains(n))
            .map(|(i, _)| i)
            .collect();
        let added: Vec<String> = names
            .iter()
            .filter(|n| !self.known.contains(*n))
            .cloned()
            .collect();
        let namespace = if namespace.is_empty() {
            "pg_catalog".to_string()
        } else {
            namespace
        };
        let event = if !added.is_empty() && self.in_txn && self.final_lsn >= self.after {
            Event::SchemaChange(added)
        } else {
            Event::Nothing
        };
        self.relation = Some(Relation {
            positions,
            keys,
            names,
            namespace,
            name,
            identity,
        });
        Ok(event)
    }

    fn change(&mut self, data: &[u8]) -> Result<(), Error> {
        let oid = be_u32(data, 1)?;
        if oid != self.oid || !self.in_txn {
            return Ok(());
        }
        if self.relation.is_none() {
            return Err(bad("a change of the table before its Relation message"));
        }
        let tag = data[0];
        let mut pos = 5;
        let mut old = Vec::new();
        let mut new = Vec::new();
        let mut has_old = false;
        let mut key_only = false;
        if let Some(&marker @ (b'K' | b'O')) = data.get(pos) {
            key_only = marker == b'K';
            has_old = true;
            pos = tuple(data, pos + 1, &mut old)?;
        }
        let has_new = data.get(pos) == Some(&b'N');
        if has_new {
            tuple(data, pos + 1, &mut new)?;
        }
        if tag == b'D' {
            if !has_old {
                return Err(bad("a delete without the old key"));
            }
            return self.push_row(&old, true);
        }
        if !has_new {
            return Err(bad("an insert or update without the new row"));
        }
        for (i, value) in new.iter_mut().enumerate() {
            if *value != Value::Unchanged {
                continue;
            }
            match old.get(i) {
                Some(&was) if has_old && !key_only && was != Value::Unchanged => *value = was,
                _ => {
                    let relation = self.relation.as_ref().expect("checked above");
                    let column = relation.names.get(i).map_or("?", String::as_str);
                    let (namespace, name) = (&relation.namespace, &relation.name);
                    let table = format!("{namespace}.{name}");
                    let quoted = format!(
                        "\"{}\".\"{}\"",
                        namespace.replace('"', "\"\""),
                        name.replace('"', "\"\"")
                    );
                    return Err(Error::Decode(format!(
                        "table {table}: an update left column '{column}' unchanged and its \
                         value is TOASTed, so the WAL does not carry it (REPLICA IDENTITY {}). \
                         Run ALTER TABLE {quoted} REPLICA IDENTITY FULL and read the stream \
                         again from a new snapshot (remove its bookmark from the state, or \
                         --full-refresh)",
                        identity_name(relation.identity)
                    )));
                }
            }
        }
        let relation = self.relation.as_ref().expect("checked above");
        let key_changed = tag == b'U'
            && has_old
            && relation.keys.iter().any(|&i| {
                old.get(i).copied().unwrap_or(Value::Null)
                    != new.get(i).copied().unwrap_or(Value::Null)
            });
        if key_changed {
            self.push_row(&old, true)?;
        }
        self.push_row(&new, false)
    }

    fn truncate_message(&mut self, data: &[u8]) -> Result<(), Error> {
        let count = be_u32(data, 1)? as usize;
        for i in 0..count {
            if be_u32(data, 6 + 4 * i)? == self.oid && self.in_txn {
                return self.truncate_row();
            }
        }
        Ok(())
    }

    fn drop_open(&mut self) {
        let keep = self.txn_start;
        for column in &mut self.columns {
            column.truncate(keep);
        }
        self.deleted.truncate(keep);
    }

    /// One pgoutput message.
    pub fn feed(&mut self, data: &[u8]) -> Result<Event, Error> {
        match data.first() {
            Some(b'B') => {
                self.final_lsn = be_u64(data, 1)?;
                be_u32(data, 17)?;
                self.in_txn = true;
                self.txn_start = self.deleted.len();
            }
            Some(b'C') => {
                let end_lsn = be_u64(data, 10)?;
                let time = be_u64(data, 18)? as i64 + PG_EPOCH_US;
                if self.in_txn {
                    let rows = self.deleted.len() - self.txn_start;
                    if end_lsn > self.after && rows > 0 {
                        let lsn = i64::try_from(end_lsn).map_err(|_| bad("an LSN past 2^63"))?;
                        self.lsn.resize(self.deleted.len(), lsn);
                        self.commit_us.resize(self.deleted.len(), time);
                        self.position = end_lsn;
                    } else {
                        self.drop_open();
                    }
                }
                self.in_txn = false;
                self.txn_start = self.deleted.len();
                if self.deleted.len() >= self.batch_rows {
                    return Ok(Event::Batch);
                }
            }
            Some(b'R') => return self.relation_message(data),
            Some(b'I' | b'U' | b'D') => self.change(data)?,
            Some(b'T') => self.truncate_message(data)?,
            Some(b'O' | b'Y' | b'M') => {}
            Some(&other) => {
                return Err(bad(&format!(
                    "unexpected message {:?} (is the slot's plugin pgoutput, proto_version 1?)",
                    char::from(other)
                )))
            }
            None => return Err(bad("an empty message")),
        }
        Ok(Event::Nothing)
    }

    /// The rows of the committed transactions as a batch: the wanted columns as text,
    /// then `_lsn` (the commit's end LSN), `_commit_us` (microseconds since the Unix
    /// epoch) and `_deleted`; the open transaction's rows are dropped.
    pub fn take(&mut self) -> Result<RecordBatch, Error> {
        if self.in_txn {
            self.drop_open();
            self.in_txn = false;
        }
        let mut fields: Vec<Field> = self
            .wanted
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect();
        fields.push(Field::new(LSN, DataType::Int64, false));
        fields.push(Field::new(COMMIT_US, DataType::Int64, false));
        fields.push(Field::new(DELETED, DataType::Boolean, false));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        for column in &mut self.columns {
            arrays.push(Arc::new(column.take()?));
        }
        arrays.push(Arc::new(Int64Array::from(std::mem::take(&mut self.lsn))));
        arrays.push(Arc::new(Int64Array::from(std::mem::take(
            &mut self.commit_us,
        ))));
        arrays.push(Arc::new(BooleanArray::from(std::mem::take(
            &mut self.deleted,
        ))));
        self.txn_start = 0;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::Decode(format!("a batch of changes: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    fn relation(oid: u32, columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(b"public\0t\0");
        m.push(b'd');
        m.extend_from_slice(&(columns.len() as u16).to_be_bytes());
        for c in columns {
            m.push(0);
            m.extend_from_slice(c.as_bytes());
            m.push(0);
            m.extend_from_slice(&25u32.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    fn values(m: &mut Vec<u8>, vals: &[Option<&str>]) {
        m.extend_from_slice(&(vals.len() as u16).to_be_bytes());
        for v in vals {
            match v {
                None => m.push(b'n'),
                Some("\u{1}") => m.push(b'u'),
                Some(t) => {
                    m.push(b't');
                    m.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    m.extend_from_slice(t.as_bytes());
                }
            }
        }
    }

    fn change(
        tag: u8,
        oid: u32,
        old: Option<(u8, &[Option<&str>])>,
        new: Option<&[Option<&str>]>,
    ) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&oid.to_be_bytes());
        if let Some((marker, vals)) = old {
            m.push(marker);
            values(&mut m, vals);
        }
        if let Some(vals) = new {
            m.push(b'N');
            values(&mut m, vals);
        }
        m
    }

    fn begin(final_lsn: u64) -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend_from_slice(&final_lsn.to_be_bytes());
        m.extend_from_slice(&0u64.to_be_bytes());
        m.extend_from_slice(&7u32.to_be_bytes());
        m
    }

    fn commit(end_lsn: u64) -> Vec<u8> {
        let mut m = vec![b'C', 0];
        m.extend_from_slice(&(end_lsn - 8).to_be_bytes());
        m.extend_from_slice(&end_lsn.to_be_bytes());
        m.extend_from_slice(&1_000_000u64.to_be_bytes());
        m
    }

    fn texts(batch: &RecordBatch, i: usize) -> Vec<Option<String>> {
        let a = batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        (0..a.len())
            .map(|j| a.is_valid(j).then(|| a.value(j).to_string()))
            .collect()
    }

    fn table() -> TableChanges {
        let names = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        TableChanges::new(
            5,
            names(&["id", "body"]),
            names(&["id"]),
            names(&["id", "body", "n"]),
            100,
            1000,
        )
    }

    #[test]
    fn rows_of_counted_transactions_in_order() {
        let mut t = table();
        for m in [
            relation(5, &["id", "n", "body"]),
            begin(90),
            change(b'I', 5, None, Some(&[Some("0"), None, Some("old")])),
            commit(100), // at `after`: skipped
            begin(150),
            change(b'I', 6, None, Some(&[Some("x")])), // another table
            change(b'I', 5, None, Some(&[Some("1"), Some("7"), Some("a")])),
            change(
                b'U',
                5,
                Some((b'K', &[Some("1"), None, None])),
                Some(&[Some("2"), None, Some("\u{1}")]),
            ),
            change(b'D', 5, Some((b'K', &[Some("2"), None, None])), None),
            commit(160),
            begin(170),
            change(b'I', 6, None, Some(&[Some("y")])),
            commit(180), // no row of the table
        ] {
            // the update leaves 'body' unchanged with only the key as old: an error
            let r = t.feed(&m);
            if m[0] == b'U' {
                assert!(
                    matches!(&r, Err(Error::Decode(s)) if s.contains("REPLICA IDENTITY DEFAULT"))
                );
                continue;
            }
            assert!(r.is_ok());
        }
        let batch = t.take().unwrap();
        assert_eq!(texts(&batch, 0), vec![Some("1".into()), Some("2".into())]);
        assert_eq!(texts(&batch, 1), vec![Some("a".into()), None]);
        assert_eq!(t.position, 160);
    }

    #[test]
    fn key_change_unchanged_merge_truncate_and_schema_change() {
        let mut t = table();
        let mut trunc = vec![b'T'];
        trunc.extend_from_slice(&1u32.to_be_bytes());
        trunc.push(0);
        trunc.extend_from_slice(&5u32.to_be_bytes());
        for m in [
            relation(5, &["id", "body"]),
            begin(200),
            change(
                b'U',
                5,
                Some((b'O', &[Some("1"), Some("big")])),
                Some(&[Some("3"), Some("\u{1}")]),
            ),
            trunc,
            commit(210),
        ] {
            assert!(matches!(t.feed(&m).unwrap(), Event::Nothing));
        }
        assert!(matches!(t.feed(&begin(300)).unwrap(), Event::Nothing));
        t.feed(&change(b'I', 5, None, Some(&[Some("9"), Some("z")])))
            .unwrap();
        let Event::SchemaChange(added) = t.feed(&relation(5, &["id", "body", "extra"])).unwrap()
        else {
            panic!("no schema change");
        };
        assert_eq!(added, vec!["extra".to_string()]);
        assert_eq!(t.committed(), 3);
        let batch = t.take().unwrap();
        assert_eq!(
            texts(&batch, 0),
            vec![Some("1".into()), Some("3".into()), None]
        );
        assert_eq!(
            texts(&batch, 1),
            vec![Some("big".into()), Some("big".into()), None]
        );
        let deleted = batch
            .column(4)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert_eq!(
            (0..3).map(|i| deleted.value(i)).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        let lsn = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(lsn.values().to_vec(), vec![210, 210, 210]);
        assert_eq!(t.position, 210);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut t = table();
        t.feed(&relation(5, &["id", "body"])).unwrap();
        t.feed(&begin(200)).unwrap();
        let mut m = vec![b'I'];
        m.extend_from_slice(&5u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&2u16.to_be_bytes());
        m.extend_from_slice(&[b't', 0, 0, 0, 1, b'1', b't', 0, 0, 0, 1, 0xC3]);
        t.feed(&m).unwrap();
        // The next row's value completes the character: the column's bytes are UTF-8,
        // but an offset splits a character.
        let last = m.len() - 1;
        m[last] = 0xA9;
        t.feed(&m).unwrap();
        t.feed(&commit(210)).unwrap();
        assert!(matches!(t.take(), Err(Error::Decode(s)) if s.contains("UTF-8")));
    }
}
