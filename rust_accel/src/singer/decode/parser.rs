//! One Singer message parsed into the decoder's columns: the `record` object's properties
//! are matched to columns by name (the schema's order is tried first), each value is read
//! into its column's builder, and every other member of the message is skipped but still
//! validated. A key given twice declines.

use arrow_buffer::i256;

use super::columns::{Col, StructCol};
use super::values::{
    base64_decode, decimal_digits, finite_or_token, float_value, int_value, is_infinity_token,
    orjson_int, parse_date, parse_f64, parse_time, parse_timestamp,
};
use super::{Decline, Res};
use crate::singer::json::{Parser, MAX_DEPTH};

/// Everything a column needs while a line is parsed.
pub(super) struct Scratch {
    pub(super) text: Vec<u8>,
    pub(super) out: Vec<u8>,
    /// `(start, end)` in the line of the keys met so far in the message's top level
    /// (a key given twice declines).
    pub(super) keys: Vec<(usize, usize)>,
    /// The same for the undeclared properties of the record being parsed.
    pub(super) row_keys: Vec<(usize, usize)>,
}

/// Where `raw` (a slice of `p.buf`) lies in the line; declines when the same key was
/// already recorded in `keys`, else records it.
fn note_key(p: &Parser<'_>, keys: &mut Vec<(usize, usize)>, raw: &[u8]) -> Res<()> {
    let start = raw.as_ptr() as usize - p.buf.as_ptr() as usize;
    if keys.iter().any(|&(a, b)| &p.buf[a..b] == raw) {
        return Err(Decline("key given twice"));
    }
    keys.push((start, start + raw.len()));
    Ok(())
}

impl Col {
    /// Parse the next value into this column.
    fn value(&mut self, p: &mut Parser<'_>, sc: &mut Scratch, depth: usize) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(Decline("nesting too deep"));
        }
        if p.peek()? == b'n' {
            p.literal(b"null")?;
            match self {
                Col::Json(b, true) => b.append_value("null"),
                Col::LargeJson(b, true) => b.append_value("null"),
                _ => self.null(),
            }
            return Ok(());
        }
        macro_rules! int {
            ($b:expr, $t:ty) => {{
                let v = int_value(&p.number()?)?;
                let v = <$t>::try_from(v).map_err(|_| Decline("integer out of range"))?;
                $b.append_value(v);
            }};
        }
        macro_rules! text {
            () => {
                match p.string(&mut sc.text)? {
                    Some(raw) => raw,
                    None => &sc.text[..],
                }
            };
        }
        // The same for the 32- and 64-bit offset builders of each kind.
        macro_rules! string_into {
            ($b:expr) => {{
                if p.peek()? != b'"' {
                    return Err(Decline("string expected"));
                }
                let s = text!();
                // SAFETY: `Parser::string` returns valid UTF-8 only.
                $b.append_value(unsafe { std::str::from_utf8_unchecked(s) });
            }};
        }
        // JSON text is kept as written, once checked to be JSON (no NaN/Infinity).
        macro_rules! json_into {
            ($b:expr) => {{
                let start = p.pos;
                p.skip(&mut sc.text, depth, false)?;
                let raw = &p.buf[start..p.pos];
                // SAFETY: strings were checked to be UTF-8; everything else is ASCII.
                $b.append_value(unsafe { std::str::from_utf8_unchecked(raw) });
            }};
        }
        macro_rules! binary_into {
            ($b:expr) => {{
                if p.peek()? != b'"' {
                    return Err(Decline("base64 string expected"));
                }
                let s = text!();
                base64_decode(s, &mut sc.out)?;
                $b.append_value(&sc.out);
            }};
        }
        match self {
            Col::Null(_) => return Err(Decline("null expected")),
            Col::Bool(b) => match p.peek()? {
                b't' => {
                    p.literal(b"true")?;
                    b.append_value(true);
                }
                b'f' => {
                    p.literal(b"false")?;
                    b.append_value(false);
                }
                _ => return Err(Decline("boolean expected")),
            },
            Col::I8(b) => int!(b, i8),
            Col::I16(b) => int!(b, i16),
            Col::I32(b) => int!(b, i32),
            Col::I64(b) => int!(b, i64),
            Col::U8(b) => int!(b, u8),
            Col::U16(b) => int!(b, u16),
            Col::U32(b) => int!(b, u32),
            Col::U64(b) => int!(b, u64),
            Col::F64(b) => {
                let v = match float_value(p)? {
                    None => f64::NAN,
                    Some(t) => finite_or_token(t, parse_f64(t))?,
                };
                b.append_value(v);
            }
            Col::F32(b, direct) => {
                let v = match float_value(p)? {
                    None => f32::NAN,
                    Some(t) => {
                        // Arrow's JSON reader parses to f32 directly; Python rounds via f64.
                        let v = if *direct {
                            std::str::from_utf8(t)
                                .ok()
                                .and_then(|t| t.parse::<f32>().ok())
                                .ok_or(Decline("number expected"))?
                        } else {
                            parse_f64(t) as f32
                        };
                        if v.is_infinite() && !is_infinity_token(t) {
                            return Err(Decline("number beyond the float32 range"));
                        }
                        v
                    }
                };
                b.append_value(v);
            }
            Col::Str(b) => string_into!(b),
            Col::LargeStr(b) => string_into!(b),
            Col::Json(b, _) => json_into!(b),
            Col::LargeJson(b, _) => json_into!(b),
            Col::Bin(b) => binary_into!(b),
            Col::LargeBin(b) => binary_into!(b),
            Col::D128(b, precision, scale) => {
                let (neg, digits) = decimal_input(p, sc, *precision, *scale)?;
                let mut v: i128 = 0;
                for d in digits {
                    v = v * 10 + i128::from(d);
                }
                b.append_value(if neg { -v } else { v });
            }
            Col::D256(b, precision, scale) => {
                let (neg, digits) = decimal_input(p, sc, *precision, *scale)?;
                let ten = i256::from_i128(10);
                let mut v = i256::ZERO;
                for d in digits {
                    v = v
                        .checked_mul(ten)
                        .and_then(|x| x.checked_add(i256::from_i128(i128::from(d))))
                        .ok_or(Decline("decimal exceeds its precision"))?;
                }
                b.append_value(if neg { v.wrapping_neg() } else { v });
            }
            Col::TsUs(b) => {
                if p.peek()? != b'"' {
                    return Err(Decline("date-time string expected"));
                }
                let (secs, nanos) = parse_timestamp(text!())?;
                b.append_value(secs * 1_000_000 + nanos / 1000);
            }
            Col::TsNs(b) => {
                if p.peek()? != b'"' {
                    return Err(Decline("date-time string expected"));
                }
                let (secs, nanos) = parse_timestamp(text!())?;
                let v = secs
                    .checked_mul(1_000_000_000)
                    .and_then(|v| v.checked_add(nanos))
                    .ok_or(Decline("date-time out of the nanosecond range"))?;
                b.append_value(v);
            }
            Col::Date32(b) => {
                if p.peek()? != b'"' {
                    return Err(Decline("date string expected"));
                }
                let s = text!();
                if s.len() != 10 {
                    return Err(Decline("date expected"));
                }
                b.append_value(parse_date(s)? as i32);
            }
            Col::Time64Us(b) => {
                if p.peek()? != b'"' {
                    return Err(Decline("time string expected"));
                }
                let s = text!();
                let (secs, nanos, count, used) = parse_time(s)?;
                if used != s.len() || count > 6 {
                    return Err(Decline("time expected"));
                }
                b.append_value(secs * 1_000_000 + nanos / 1000);
            }
            Col::Struct(s) => {
                if p.peek()? != b'{' {
                    return Err(Decline("object expected"));
                }
                s.object(p, sc, depth + 1, None)?;
            }
            Col::List(l) => {
                p.expect(b'[')?;
                let mut n: i64 = 0;
                if p.peek()? == b']' {
                    p.pos += 1;
                } else {
                    loop {
                        l.item.value(p, sc, depth + 1)?;
                        n += 1;
                        if !p.more(b']')? {
                            break;
                        }
                    }
                }
                let last = *l.offsets.last().unwrap_or(&0);
                l.offsets.push(last + n);
                l.nulls.append_non_null();
            }
        }
        Ok(())
    }
}

fn decimal_input(
    p: &mut Parser<'_>,
    sc: &mut Scratch,
    precision: u8,
    scale: i8,
) -> Res<(bool, Vec<u8>)> {
    match p.peek()? {
        b'"' => {
            let s = match p.string(&mut sc.text)? {
                Some(raw) => raw,
                None => &sc.text[..],
            };
            decimal_digits(s, precision, scale, false)
        }
        b'-' | b'0'..=b'9' => {
            let num = p.number()?;
            if num.integral && !orjson_int(num.text) {
                // Rare: left to Python (an exact int).
                return Err(Decline("integer beyond 64 bits for a decimal"));
            }
            decimal_digits(num.text, precision, scale, !num.integral)
        }
        _ => Err(Decline("decimal expected")),
    }
}

impl StructCol {
    /// Parse an object into one row; `extra` collects unknown property names (top level).
    fn object(
        &mut self,
        p: &mut Parser<'_>,
        sc: &mut Scratch,
        depth: usize,
        mut extra: Option<&mut Vec<String>>,
    ) -> Res<()> {
        p.expect(b'{')?;
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
        let stamp = self.stamp;
        let mut filled = 0;
        let mut filled_extra = 0;
        let mut next = 0;
        if p.peek()? == b'}' {
            p.pos += 1;
        } else {
            loop {
                let (key, raw_key) = match p.string(&mut sc.text)? {
                    Some(raw) => (raw, true),
                    None => (&sc.text[..], false),
                };
                let found =
                    if next < self.fields.len() && self.fields[next].name().as_bytes() == key {
                        Some(next)
                    } else {
                        self.index.get(key).copied()
                    };
                if let Some(i) = found {
                    p.expect(b':')?;
                    if self.seen[i] == stamp {
                        return Err(Decline("property given twice"));
                    }
                    self.seen[i] = stamp;
                    filled += 1;
                    next = i + 1;
                    self.children[i].value(p, sc, depth)?;
                } else {
                    // Undeclared nested properties (maybe refused by the schema's
                    // additionalProperties) and escaped undeclared names: Python.
                    let Some(names) = extra.as_deref_mut() else {
                        return Err(Decline("nested property not in the schema"));
                    };
                    if !raw_key {
                        return Err(Decline("escaped property not in the schema"));
                    }
                    if filled_extra == 0 {
                        sc.row_keys.clear();
                    }
                    filled_extra += 1;
                    note_key(p, &mut sc.row_keys, key)?;
                    // SAFETY: `Parser::string` returns valid UTF-8 only.
                    let name = unsafe { std::str::from_utf8_unchecked(key) };
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_owned());
                    }
                    p.expect(b':')?;
                    p.skip(&mut sc.text, depth, true)?;
                }
                if !p.more(b'}')? {
                    break;
                }
            }
        }
        if filled < self.children.len() {
            for (i, child) in self.children.iter_mut().enumerate() {
                if self.seen[i] != stamp {
                    child.null();
                }
            }
        }
        self.nulls.append_non_null();
        self.len += 1;
        Ok(())
    }
}

/// One Singer message: an object whose `record` member is parsed into `top`; every other
/// member is skipped (and validated).
pub(super) fn message(
    p: &mut Parser<'_>,
    top: &mut StructCol,
    sc: &mut Scratch,
    extra: &mut Vec<String>,
) -> Res<()> {
    p.expect(b'{')?;
    let mut record = false;
    if p.peek()? == b'}' {
        return Err(Decline("message has no record"));
    }
    let mut keys = std::mem::take(&mut sc.keys);
    keys.clear();
    loop {
        // An escaped key whose text is `record` (`"rec\u006frd"`) is the record too; other
        // escaped keys decline (a duplicate among them is Python's to name).
        let is_record = match p.string(&mut sc.text)? {
            Some(raw) if raw == b"record" => true,
            Some(raw) => {
                note_key(p, &mut keys, raw)?;
                false
            }
            None if sc.text == b"record" => true,
            None => return Err(Decline("escaped key in the message")),
        };
        p.expect(b':')?;
        if is_record {
            if record {
                return Err(Decline("record given twice"));
            }
            record = true;
            if p.peek()? != b'{' {
                return Err(Decline("record is not an object"));
            }
            top.object(p, sc, 1, Some(extra))?;
        } else {
            p.skip(&mut sc.text, 1, true)?;
        }
        if !p.more(b'}')? {
            break;
        }
    }
    sc.keys = keys; // keeps its memory for the next line
    if !record {
        return Err(Decline("message has no record"));
    }
    Ok(())
}
