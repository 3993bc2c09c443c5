//! The framing of PostgreSQL's binary COPY format: the header, then per tuple an int16
//! field count and per field an int32 length (-1 = NULL) and that many bytes, then an
//! int16 -1 trailer. Everything is big-endian.

use super::errors::DecodeError;

/// `PGCOPY\n\377\r\n\0`
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One field of a scanned tuple: where its bytes start and how many (-1 = NULL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldRef {
    pub start: usize,
    pub len: i32,
}

impl FieldRef {
    /// The field's bytes in `buf`, or `None` for NULL.
    #[inline]
    pub fn value<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        if self.len < 0 {
            None
        } else {
            Some(&buf[self.start..self.start + self.len as usize])
        }
    }
}

/// What [`scan_tuple`] found at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole tuple ending (exclusive) at this offset; its fields were stored.
    Tuple(usize),
    /// The end-of-data marker, ending at this offset.
    Trailer(usize),
    /// The buffer ends inside the tuple: more bytes are needed.
    Incomplete,
}

#[inline]
pub fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// Check that a fixed-width field has its width.
#[inline]
pub fn exact<const N: usize>(v: &[u8], what: &str) -> Result<(), DecodeError> {
    if v.len() == N {
        Ok(())
    } else {
        Err(DecodeError::new(format!(
            "{what} value of {} bytes, expected {N}",
            v.len()
        )))
    }
}

/// A 4-byte big-endian integer field.
#[inline]
pub fn int4(v: &[u8], what: &str) -> Result<i32, DecodeError> {
    exact::<4>(v, what)?;
    Ok(be_i32(v, 0))
}

/// An 8-byte big-endian integer field.
#[inline]
pub fn int8(v: &[u8], what: &str) -> Result<i64, DecodeError> {
    exact::<8>(v, what)?;
    Ok(be_i64(v, 0))
}

/// A 2-byte big-endian integer field.
#[inline]
pub fn int2(v: &[u8], what: &str) -> Result<i16, DecodeError> {
    exact::<2>(v, what)?;
    Ok(be_i16(v, 0))
}

/// Parse the header at the start of `buf`: `Ok(Some(length))`, or `Ok(None)` if `buf`
/// is too short to tell.
pub fn parse_header(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let prefix = buf.len().min(SIGNATURE.len());
    if buf[..prefix] != SIGNATURE[..prefix] {
        return Err(DecodeError::new(
            "the COPY data does not start with the binary COPY signature",
        ));
    }
    if buf.len() < 19 {
        return Ok(None);
    }
    let flags = be_i32(buf, 11);
    if flags & (1 << 16) != 0 {
        return Err(DecodeError::new("binary COPY with OIDs is not supported"));
    }
    let extension = be_i32(buf, 15);
    if extension < 0 {
        return Err(DecodeError::new(
            "negative binary COPY header extension length",
        ));
    }
    let end = 19 + extension as usize;
    Ok(if buf.len() < end { None } else { Some(end) })
}

/// Scan the tuple at `buf[pos..]` without decoding it: the field boundaries go to
/// `fields` (cleared first), so a tuple is decoded only once it is known to be whole.
pub fn scan_tuple(
    buf: &[u8],
    pos: usize,
    ncols: usize,
    fields: &mut Vec<FieldRef>,
) -> Result<Scan, DecodeError> {
    if buf.len() < pos + 2 {
        return Ok(Scan::Incomplete);
    }
    let count = be_i16(buf, pos);
    if count == -1 {
        return Ok(Scan::Trailer(pos + 2));
    }
    if count < 0 || count as usize != ncols {
        return Err(DecodeError::new(format!(
            "a COPY tuple has {count} fields where {ncols} columns were expected"
        )));
    }
    fields.clear();
    let mut at = pos + 2;
    for _ in 0..ncols {
        if buf.len() < at + 4 {
            return Ok(Scan::Incomplete);
        }
        let len = be_i32(buf, at);
        at += 4;
        if len >= 0 {
            if buf.len() - at < len as usize {
                return Ok(Scan::Incomplete);
            }
            fields.push(FieldRef { start: at, len });
            at += len as usize;
        } else if len == -1 {
            fields.push(FieldRef { start: at, len: -1 });
        } else {
            return Err(DecodeError::new(format!("invalid COPY field length {len}")));
        }
    }
    Ok(Scan::Tuple(at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binary COPY stream of `rows` (each a list of optional field bytes).
    pub(crate) fn copy_bytes(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn header_needs_all_its_bytes() {
        let data = copy_bytes(&[]);
        assert_eq!(parse_header(&data[..5]).unwrap(), None);
        assert_eq!(parse_header(&data[..18]).unwrap(), None);
        assert_eq!(parse_header(&data).unwrap(), Some(19));
        assert!(parse_header(b"COPY").is_err());
    }

    #[test]
    fn tuples_nulls_and_trailer() {
        let data = copy_bytes(&[vec![Some(vec![1, 2]), None], vec![Some(vec![]), None]]);
        let mut fields = Vec::new();
        let Scan::Tuple(end) = scan_tuple(&data, 19, 2, &mut fields).unwrap() else {
            panic!("no tuple")
        };
        assert_eq!(fields[0].value(&data), Some(&[1u8, 2][..]));
        assert_eq!(fields[1].value(&data), None);
        let Scan::Tuple(end2) = scan_tuple(&data, end, 2, &mut fields).unwrap() else {
            panic!("no tuple")
        };
        assert_eq!(fields[0].value(&data), Some(&[][..]));
        assert_eq!(
            scan_tuple(&data, end2, 2, &mut fields).unwrap(),
            Scan::Trailer(end2 + 2)
        );
    }

    #[test]
    fn a_cut_tuple_is_incomplete_and_a_wrong_width_an_error() {
        let data = copy_bytes(&[vec![Some(vec![1, 2, 3, 4])]]);
        let mut fields = Vec::new();
        for cut in 19..data.len() - 2 {
            assert_eq!(
                scan_tuple(&data[..cut], 19, 1, &mut fields).unwrap(),
                Scan::Incomplete
            );
        }
        assert!(scan_tuple(&data, 19, 3, &mut fields).is_err());
    }
}
