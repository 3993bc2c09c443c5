//! One encoder per column (or struct child, or list item), built up front from the
//! field and its array; an Arrow type this module does not write exactly as Python
//! declines the batch before any row is written.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait};
use arrow_buffer::i256;
use arrow_schema::{DataType, Field, TimeUnit};

use super::float::write_float;
use super::values::{
    push_digits, write_base64, write_date, write_decimal, write_json_string, write_time,
    write_timestamp,
};
use super::{Decline, Res};
use crate::singer::metadata::{self, Extension};

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
pub(super) struct Child<'a> {
    /// The array's validity (None: no nulls), read without a virtual call per value.
    nulls: Option<arrow_buffer::NullBuffer>,
    /// A JSON-text column with nulls: as an object member, its SQL NULL rows are left out.
    pub(super) omit_nulls: bool,
    enc: Enc<'a>,
}

impl<'a> Child<'a> {
    pub(super) fn new(field: &Field, array: &'a ArrayRef) -> Res<Self> {
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
    pub(super) fn omitted(&self, i: usize) -> bool {
        self.omit_nulls && self.nulls.as_ref().is_some_and(|n| n.is_null(i))
    }

    #[inline]
    pub(super) fn write(&self, i: usize, out: &mut Vec<u8>, scratch: &mut String) -> Res<()> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        self.enc.write(i, out, scratch)
    }
}

/// The values of a primitive column (null slots hold arbitrary values).
fn values<T: ArrowPrimitiveType>(array: &ArrayRef) -> &[T::Native] {
    array.as_primitive::<T>().values()
}

fn ints<T>(array: &ArrayRef) -> Enc<'_>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let values = values::<T>(array);
    Enc::Int(Box::new(move |i, out| {
        let v: i128 = values[i].into();
        if v < 0 {
            out.push(b'-');
        }
        // Every integer type fits u64 in absolute value.
        push_digits(out, v.unsigned_abs() as u64, 1);
    }))
}

fn strings<O: OffsetSizeTrait>(array: &ArrayRef) -> Bytes<'_> {
    let a = array.as_string::<O>();
    Box::new(move |i| a.value(i).as_bytes())
}

fn binaries<O: OffsetSizeTrait>(array: &ArrayRef) -> Bytes<'_> {
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
    match metadata::extension(field) {
        Extension::None => {}
        Extension::Other => return Err(Decline),
        Extension::Json => {
            return match array.data_type() {
                DataType::Utf8 => Ok(Enc::Json(strings::<i32>(array))),
                DataType::LargeUtf8 => Ok(Enc::Json(strings::<i64>(array))),
                _ => Err(Decline),
            };
        }
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
        DataType::Float32 => Enc::F32(values::<Float32Type>(array)),
        DataType::Float64 => Enc::F64(values::<Float64Type>(array)),
        DataType::Utf8 => Enc::Str(strings::<i32>(array)),
        DataType::LargeUtf8 => Enc::Str(strings::<i64>(array)),
        DataType::Binary => Enc::Bin(binaries::<i32>(array)),
        DataType::LargeBinary => Enc::Bin(binaries::<i64>(array)),
        // The guards make the scales non-negative.
        DataType::Decimal128(_, s) if *s >= 0 => {
            Enc::Dec128(values::<Decimal128Type>(array), s.unsigned_abs().into())
        }
        DataType::Decimal256(_, s) if *s >= 0 => {
            Enc::Dec256(values::<Decimal256Type>(array), s.unsigned_abs().into())
        }
        DataType::Timestamp(unit, tz) => {
            let values = match unit {
                TimeUnit::Second => values::<TimestampSecondType>(array),
                TimeUnit::Millisecond => values::<TimestampMillisecondType>(array),
                TimeUnit::Microsecond => values::<TimestampMicrosecondType>(array),
                TimeUnit::Nanosecond => values::<TimestampNanosecondType>(array),
            };
            Enc::Timestamp(values, per_second(*unit), tz.is_some())
        }
        DataType::Date32 => Enc::Date32(values::<Date32Type>(array)),
        DataType::Date64 => Enc::Date64(values::<Date64Type>(array)),
        DataType::Time32(unit) => {
            let values = match unit {
                TimeUnit::Second => values::<Time32SecondType>(array),
                TimeUnit::Millisecond => values::<Time32MillisecondType>(array),
                _ => return Err(Decline),
            };
            Enc::Time32(values, per_second(*unit))
        }
        DataType::Time64(unit) => {
            let values = match unit {
                TimeUnit::Microsecond => values::<Time64MicrosecondType>(array),
                TimeUnit::Nanosecond => values::<Time64NanosecondType>(array),
                _ => return Err(Decline),
            };
            Enc::Time64(values, per_second(*unit))
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

fn per_second(unit: TimeUnit) -> i64 {
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
            Enc::F32(v) => write_float(out, v[i]),
            Enc::F64(v) => write_float(out, v[i]),
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
