//! Singer RECORD encoding of an Arrow record batch, byte for byte what
//! `dativo_bridge/codecs/encode.py` writes (conventions in docs/singer-codecs.md).
//!
//! Every supported column gets an encoder up front; rows are then written one after the
//! other into one buffer. A SQL NULL in a JSON-text column (top level or struct child)
//! leaves its property out of the object (`null` is JSON's null, the text `null`). An Arrow type (or a value, e.g. a date outside years 1-9999)
//! this module cannot write exactly as the Python path does makes the whole batch
//! decline (`Err(Decline)`), and the caller falls back to Python.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, StructArray};
use arrow_buffer::i256;
use arrow_schema::{DataType, Field, TimeUnit};

/// The batch holds something this module does not write exactly like Python.
#[derive(Debug, PartialEq, Eq)]
pub struct Decline;

type Res<T> = Result<T, Decline>;

const EXTENSION_NAME: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";

/// Append `s` as a JSON string, escaped as orjson does (short escapes for `\b \t \n \f
/// \r " \\`, `\u00XX` for other control characters, everything else raw UTF-8).
pub fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Arrow's float-to-string text (double-conversion shortest, exponent outside
/// 1e-6..<1e10, `e+N`/`e-N`) plus the Singer tokens for NaN, infinities and -0.0.
/// `text` is any exact decimal text of the shortest round-trip digits (zmij's output,
/// `1.25e-7`, `100.0`, `0.0001`): only its digits and exponent are used.
fn write_float_text(out: &mut Vec<u8>, text: &str) {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest.as_bytes()),
        None => (false, text.as_bytes()),
    };
    let (mantissa, mut exp) = match body.iter().position(|&c| c == b'e' || c == b'E') {
        Some(at) => {
            let e = std::str::from_utf8(&body[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .unwrap_or(0);
            (&body[..at], e)
        }
        None => (body, 0),
    };
    // Significant digits of the mantissa, and the exponent of its first one.
    let point = mantissa
        .iter()
        .position(|&c| c == b'.')
        .unwrap_or(mantissa.len());
    let mut buf = [0u8; 40];
    let mut n = 0;
    let mut first: Option<i32> = None;
    for (k, &c) in mantissa.iter().enumerate() {
        if c == b'.' {
            continue;
        }
        if first.is_none() {
            if c == b'0' {
                continue;
            }
            // Position of this digit relative to the point: 10^(point - k - 1), or one
            // less for digits after the point.
            let place = point as i32 - k as i32 - 1 + i32::from(k > point);
            first = Some(place);
        }
        if n < buf.len() {
            buf[n] = c;
            n += 1;
        }
    }
    while n > 1 && buf[n - 1] == b'0' {
        n -= 1;
    }
    if negative {
        out.push(b'-');
    }
    let Some(place) = first else {
        // Zero: Arrow writes "0" / "-0"; Python turns "-0" into "-0.0".
        out.extend_from_slice(if negative { b"0.0" } else { b"0" });
        return;
    };
    exp += place;
    let d = &buf[..n];
    if (-6..10).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if d.len() <= int_len {
                out.extend_from_slice(d);
                out.resize(out.len() + int_len - d.len(), b'0');
            } else {
                out.extend_from_slice(&d[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&d[int_len..]);
            }
        } else {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-exp - 1) as usize, b'0');
            out.extend_from_slice(d);
        }
    } else {
        out.push(d[0]);
        if d.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        out.push(b'e');
        out.push(if exp >= 0 { b'+' } else { b'-' });
        push_digits(out, exp.unsigned_abs().into(), 1);
    }
}

/// A float value as Singer text (see `write_float_text`).
pub fn write_float<F: zmij::Float + Into<f64>>(out: &mut Vec<u8>, v: F, is_nan: bool, inf: i8) {
    if is_nan {
        out.extend_from_slice(b"NaN");
    } else if inf > 0 {
        out.extend_from_slice(b"Infinity");
    } else if inf < 0 {
        out.extend_from_slice(b"-Infinity");
    } else {
        let mut buffer = zmij::Buffer::new();
        let text = buffer.format_finite(v);
        let magnitude = v.into().abs();
        if (1e-5..1e10).contains(&magnitude) && !text.contains('e') {
            // zmij's plain text is already Arrow's, but for the ".0" of whole values.
            let text = text.strip_suffix(".0").unwrap_or(text);
            out.extend_from_slice(text.as_bytes());
        } else {
            write_float_text(out, text);
        }
    }
}

/// An unscaled decimal (its decimal digits, `-` first if negative) with `scale` fraction
/// digits, plain notation, quoted.
pub fn write_decimal(out: &mut Vec<u8>, unscaled: &str, scale: usize) {
    let (negative, digits) = match unscaled.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, unscaled),
    };
    out.push(b'"');
    if negative {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits.as_bytes());
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits.as_bytes());
    }
    out.push(b'"');
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_digits(out: &mut Vec<u8>, v: u64, width: usize) {
    if width <= 1 {
        // Shortest form: itoa's two-digits-at-a-time table.
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        return;
    }
    let mut buf = [b'0'; 20];
    let mut n = v;
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = buf.len().saturating_sub(width).min(i);
    out.extend_from_slice(&buf[start..]);
}

/// Two ASCII digits of `v` (< 100).
#[inline]
fn two_digits(v: u32) -> [u8; 2] {
    [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
}

/// Entries of the per-thread cache of formatted dates (direct-mapped by day number).
const DATE_CACHE: usize = 512;

thread_local! {
    /// Recently formatted dates: timestamp columns repeat a day for many rows.
    static DATES: std::cell::RefCell<Vec<(i64, [u8; 10])>> =
        std::cell::RefCell::new(vec![(i64::MIN, [0; 10]); DATE_CACHE]);
}

/// `YYYY-MM-DD` of a day count; years outside 1..=9999 decline.
pub fn write_date(out: &mut Vec<u8>, days: i64) -> Res<()> {
    let slot = days.rem_euclid(DATE_CACHE as i64) as usize;
    let cached = DATES.with(|c| {
        let entry = c.borrow()[slot];
        (entry.0 == days).then_some(entry.1)
    });
    let text = match cached {
        Some(text) => text,
        None => {
            let text = format_date(days)?;
            DATES.with(|c| c.borrow_mut()[slot] = (days, text));
            text
        }
    };
    out.extend_from_slice(&text);
    Ok(())
}

fn format_date(days: i64) -> Res<[u8; 10]> {
    let (y, m, d) = civil_from_days(days);
    if !(1..=9999).contains(&y) {
        return Err(Decline);
    }
    let y = y as u32;
    let [a, b] = two_digits(y / 100);
    let [c, e] = two_digits(y % 100);
    let [m1, m2] = two_digits(m);
    let [d1, d2] = two_digits(d);
    Ok([a, b, c, e, b'-', m1, m2, b'-', d1, d2])
}

/// `HH:MM:SS[.fraction]` of a time of day in ticks of `per_second` (1, 1e3, 1e6, 1e9).
pub fn write_time(out: &mut Vec<u8>, ticks: i64, per_second: i64) -> Res<()> {
    if ticks < 0 || ticks >= 86_400 * per_second {
        return Err(Decline);
    }
    let secs = (ticks / per_second) as u32;
    let [h1, h2] = two_digits(secs / 3600);
    let [m1, m2] = two_digits(secs / 60 % 60);
    let [s1, s2] = two_digits(secs % 60);
    out.extend_from_slice(&[h1, h2, b':', m1, m2, b':', s1, s2]);
    let width = match per_second {
        1 => 0,
        1_000 => 3,
        1_000_000 => 6,
        _ => 9,
    };
    if width > 0 {
        out.push(b'.');
        push_digits(out, (ticks % per_second) as u64, width);
    }
    Ok(())
}

/// A quoted timestamp: date `T` time of day, `+00:00` when the column has a zone.
pub fn write_timestamp(out: &mut Vec<u8>, ticks: i64, per_second: i64, zoned: bool) -> Res<()> {
    let per_day = 86_400 * per_second;
    out.push(b'"');
    write_date(out, ticks.div_euclid(per_day))?;
    out.push(b'T');
    write_time(out, ticks.rem_euclid(per_day), per_second)?;
    if zoned {
        out.extend_from_slice(b"+00:00");
    }
    out.push(b'"');
    Ok(())
}

/// Standard base64 with padding, quoted.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63]);
        out.push(TABLE[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63]
        } else {
            b'='
        });
    }
    out.push(b'"');
}

/// Writes the text of value `i` of an integer column.
type IntWriter<'a> = Box<dyn Fn(usize, &mut Vec<u8>) + Send + Sync + 'a>;
/// The bytes of value `i` of a string or binary column.
type Bytes<'a> = Box<dyn Fn(usize) -> &'a [u8] + Send + Sync + 'a>;

/// A column (or child) encoder: writes the JSON text of value `i`, which is not null.
enum Enc<'a> {
    Null,
    Bool(&'a arrow_array::BooleanArray),
    Int(IntWriter<'a>),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Str(Bytes<'a>),
    Json(Bytes<'a>),
    Bin(Bytes<'a>),
    Dec128(&'a [i128], usize),
    Dec256(&'a [i256], usize),
    Timestamp(&'a [i64], i64, bool),
    Date32(&'a [i32]),
    Date64(&'a [i64]),
    Time32(&'a [i32], i64),
    Time64(&'a [i64], i64),
    /// Each child with its `"name":` key.
    Struct(Vec<(Vec<u8>, Child<'a>)>),
    List(Vec<usize>, Box<Child<'a>>),
}

/// An encoder with the array it reads (for its null mask).
struct Child<'a> {
    /// The array's validity (None: no nulls), read without a virtual call per value.
    nulls: Option<arrow_buffer::NullBuffer>,
    /// A JSON-text column with nulls: as an object member, its SQL NULL rows are left out.
    omit_nulls: bool,
    enc: Enc<'a>,
}

impl<'a> Child<'a> {
    fn new(field: &Field, array: &'a ArrayRef) -> Res<Self> {
        let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
        let enc = build(field, array)?;
        Ok(Child {
            omit_nulls: nulls.is_some() && matches!(enc, Enc::Json(_)),
            nulls,
            enc,
        })
    }

    /// Whether, as an object member, value `i` is left out (a SQL NULL of JSON text).
    #[inline]
    fn omitted(&self, i: usize) -> bool {
        self.omit_nulls && self.nulls.as_ref().is_some_and(|n| n.is_null(i))
    }

    #[inline]
    fn write(&self, i: usize, out: &mut Vec<u8>, scratch: &mut String) -> Res<()> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        self.enc.write(i, out, scratch)
    }
}

fn ints<'a, T>(array: &'a ArrayRef) -> Enc<'a>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let values = array.as_primitive::<T>().values();
    Enc::Int(Box::new(move |i, out| {
        let v: i128 = values[i].into();
        if v < 0 {
            out.push(b'-');
        }
        // Every integer type fits u64 in absolute value.
        push_digits(out, v.unsigned_abs() as u64, 1);
    }))
}

fn strings<'a, O: OffsetSizeTrait>(array: &'a ArrayRef) -> Bytes<'a> {
    let a = array.as_string::<O>();
    Box::new(move |i| a.value(i).as_bytes())
}

fn binaries<'a, O: OffsetSizeTrait>(array: &'a ArrayRef) -> Bytes<'a> {
    let a = array.as_binary::<O>();
    Box::new(move |i| a.value(i))
}

fn list_child<'a, O: OffsetSizeTrait>(
    field: &Field,
    array: &'a ArrayRef,
) -> Res<(Vec<usize>, Child<'a>)> {
    let a = array.as_list::<O>();
    let offsets = a.value_offsets().iter().map(|o| o.as_usize()).collect();
    Ok((offsets, Child::new(field, a.values())?))
}

fn build<'a>(field: &Field, array: &'a ArrayRef) -> Res<Enc<'a>> {
    let extension = field.metadata().get(EXTENSION_NAME).map(String::as_str);
    if let Some(name) = extension {
        if name != JSON_EXTENSION {
            return Err(Decline);
        }
        return match array.data_type() {
            DataType::Utf8 => Ok(Enc::Json(strings::<i32>(array))),
            DataType::LargeUtf8 => Ok(Enc::Json(strings::<i64>(array))),
            _ => Err(Decline),
        };
    }
    Ok(match array.data_type() {
        DataType::Null => Enc::Null,
        DataType::Boolean => Enc::Bool(array.as_boolean()),
        DataType::Int8 => ints::<Int8Type>(array),
        DataType::Int16 => ints::<Int16Type>(array),
        DataType::Int32 => ints::<Int32Type>(array),
        DataType::Int64 => ints::<Int64Type>(array),
        DataType::UInt8 => ints::<UInt8Type>(array),
        DataType::UInt16 => ints::<UInt16Type>(array),
        DataType::UInt32 => ints::<UInt32Type>(array),
        DataType::UInt64 => ints::<UInt64Type>(array),
        DataType::Float32 => Enc::F32(array.as_primitive::<Float32Type>().values()),
        DataType::Float64 => Enc::F64(array.as_primitive::<Float64Type>().values()),
        DataType::Utf8 => Enc::Str(strings::<i32>(array)),
        DataType::LargeUtf8 => Enc::Str(strings::<i64>(array)),
        DataType::Binary => Enc::Bin(binaries::<i32>(array)),
        DataType::LargeBinary => Enc::Bin(binaries::<i64>(array)),
        DataType::Decimal128(_, s) if *s >= 0 => Enc::Dec128(
            array
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .values(),
            *s as usize,
        ),
        DataType::Decimal256(_, s) if *s >= 0 => Enc::Dec256(
            array
                .as_primitive::<arrow_array::types::Decimal256Type>()
                .values(),
            *s as usize,
        ),
        DataType::Timestamp(unit, tz) => {
            let values = match unit {
                TimeUnit::Second => array
                    .as_primitive::<arrow_array::types::TimestampSecondType>()
                    .values(),
                TimeUnit::Millisecond => array
                    .as_primitive::<arrow_array::types::TimestampMillisecondType>()
                    .values(),
                TimeUnit::Microsecond => array
                    .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                    .values(),
                TimeUnit::Nanosecond => array
                    .as_primitive::<arrow_array::types::TimestampNanosecondType>()
                    .values(),
            };
            Enc::Timestamp(values, per_second(unit), tz.is_some())
        }
        DataType::Date32 => Enc::Date32(
            array
                .as_primitive::<arrow_array::types::Date32Type>()
                .values(),
        ),
        DataType::Date64 => Enc::Date64(
            array
                .as_primitive::<arrow_array::types::Date64Type>()
                .values(),
        ),
        DataType::Time32(unit) => {
            let values = match unit {
                TimeUnit::Second => array
                    .as_primitive::<arrow_array::types::Time32SecondType>()
                    .values(),
                TimeUnit::Millisecond => array
                    .as_primitive::<arrow_array::types::Time32MillisecondType>()
                    .values(),
                _ => return Err(Decline),
            };
            Enc::Time32(values, per_second(unit))
        }
        DataType::Time64(unit) => {
            let values = match unit {
                TimeUnit::Microsecond => array
                    .as_primitive::<arrow_array::types::Time64MicrosecondType>()
                    .values(),
                TimeUnit::Nanosecond => array
                    .as_primitive::<arrow_array::types::Time64NanosecondType>()
                    .values(),
                _ => return Err(Decline),
            };
            Enc::Time64(values, per_second(unit))
        }
        DataType::Struct(fields) => {
            let a = array.as_struct();
            let mut children = Vec::with_capacity(fields.len());
            for (f, child) in fields.iter().zip(a.columns()) {
                let mut key = Vec::new();
                write_json_string(&mut key, f.name().as_bytes());
                key.push(b':');
                children.push((key, Child::new(f, child)?));
            }
            Enc::Struct(children)
        }
        DataType::List(f) => {
            let (offsets, child) = list_child::<i32>(f, array)?;
            Enc::List(offsets, Box::new(child))
        }
        DataType::LargeList(f) => {
            let (offsets, child) = list_child::<i64>(f, array)?;
            Enc::List(offsets, Box::new(child))
        }
        DataType::FixedSizeList(f, size) => {
            let a = array.as_fixed_size_list();
            let size = usize::try_from(*size).map_err(|_| Decline)?;
            // `values()` of a sliced FixedSizeList is sliced too: rows start at i * size.
            let offsets = (0..=a.len()).map(|i| i * size).collect();
            Enc::List(offsets, Box::new(Child::new(f, a.values())?))
        }
        _ => return Err(Decline),
    })
}

fn per_second(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

impl Enc<'_> {
    fn write(&self, i: usize, out: &mut Vec<u8>, scratch: &mut String) -> Res<()> {
        match self {
            Enc::Null => out.extend_from_slice(b"null"),
            Enc::Bool(a) => out.extend_from_slice(if a.value(i) { b"true" } else { b"false" }),
            Enc::Int(f) => f(i, out),
            Enc::F32(v) => {
                let x = v[i];
                let inf = if x.is_infinite() {
                    if x > 0.0 {
                        1
                    } else {
                        -1
                    }
                } else {
                    0
                };
                write_float(out, x, x.is_nan(), inf);
            }
            Enc::F64(v) => {
                let x = v[i];
                let inf = if x.is_infinite() {
                    if x > 0.0 {
                        1
                    } else {
                        -1
                    }
                } else {
                    0
                };
                write_float(out, x, x.is_nan(), inf);
            }
            Enc::Str(f) => write_json_string(out, f(i)),
            Enc::Json(f) => {
                for &b in f(i) {
                    out.push(if b == b'\n' || b == b'\r' { b' ' } else { b });
                }
            }
            Enc::Bin(f) => write_base64(out, f(i)),
            Enc::Dec128(v, s) => {
                write_decimal(out, itoa::Buffer::new().format(v[i]), *s);
            }
            Enc::Dec256(v, s) => {
                scratch.clear();
                let _ = write!(scratch, "{}", v[i]);
                write_decimal(out, scratch, *s);
            }
            Enc::Timestamp(v, per, zoned) => write_timestamp(out, v[i], *per, *zoned)?,
            Enc::Date32(v) => {
                out.push(b'"');
                write_date(out, i64::from(v[i]))?;
                out.push(b'"');
            }
            Enc::Date64(v) => {
                let ms = v[i];
                if ms % 86_400_000 != 0 {
                    return Err(Decline);
                }
                out.push(b'"');
                write_date(out, ms / 86_400_000)?;
                out.push(b'"');
            }
            Enc::Time32(v, per) => {
                out.push(b'"');
                write_time(out, i64::from(v[i]), *per)?;
                out.push(b'"');
            }
            Enc::Time64(v, per) => {
                out.push(b'"');
                write_time(out, v[i], *per)?;
                out.push(b'"');
            }
            Enc::Struct(children) => {
                out.push(b'{');
                let mut first = true;
                for (key, child) in children {
                    if child.omitted(i) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(key);
                    child.write(i, out, scratch)?;
                }
                out.push(b'}');
            }
            Enc::List(offsets, child) => {
                out.push(b'[');
                for (k, j) in (offsets[i]..offsets[i + 1]).enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    child.write(j, out, scratch)?;
                }
                out.push(b']');
            }
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn float(v: f64) -> String {
        let mut out = Vec::new();
        let inf = if v.is_infinite() {
            if v > 0.0 {
                1
            } else {
                -1
            }
        } else {
            0
        };
        write_float(&mut out, v, v.is_nan(), inf);
        String::from_utf8(out).unwrap()
    }

    fn float32(v: f32) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v, false, 0);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_as_arrow_writes_them() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1e9, "-1000000000"),
            (9999999999.0, "9999999999"),
            (0.0001, "0.0001"),
            (1e-5, "0.00001"),
            (-1.5e-5, "-0.000015"),
            (12345.67, "12345.67"),
            (0.5, "0.5"),
            (100.0, "100"),
            (1e9, "1000000000"),
            (1234567890.0, "1234567890"),
            (1e10, "1e+10"),
            (12345678901.0, "1.2345678901e+10"),
            (1e20, "1e+20"),
            (1e-6, "0.000001"),
            (1.25e-6, "0.00000125"),
            (1e-7, "1e-7"),
            (9.99e-7, "9.99e-7"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.5, "-1.5"),
            (0.0, "0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(float(*v), *want, "{v:e}");
        }
        assert_eq!(float32(0.1), "0.1");
        assert_eq!(float32(123456789.0), "123456790");
        assert_eq!(float32(1234567890123.0), "1.234568e+12");
    }

    #[test]
    fn decimals_have_exactly_scale_digits() {
        let cases = [
            ("1234567", 2, "\"12345.67\""),
            ("-1", 2, "\"-0.01\""),
            ("-1", 8, "\"-0.00000001\""),
            ("0", 3, "\"0.000\""),
            ("42", 0, "\"42\""),
            ("-100", 2, "\"-1.00\""),
        ];
        for (unscaled, scale, want) in cases {
            let mut out = Vec::new();
            write_decimal(&mut out, unscaled, scale);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn timestamps_dates_and_times() {
        let ts = |t: i64, per: i64, zoned: bool| {
            let mut out = Vec::new();
            write_timestamp(&mut out, t, per, zoned).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            ts(1, 1_000_000, true),
            "\"1970-01-01T00:00:00.000001+00:00\""
        );
        assert_eq!(ts(-1, 1, false), "\"1969-12-31T23:59:59\"");
        assert_eq!(
            ts(1_709_208_000_123, 1_000, false),
            "\"2024-02-29T12:00:00.123\""
        );
        assert_eq!(
            ts(5, 1_000_000_000, false),
            "\"1970-01-01T00:00:00.000000005\""
        );
        let mut out = Vec::new();
        assert_eq!(write_date(&mut out, -719_162), Ok(()));
        assert_eq!(out, b"0001-01-01");
        assert_eq!(write_date(&mut Vec::new(), -719_163), Err(Decline));
        assert_eq!(write_time(&mut Vec::new(), 86_400, 1), Err(Decline));
    }

    #[test]
    fn strings_and_base64() {
        let mut out = Vec::new();
        write_json_string(
            &mut out,
            "a\"\\\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é".as_bytes(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}é\""
        );
        let mut out = Vec::new();
        write_base64(&mut out, b"hi");
        write_base64(&mut out, b"\x00\xff");
        write_base64(&mut out, b"abc");
        assert_eq!(out, b"\"aGk=\"\"AP8=\"\"YWJj\"");
    }
}
