//! Singer RECORD lines -> an Arrow record batch of a given schema, with the values
//! `dativo_bridge/codecs/decode.py` produces (conventions in docs/singer-codecs.md).
//!
//! Each line is parsed once, by hand, straight into one typed builder per column: the
//! `record` object's properties are matched to columns by name (the schema's order is
//! tried first), other keys of the message are skipped but still validated.
//!
//! This decoder never reports a bad value itself: anything the Python decoder would
//! reject, and anything it would read in a way this module does not reproduce exactly
//! (a property given twice, a lone surrogate, a date outside years 1-9999, a decimal
//! written as a float with more than 15 significant digits, ...), makes the whole batch
//! decline (`Err(Decline)`). The caller then decodes the batch in Python, which either
//! produces it or names the line, stream, property and expected type of the bad value:
//! the errors are the Python decoder's own, by construction.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder,
    LargeBinaryBuilder, LargeStringBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, LargeListArray, ListArray, NullArray, RecordBatch, StructArray};
use arrow_buffer::{i256, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};

/// The batch (or the schema) holds something this decoder does not read exactly like
/// Python; the reason is for tests and debugging only.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Decline(pub &'static str);

type Res<T> = Result<T, Decline>;

const EXTENSION_NAME: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";
/// Field metadata (from the SCHEMA's `x-sql-null` annotation, docs/singer-codecs.md).
const SQL_NULL_KEY: &str = "x-sql-null";
const SQL_NULL_OMITTED: &str = "omitted";
/// Nesting deeper than this declines (Python's json stops near 1000 with RecursionError).
const MAX_DEPTH: usize = 256;
/// A JSON number with more significant digits than this is not read exactly the same way
/// by Python's two paths when it becomes a decimal (float repr vs. the digits).
const EXACT_FLOAT_DIGITS: usize = 15;

// ---------------------------------------------------------------------------------------
// The parser: a cursor over one line.

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A JSON number token: its text, whether it has a fraction or exponent.
struct Num<'a> {
    text: &'a [u8],
    integral: bool,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next non-whitespace byte (not consumed).
    #[inline]
    fn peek(&mut self) -> Res<u8> {
        self.ws();
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Decline("unexpected end of line"))
    }

    #[inline]
    fn expect(&mut self, b: u8) -> Res<()> {
        if self.peek()? == b {
            self.pos += 1;
            Ok(())
        } else {
            Err(Decline("unexpected character"))
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Res<()> {
        if self.buf[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Decline("invalid literal"))
        }
    }

    /// After a value inside an object or array: `true` when another member follows
    /// (a comma was consumed), `false` at the closing byte `close` (consumed).
    #[inline]
    fn more(&mut self, close: u8) -> Res<bool> {
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Ok(true)
            }
            b if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Decline("expected ',' or a closing bracket")),
        }
    }

    /// A string (the opening quote is next). Returns the raw bytes when it has no escape,
    /// else `None` with the unescaped text in `scratch`. Always valid UTF-8.
    #[inline]
    fn string(&mut self, scratch: &mut Vec<u8>) -> Res<Option<&'a [u8]>> {
        self.expect(b'"')?;
        let start = self.pos;
        let buf = self.buf;
        let mut i = start;
        let mut escaped = false;
        loop {
            let Some(&b) = buf.get(i) else {
                return Err(Decline("unterminated string"));
            };
            if b == b'"' {
                break;
            }
            if b == b'\\' {
                escaped = true;
                i += 2;
                continue;
            }
            if b < 0x20 {
                return Err(Decline("control character in a string"));
            }
            i += 1;
        }
        let raw = buf.get(start..i).ok_or(Decline("unterminated string"))?;
        self.pos = i + 1;
        // Escapes are ASCII, so the raw text is valid UTF-8 iff the unescaped text is.
        if std::str::from_utf8(raw).is_err() {
            return Err(Decline("invalid UTF-8"));
        }
        if !escaped {
            return Ok(Some(raw));
        }
        scratch.clear();
        unescape(raw, scratch)?;
        Ok(None)
    }

    /// A number token, validated against JSON's grammar.
    fn number(&mut self) -> Res<Num<'a>> {
        self.ws();
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        if buf.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let s = *i;
            while buf.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        let first = i;
        let n = digits(&mut i);
        if n == 0 || (n > 1 && buf[first] == b'0') {
            return Err(Decline("invalid number"));
        }
        let mut integral = true;
        if buf.get(i) == Some(&b'.') {
            i += 1;
            integral = false;
            if digits(&mut i) == 0 {
                return Err(Decline("invalid number"));
            }
        }
        if matches!(buf.get(i), Some(b'e' | b'E')) {
            i += 1;
            integral = false;
            if matches!(buf.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(Decline("invalid number"));
            }
        }
        self.pos = i;
        Ok(Num {
            text: &buf[start..i],
            integral,
        })
    }

    /// Skip one value of any kind, checking it is valid JSON as Python reads it;
    /// `constants`: the tokens NaN, Infinity and -Infinity are accepted (else declined).
    fn skip(&mut self, scratch: &mut Vec<u8>, depth: usize, constants: bool) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(Decline("nesting too deep"));
        }
        match self.peek()? {
            b'"' => self.string(scratch).map(|_| ()),
            b'{' => {
                self.pos += 1;
                if self.peek()? == b'}' {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.string(scratch)?;
                    self.expect(b':')?;
                    self.skip(scratch, depth + 1, constants)?;
                    if !self.more(b'}')? {
                        return Ok(());
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                if self.peek()? == b']' {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip(scratch, depth + 1, constants)?;
                    if !self.more(b']')? {
                        return Ok(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'N' | b'I' if !constants => Err(Decline("NaN or Infinity in JSON text")),
            b'-' if !constants && self.buf.get(self.pos + 1) == Some(&b'I') => {
                Err(Decline("NaN or Infinity in JSON text"))
            }
            b'N' => self.literal(b"NaN"),
            b'I' => self.literal(b"Infinity"),
            b'-' if self.buf.get(self.pos + 1) == Some(&b'I') => self.literal(b"-Infinity"),
            _ => self.number().map(|_| ()),
        }
    }
}

fn hex4(raw: &[u8], at: usize) -> Res<u32> {
    let digits = raw.get(at..at + 4).ok_or(Decline("short \\u escape"))?;
    let mut v = 0u32;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Decline("bad \\u escape")),
        };
        v = v * 16 + u32::from(x);
    }
    Ok(v)
}

fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Res<()> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            let end = raw[i..]
                .iter()
                .position(|&c| c == b'\\')
                .map_or(raw.len(), |p| i + p);
            out.extend_from_slice(&raw[i..end]);
            i = end;
            continue;
        }
        let e = *raw.get(i + 1).ok_or(Decline("bad escape"))?;
        i += 2;
        let c = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex4(raw, i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&cp) {
                    // A high surrogate must be followed by an escaped low one.
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err(Decline("lone surrogate"));
                    }
                    let low = hex4(raw, i + 2)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(Decline("lone surrogate"));
                    }
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                } else if (0xDC00..0xE000).contains(&cp) {
                    return Err(Decline("lone surrogate"));
                }
                let ch = char::from_u32(cp).ok_or(Decline("bad code point"))?;
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                continue;
            }
            _ => return Err(Decline("bad escape")),
        };
        out.push(c);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Value conversions, each as decode.py's exact path (and its fast path) reads them.

/// An integer token's value, if it has one and fits an i128 (else the batch declines).
fn int_value(num: &Num<'_>) -> Res<i128> {
    if !num.integral {
        return Err(Decline("integer expected"));
    }
    let (neg, digits) = match num.text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, num.text),
    };
    if digits.len() > 38 {
        return Err(Decline("integer out of range"));
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + i128::from(d - b'0');
    }
    Ok(if neg { -v } else { v })
}

fn parse_f64(text: &[u8]) -> f64 {
    // SAFETY-free: a validated JSON number is ASCII and valid Rust float syntax.
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A float column's value: a number token or one of the NaN/Infinity tokens. The integer
/// `-0` declines: Python reads it as 0.0 on its exact path and -0.0 on Arrow's.
fn float_value<'a>(p: &mut Parser<'a>) -> Res<Option<&'a [u8]>> {
    let token = float_token(p)?;
    if token == Some(b"-0") {
        return Err(Decline("-0 as a float"));
    }
    Ok(token)
}

/// A number token or one of the NaN/Infinity tokens.
fn float_token<'a>(p: &mut Parser<'a>) -> Res<Option<&'a [u8]>> {
    Ok(match p.peek()? {
        b'N' => {
            p.literal(b"NaN")?;
            None
        }
        b'I' => {
            p.literal(b"Infinity")?;
            Some(b"inf")
        }
        b'-' if p.buf.get(p.pos + 1) == Some(&b'I') => {
            p.literal(b"-Infinity")?;
            Some(b"-inf")
        }
        b'-' | b'0'..=b'9' => Some(p.number()?.text),
        _ => return Err(Decline("number expected")),
    })
}

/// Whether `text` (from `float_token`) stands for the Infinity or -Infinity token.
fn is_infinity_token(text: &[u8]) -> bool {
    text == b"inf" || text == b"-inf"
}

/// A number read as infinity is beyond the double range (`1e400`): Python refuses it,
/// only the tokens Infinity and -Infinity stand for infinities.
fn finite_or_token(text: &[u8], v: f64) -> Res<f64> {
    if v.is_infinite() && !is_infinity_token(text) {
        return Err(Decline("number beyond the float64 range"));
    }
    Ok(v)
}

/// Whether the integer token lies in i64::MIN..=u64::MAX (orjson's range; beyond it the
/// Python decoder re-reads the line with `json`, and this decoder declines).
fn orjson_int(text: &[u8]) -> bool {
    let num = Num {
        text,
        integral: true,
    };
    int_value(&num).is_ok_and(|v| (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&v))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn two(s: &[u8], at: usize) -> Res<u32> {
    match s.get(at..at + 2) {
        Some([a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
            Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => Err(Decline("bad date/time digits")),
    }
}

/// `YYYY-MM-DD` (years 1-9999) as days since the epoch.
fn parse_date(s: &[u8]) -> Res<i64> {
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return Err(Decline("date expected"));
    }
    let y = two(s, 0)? * 100 + two(s, 2)?;
    let (m, d) = (two(s, 5)?, two(s, 8)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(Decline("bad month")),
    };
    if y == 0 || d == 0 || d > days_in {
        return Err(Decline("bad date"));
    }
    Ok(days_from_civil(i64::from(y), m, d))
}

/// `HH:MM:SS[.f...]` as (seconds of the day, nanoseconds truncated to 9 digits, digit count).
fn parse_time(s: &[u8]) -> Res<(i64, i64, usize, usize)> {
    if s.len() < 8 || s[2] != b':' || s[5] != b':' {
        return Err(Decline("time expected"));
    }
    let (h, m, sec) = (two(s, 0)?, two(s, 3)?, two(s, 6)?);
    if h > 23 || m > 59 || sec > 59 {
        return Err(Decline("time out of range"));
    }
    let mut at = 8;
    let mut nanos: i64 = 0;
    let mut count = 0;
    if s.get(8) == Some(&b'.') {
        at = 9;
        while let Some(&d) = s.get(at).filter(|d| d.is_ascii_digit()) {
            if count < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
            count += 1;
            at += 1;
        }
        if count == 0 {
            return Err(Decline("empty fraction"));
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    Ok((
        i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(sec),
        nanos,
        count,
        at,
    ))
}

const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_SECONDS: i64 = 253_402_300_800; // 10000-01-01T00:00:00Z

/// A date-time string as UTC (seconds since the epoch, nanoseconds); an offset is applied,
/// no offset means UTC. Only `YYYY-MM-DD[T ]HH:MM:SS[.f...][Z|+HH:MM|-HH:MM]`.
fn parse_timestamp(s: &[u8]) -> Res<(i64, i64)> {
    if s.len() < 19 || !(s[10] == b'T' || s[10] == b' ') {
        return Err(Decline("date-time expected"));
    }
    let days = parse_date(&s[..10])?;
    let (secs, nanos, _, used) = parse_time(&s[11..])?;
    let rest = &s[11 + used..];
    let offset = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(rest, 1)?, two(rest, 4)?);
            if h > 23 || m > 59 {
                return Err(Decline("bad offset"));
            }
            let o = i64::from(h) * 3600 + i64::from(m) * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(Decline("bad zone")),
    };
    let utc = days * 86_400 + secs - offset;
    if !(MIN_SECONDS..MAX_SECONDS).contains(&utc) {
        return Err(Decline("date-time out of range"));
    }
    Ok((utc, nanos))
}

fn b64_value(c: u8) -> Res<u32> {
    Ok(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return Err(Decline("not base64")),
    } as u32)
}

/// Standard, padded base64 with zero trailing bits (anything looser declines).
fn base64_decode(s: &[u8], out: &mut Vec<u8>) -> Res<()> {
    if s.len() % 4 != 0 {
        return Err(Decline("base64 length"));
    }
    out.clear();
    let quads = s.len() / 4;
    for (qi, q) in s.chunks_exact(4).enumerate() {
        let last = qi + 1 == quads;
        let pad = if last {
            q.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(Decline("base64 padding"));
        }
        let mut v = 0u32;
        for &c in &q[..4 - pad] {
            v = (v << 6) | b64_value(c)?;
        }
        match pad {
            0 => out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]),
            1 => {
                if v & 0x3 != 0 {
                    return Err(Decline("base64 trailing bits"));
                }
                let v = v >> 2;
                out.extend_from_slice(&[(v >> 8) as u8, v as u8]);
            }
            _ => {
                if v & 0xF != 0 {
                    return Err(Decline("base64 trailing bits"));
                }
                out.push((v >> 4) as u8);
            }
        }
    }
    Ok(())
}

/// The unscaled value of a decimal text at `scale`, if it fits `precision` digits
/// exactly: `-?digits[.digits][e[+-]digits]`.
fn decimal_digits(
    text: &[u8],
    precision: u8,
    scale: i8,
    float_token: bool,
) -> Res<(bool, Vec<u8>)> {
    let (neg, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(body.len() + 8);
    let mut frac = 0i64;
    let mut i = 0;
    let mut seen_int = false;
    while i < body.len() && body[i].is_ascii_digit() {
        digits.push(body[i] - b'0');
        seen_int = true;
        i += 1;
    }
    if !seen_int {
        return Err(Decline("decimal expected"));
    }
    if i < body.len() && body[i] == b'.' {
        i += 1;
        let s = i;
        while i < body.len() && body[i].is_ascii_digit() {
            digits.push(body[i] - b'0');
            i += 1;
        }
        if i == s {
            return Err(Decline("decimal expected"));
        }
        frac = (i - s) as i64;
    }
    let mut exp = 0i64;
    if i < body.len() && (body[i] == b'e' || body[i] == b'E') {
        i += 1;
        let eneg = match body.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let s = i;
        while i < body.len() && body[i].is_ascii_digit() {
            if i - s > 6 {
                return Err(Decline("decimal exponent too large"));
            }
            exp = exp * 10 + i64::from(body[i] - b'0');
            i += 1;
        }
        if i == s {
            return Err(Decline("decimal expected"));
        }
        if eneg {
            exp = -exp;
        }
    }
    if i != body.len() {
        return Err(Decline("decimal expected"));
    }
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    if float_token && (digits.len() > EXACT_FLOAT_DIGITS || !(-300..=300).contains(&(exp - frac))) {
        return Err(Decline("float token with too many digits for a decimal"));
    }
    // value = digits x 10^(exp - frac); unscaled = digits x 10^(exp - frac + scale)
    let shift = exp - frac + i64::from(scale);
    if shift < 0 {
        let drop = (-shift) as usize;
        let keep = digits.len().saturating_sub(drop);
        if digits[keep..].iter().any(|&d| d != 0) {
            return Err(Decline("decimal loses digits at this scale"));
        }
        digits.truncate(keep);
    } else if !digits.is_empty() {
        if shift as usize + digits.len() > usize::from(precision) {
            return Err(Decline("decimal exceeds its precision"));
        }
        digits.extend(std::iter::repeat_n(0, shift as usize));
    }
    if digits.len() > usize::from(precision) {
        return Err(Decline("decimal exceeds its precision"));
    }
    Ok((neg, digits))
}

// ---------------------------------------------------------------------------------------
// Columns: one builder per field, nested for structs and lists.

enum Col {
    Null(usize),
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder, bool),
    F64(Float64Builder),
    Str(StringBuilder),
    LargeStr(LargeStringBuilder),
    /// JSON text as written; `true`: `null` is the JSON value (an object member whose
    /// schema says `x-sql-null: omitted`), `false`: `null` is SQL NULL.
    Json(StringBuilder, bool),
    LargeJson(LargeStringBuilder, bool),
    Bin(BinaryBuilder),
    LargeBin(LargeBinaryBuilder),
    D128(Decimal128Builder, u8, i8),
    D256(Decimal256Builder, u8, i8),
    TsUs(TimestampMicrosecondBuilder),
    TsNs(TimestampNanosecondBuilder),
    Date32(Date32Builder),
    Time64Us(Time64MicrosecondBuilder),
    Struct(Box<StructCol>),
    List(Box<ListCol>),
}

struct StructCol {
    fields: Fields,
    children: Vec<Col>,
    index: HashMap<Vec<u8>, usize>,
    seen: Vec<u32>,
    stamp: u32,
    nulls: NullBufferBuilder,
    len: usize,
}

struct ListCol {
    field: FieldRef,
    item: Col,
    offsets: Vec<i64>,
    large: bool,
    nulls: NullBufferBuilder,
}

/// Everything a column needs while a line is parsed.
struct Scratch {
    text: Vec<u8>,
    out: Vec<u8>,
    /// `(start, end)` in the line of the keys met so far in the message's top level
    /// (a key given twice declines).
    keys: Vec<(usize, usize)>,
    /// The same for the undeclared properties of the record being parsed.
    row_keys: Vec<(usize, usize)>,
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

fn is_json_extension(field: &arrow_schema::Field) -> bool {
    field.metadata().get(EXTENSION_NAME).map(String::as_str) == Some(JSON_EXTENSION)
}

/// Whether a JSON-text field's SQL NULL is an omitted property (`x-sql-null: omitted`
/// in its metadata), so that a `null` in the record is the JSON value.
fn sql_null_omitted(field: &arrow_schema::Field) -> bool {
    field.metadata().get(SQL_NULL_KEY).map(String::as_str) == Some(SQL_NULL_OMITTED)
}

impl Col {
    /// `member`: the field is an object member (a list item's `null` is always SQL NULL).
    fn new(field: &arrow_schema::Field, f32_direct: bool, member: bool) -> Res<Col> {
        if let Some(name) = field.metadata().get(EXTENSION_NAME) {
            if name != JSON_EXTENSION {
                return Err(Decline("extension type"));
            }
        }
        let json = is_json_extension(field);
        let json_null = member && sql_null_omitted(field);
        Ok(match field.data_type() {
            DataType::Utf8 if json => Col::Json(StringBuilder::new(), json_null),
            DataType::LargeUtf8 if json => Col::LargeJson(LargeStringBuilder::new(), json_null),
            _ if json => return Err(Decline("JSON extension storage")),
            DataType::Null => Col::Null(0),
            DataType::Boolean => Col::Bool(BooleanBuilder::new()),
            DataType::Int8 => Col::I8(Int8Builder::new()),
            DataType::Int16 => Col::I16(Int16Builder::new()),
            DataType::Int32 => Col::I32(Int32Builder::new()),
            DataType::Int64 => Col::I64(Int64Builder::new()),
            DataType::UInt8 => Col::U8(UInt8Builder::new()),
            DataType::UInt16 => Col::U16(UInt16Builder::new()),
            DataType::UInt32 => Col::U32(UInt32Builder::new()),
            DataType::UInt64 => Col::U64(UInt64Builder::new()),
            DataType::Float32 => Col::F32(Float32Builder::new(), f32_direct),
            DataType::Float64 => Col::F64(Float64Builder::new()),
            DataType::Utf8 => Col::Str(StringBuilder::new()),
            DataType::LargeUtf8 => Col::LargeStr(LargeStringBuilder::new()),
            DataType::Binary => Col::Bin(BinaryBuilder::new()),
            DataType::LargeBinary => Col::LargeBin(LargeBinaryBuilder::new()),
            DataType::Decimal128(p, s) => Col::D128(
                Decimal128Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .map_err(|_| Decline("decimal type"))?,
                *p,
                *s,
            ),
            DataType::Decimal256(p, s) => Col::D256(
                Decimal256Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .map_err(|_| Decline("decimal type"))?,
                *p,
                *s,
            ),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Col::TsUs(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                Col::TsNs(TimestampNanosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Date32 => Col::Date32(Date32Builder::new()),
            DataType::Time64(TimeUnit::Microsecond) => {
                Col::Time64Us(Time64MicrosecondBuilder::new())
            }
            DataType::Struct(fields) => Col::Struct(Box::new(StructCol::new(fields, f32_direct)?)),
            DataType::List(item) | DataType::LargeList(item) => Col::List(Box::new(ListCol {
                field: item.clone(),
                item: Col::new(item, f32_direct, false)?,
                offsets: vec![0],
                large: matches!(field.data_type(), DataType::LargeList(_)),
                nulls: NullBufferBuilder::new(0),
            })),
            _ => return Err(Decline("unsupported Arrow type")),
        })
    }

    fn null(&mut self) {
        match self {
            Col::Null(n) => *n += 1,
            Col::Bool(b) => b.append_null(),
            Col::I8(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::U8(b) => b.append_null(),
            Col::U16(b) => b.append_null(),
            Col::U32(b) => b.append_null(),
            Col::U64(b) => b.append_null(),
            Col::F32(b, _) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Str(b) | Col::Json(b, _) => b.append_null(),
            Col::LargeStr(b) | Col::LargeJson(b, _) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::LargeBin(b) => b.append_null(),
            Col::D128(b, ..) => b.append_null(),
            Col::D256(b, ..) => b.append_null(),
            Col::TsUs(b) => b.append_null(),
            Col::TsNs(b) => b.append_null(),
            Col::Date32(b) => b.append_null(),
            Col::Time64Us(b) => b.append_null(),
            Col::Struct(s) => {
                for c in &mut s.children {
                    c.null();
                }
                s.nulls.append_null();
                s.len += 1;
            }
            Col::List(l) => {
                let last = *l.offsets.last().unwrap_or(&0);
                l.offsets.push(last);
                l.nulls.append_null();
            }
        }
    }

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

    fn finish(self) -> Res<ArrayRef> {
        Ok(match self {
            Col::Null(n) => Arc::new(NullArray::new(n)),
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::I8(mut b) => Arc::new(b.finish()),
            Col::I16(mut b) => Arc::new(b.finish()),
            Col::I32(mut b) => Arc::new(b.finish()),
            Col::I64(mut b) => Arc::new(b.finish()),
            Col::U8(mut b) => Arc::new(b.finish()),
            Col::U16(mut b) => Arc::new(b.finish()),
            Col::U32(mut b) => Arc::new(b.finish()),
            Col::U64(mut b) => Arc::new(b.finish()),
            Col::F32(mut b, _) => Arc::new(b.finish()),
            Col::F64(mut b) => Arc::new(b.finish()),
            Col::Str(mut b) | Col::Json(mut b, _) => Arc::new(b.finish()),
            Col::LargeStr(mut b) | Col::LargeJson(mut b, _) => Arc::new(b.finish()),
            Col::Bin(mut b) => Arc::new(b.finish()),
            Col::LargeBin(mut b) => Arc::new(b.finish()),
            Col::D128(mut b, ..) => Arc::new(b.finish()),
            Col::D256(mut b, ..) => Arc::new(b.finish()),
            Col::TsUs(mut b) => Arc::new(b.finish()),
            Col::TsNs(mut b) => Arc::new(b.finish()),
            Col::Date32(mut b) => Arc::new(b.finish()),
            Col::Time64Us(mut b) => Arc::new(b.finish()),
            Col::Struct(s) => {
                let s = *s;
                let mut nulls = s.nulls;
                let children = s
                    .children
                    .into_iter()
                    .map(|c| c.finish())
                    .collect::<Res<Vec<_>>>()?;
                let array = if s.fields.is_empty() {
                    StructArray::new_empty_fields(s.len, nulls.finish())
                } else {
                    StructArray::try_new(s.fields, children, nulls.finish())
                        .map_err(|_| Decline("struct rejected by Arrow"))?
                };
                Arc::new(array)
            }
            Col::List(l) => {
                let l = *l;
                let mut nulls = l.nulls;
                let values = l.item.finish()?;
                if l.large {
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(l.offsets));
                    Arc::new(
                        LargeListArray::try_new(l.field, offsets, values, nulls.finish())
                            .map_err(|_| Decline("list rejected by Arrow"))?,
                    )
                } else {
                    let narrow = l
                        .offsets
                        .iter()
                        .map(|&o| i32::try_from(o).map_err(|_| Decline("list over 2^31 items")))
                        .collect::<Res<Vec<i32>>>()?;
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(narrow));
                    Arc::new(
                        ListArray::try_new(l.field, offsets, values, nulls.finish())
                            .map_err(|_| Decline("list rejected by Arrow"))?,
                    )
                }
            }
        })
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
    fn new(fields: &Fields, f32_direct: bool) -> Res<StructCol> {
        let children = fields
            .iter()
            .map(|f| Col::new(f, f32_direct, true))
            .collect::<Res<Vec<_>>>()?;
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().as_bytes().to_vec(), i))
            .collect::<HashMap<_, _>>();
        if index.len() != fields.len() {
            return Err(Decline("repeated field name"));
        }
        Ok(StructCol {
            fields: fields.clone(),
            children,
            index,
            seen: vec![0; fields.len()],
            stamp: 0,
            nulls: NullBufferBuilder::new(0),
            len: 0,
        })
    }

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
                match found {
                    Some(i) => {
                        p.expect(b':')?;
                        if self.seen[i] == stamp {
                            return Err(Decline("property given twice"));
                        }
                        self.seen[i] = stamp;
                        filled += 1;
                        next = i + 1;
                        self.children[i].value(p, sc, depth)?;
                    }
                    None => {
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

// ---------------------------------------------------------------------------------------
// The decoder.

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

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
            .map(|c| c.finish())
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

/// One Singer message: an object whose `record` member is parsed into `top`; every other
/// member is skipped (and validated).
fn message(
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use arrow_schema::{Field, Schema};

    fn decoder(fields: Vec<Field>, keys: &[&str]) -> RecordDecoder {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
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

    #[test]
    fn base64_is_strict() {
        let mut out = Vec::new();
        base64_decode(b"aGVsbG8=", &mut out).unwrap();
        assert_eq!(out, b"hello");
        base64_decode(b"", &mut out).unwrap();
        assert!(out.is_empty());
        for bad in [
            &b"aGVsbG8"[..],
            b"aGVsbG9=",
            b"aG=sbG8=",
            b"a===",
            b"aGVs bG8=",
        ] {
            assert!(base64_decode(bad, &mut out).is_err());
        }
    }
}
