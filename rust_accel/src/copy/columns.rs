//! One typed Arrow builder per column, chosen once from the column's wire type and Arrow
//! type; each binary COPY field is decoded straight into it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_buffer::{i256, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, FieldRef, Fields, TimeUnit};

use super::array::{ArrayError, ArrayValue};
use super::errors::DecodeError;
use super::numeric::{DecimalInt, NotDecimal, Numeric};
use super::{temporal, text, wire};

/// The binary wire format of a column (or of an array's elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Bool,
    /// text, varchar, bpchar, name, enum labels, json, and any value cast to text.
    Text,
    Jsonb,
    Uuid,
    Bytea,
    Date,
    Timestamp,
    Time,
    Interval,
    Numeric,
}

impl Wire {
    /// The decoder names accepted from Python (`"int4"`, or `"int4[]"` for arrays).
    pub const NAMES: [(&'static str, Wire); 17] = [
        ("int2", Wire::Int2),
        ("int4", Wire::Int4),
        ("int8", Wire::Int8),
        ("oid", Wire::Oid),
        ("float4", Wire::Float4),
        ("float8", Wire::Float8),
        ("bool", Wire::Bool),
        ("text", Wire::Text),
        ("json", Wire::Text),
        ("jsonb", Wire::Jsonb),
        ("uuid", Wire::Uuid),
        ("bytea", Wire::Bytea),
        ("date", Wire::Date),
        ("timestamp", Wire::Timestamp),
        ("time", Wire::Time),
        ("interval", Wire::Interval),
        ("numeric", Wire::Numeric),
    ];

    pub fn parse(name: &str) -> Option<Wire> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| *w)
    }

    /// The decoder name of this wire type.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, w)| *w == self)
            .map_or("?", |(n, _)| n)
    }

    /// Element type OIDs an array of this wire type may carry (a guard against a
    /// decoder that does not match the column).
    fn accepts_oid(self, oid: u32) -> bool {
        match self {
            Wire::Int2 => oid == 21,
            Wire::Int4 => oid == 23,
            Wire::Int8 => oid == 20,
            Wire::Oid => oid == 26,
            Wire::Float4 => oid == 700,
            Wire::Float8 => oid == 701,
            Wire::Bool => oid == 16,
            // text, bpchar, varchar, name, json
            Wire::Text => matches!(oid, 25 | 1042 | 1043 | 19 | 114),
            Wire::Jsonb => oid == 3802,
            Wire::Uuid => oid == 2950,
            Wire::Bytea => oid == 17,
            Wire::Date => oid == 1082,
            Wire::Timestamp => matches!(oid, 1114 | 1184),
            Wire::Time => oid == 1083,
            Wire::Interval => oid == 1186,
            Wire::Numeric => oid == 1700,
        }
    }
}

/// A decoder name as Python passes it: the wire type, and whether it is an array.
pub fn parse_decoder(name: &str) -> Option<(Wire, bool)> {
    match name.strip_suffix("[]") {
        Some(element) => Wire::parse(element).map(|w| (w, true)),
        None => Wire::parse(name).map(|w| (w, false)),
    }
}

/// A short Arrow type name for messages, in pyarrow's spelling.
pub fn arrow_name(dt: &DataType) -> String {
    match dt {
        DataType::Decimal128(p, s) => format!("decimal128({p}, {s})"),
        DataType::Decimal256(p, s) => format!("decimal256({p}, {s})"),
        DataType::List(f) => format!("list<{}>", arrow_name(f.data_type())),
        DataType::Utf8 => "string".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date32".into(),
        other => other.to_string(),
    }
}

pub struct DecimalColumn<T: DecimalInt> {
    limit: T,
    scale: i8,
    name: String,
}

impl<T: DecimalInt> DecimalColumn<T> {
    fn new(precision: u8, scale: i8, name: String) -> Result<Self, String> {
        let limit = T::pow10(u32::from(precision)).ok_or("decimal precision too large")?;
        Ok(DecimalColumn { limit, scale, name })
    }

    #[inline]
    fn decode(&self, v: &[u8]) -> Result<T, DecodeError> {
        let value = Numeric::parse(v)?;
        value.to_scaled(self.scale, self.limit).map_err(|why| {
            DecodeError::new(match why {
                NotDecimal::NaN => format!("NaN cannot be stored in {}", self.name),
                NotDecimal::Infinite => {
                    format!("an infinite numeric cannot be stored in {}", self.name)
                }
                NotDecimal::Overflow => format!("a numeric value does not fit {}", self.name),
                NotDecimal::Inexact => {
                    format!(
                        "a numeric value has more decimal places than {} keeps",
                        self.name
                    )
                }
            })
        })
    }
}

pub struct IntervalColumn {
    fields: Fields,
    months: Int32Builder,
    days: Int32Builder,
    microseconds: Int64Builder,
    nulls: NullBufferBuilder,
}

pub struct ListColumn {
    field: FieldRef,
    element: Wire,
    values: Column,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

/// The builder of one column.
pub enum Column {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Oid(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    NumericText(StringBuilder, String),
    Decimal128(Decimal128Builder, DecimalColumn<i128>),
    Decimal256(Decimal256Builder, DecimalColumn<i256>),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Interval(Box<IntervalColumn>),
    List(Box<ListColumn>),
}

impl Column {
    /// The builder for `wire` values (arrays of them if `array`) as Arrow type `dt`.
    pub fn new(wire: Wire, array: bool, dt: &DataType) -> Result<Column, String> {
        if array {
            let DataType::List(field) = dt else {
                return Err(format!(
                    "an array decoder needs a list type, not {}",
                    arrow_name(dt)
                ));
            };
            let values = Column::new(wire, false, field.data_type())?;
            return Ok(Column::List(Box::new(ListColumn {
                field: field.clone(),
                element: wire,
                values,
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
            })));
        }
        let column = match (wire, dt) {
            (Wire::Int2, DataType::Int16) => Column::Int16(Int16Builder::new()),
            (Wire::Int4, DataType::Int32) => Column::Int32(Int32Builder::new()),
            (Wire::Int8, DataType::Int64) => Column::Int64(Int64Builder::new()),
            (Wire::Oid, DataType::Int64) => Column::Oid(Int64Builder::new()),
            (Wire::Float4, DataType::Float32) => Column::Float32(Float32Builder::new()),
            (Wire::Float8, DataType::Float64) => Column::Float64(Float64Builder::new()),
            (Wire::Bool, DataType::Boolean) => Column::Bool(BooleanBuilder::new()),
            (Wire::Text, DataType::Utf8) => Column::Text(StringBuilder::new()),
            (Wire::Jsonb, DataType::Utf8) => Column::Jsonb(StringBuilder::new()),
            (Wire::Uuid, DataType::Utf8) => Column::Uuid(StringBuilder::new()),
            (Wire::Numeric, DataType::Utf8) => {
                Column::NumericText(StringBuilder::new(), String::new())
            }
            (Wire::Numeric, DataType::Decimal128(p, s)) => Column::Decimal128(
                Decimal128Builder::new().with_data_type(dt.clone()),
                DecimalColumn::new(*p, *s, arrow_name(dt))?,
            ),
            (Wire::Numeric, DataType::Decimal256(p, s)) => Column::Decimal256(
                Decimal256Builder::new().with_data_type(dt.clone()),
                DecimalColumn::new(*p, *s, arrow_name(dt))?,
            ),
            (Wire::Bytea, DataType::Binary) => Column::Bytea(BinaryBuilder::new()),
            (Wire::Date, DataType::Date32) => Column::Date(Date32Builder::new()),
            (Wire::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_data_type(dt.clone()))
            }
            (Wire::Time, DataType::Time64(TimeUnit::Microsecond)) => {
                Column::Time(Time64MicrosecondBuilder::new())
            }
            (Wire::Interval, DataType::Struct(fields))
                if fields.len() == 3
                    && fields[0].data_type() == &DataType::Int32
                    && fields[1].data_type() == &DataType::Int32
                    && fields[2].data_type() == &DataType::Int64 =>
            {
                Column::Interval(Box::new(IntervalColumn {
                    fields: fields.clone(),
                    months: Int32Builder::new(),
                    days: Int32Builder::new(),
                    microseconds: Int64Builder::new(),
                    nulls: NullBufferBuilder::new(0),
                }))
            }
            _ => {
                return Err(format!(
                    "cannot decode PostgreSQL {} values into Arrow {}",
                    wire.name(),
                    arrow_name(dt)
                ))
            }
        };
        Ok(column)
    }

    /// Decode one field (`None` = NULL) and append it.
    #[inline]
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), DecodeError> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Column::Int16(b) => b.append_value(wire::int2(v, "int2")?),
            Column::Int32(b) => b.append_value(wire::int4(v, "int4")?),
            Column::Int64(b) => b.append_value(wire::int8(v, "int8")?),
            Column::Oid(b) => b.append_value(i64::from(wire::int4(v, "oid")? as u32)),
            Column::Float32(b) => {
                b.append_value(f32::from_bits(wire::int4(v, "float4")? as u32));
            }
            Column::Float64(b) => {
                b.append_value(f64::from_bits(wire::int8(v, "float8")? as u64));
            }
            Column::Bool(b) => match v {
                [flag] => b.append_value(*flag != 0),
                _ => return Err(DecodeError::new("bool value not one byte long")),
            },
            Column::Text(b) => b.append_value(text::utf8(v)?),
            Column::Jsonb(b) => b.append_value(text::jsonb(v)?),
            Column::Uuid(b) => {
                let mut out = [0u8; 36];
                text::uuid(v, &mut out)?;
                b.append_value(text::utf8(&out)?);
            }
            Column::NumericText(b, scratch) => {
                scratch.clear();
                Numeric::parse(v)?.write_text(scratch);
                b.append_value(scratch.as_str());
            }
            Column::Decimal128(b, d) => b.append_value(d.decode(v)?),
            Column::Decimal256(b, d) => b.append_value(d.decode(v)?),
            Column::Bytea(b) => b.append_value(v),
            Column::Date(b) => b.append_value(temporal::date(v)?),
            Column::Timestamp(b) => b.append_value(temporal::timestamp(v)?),
            Column::Time(b) => b.append_value(temporal::time(v)?),
            Column::Interval(c) => {
                let iv = temporal::interval(v)?;
                c.months.append_value(iv.months);
                c.days.append_value(iv.days);
                c.microseconds.append_value(iv.microseconds);
                c.nulls.append_non_null();
            }
            Column::List(c) => c.append(v)?,
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Int16(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) | Column::Oid(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Text(b) | Column::Jsonb(b) | Column::Uuid(b) | Column::NumericText(b, _) => {
                b.append_null();
            }
            Column::Decimal128(b, _) => b.append_null(),
            Column::Decimal256(b, _) => b.append_null(),
            Column::Bytea(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::Time(b) => b.append_null(),
            Column::Interval(c) => {
                // The parts are NULL too, as in the pure-Python reader's struct.
                c.months.append_null();
                c.days.append_null();
                c.microseconds.append_null();
                c.nulls.append_null();
            }
            Column::List(c) => {
                let end = *c.offsets.last().unwrap_or(&0);
                c.offsets.push(end);
                c.nulls.append_null();
            }
        }
    }

    /// The values appended since the last call, as an array; the builder starts over.
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) | Column::Oid(b) => Arc::new(b.finish()),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Text(b) | Column::Jsonb(b) | Column::Uuid(b) | Column::NumericText(b, _) => {
                Arc::new(b.finish())
            }
            Column::Decimal128(b, _) => Arc::new(b.finish()),
            Column::Decimal256(b, _) => Arc::new(b.finish()),
            Column::Bytea(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::Interval(c) => Arc::new(StructArray::try_new(
                c.fields.clone(),
                vec![
                    Arc::new(c.months.finish()),
                    Arc::new(c.days.finish()),
                    Arc::new(c.microseconds.finish()),
                ],
                c.nulls.finish(),
            )?),
            Column::List(c) => {
                let offsets = std::mem::replace(&mut c.offsets, vec![0]);
                Arc::new(ListArray::try_new(
                    c.field.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    c.values.finish()?,
                    c.nulls.finish(),
                )?)
            }
        })
    }
}

impl ListColumn {
    #[inline]
    fn append(&mut self, v: &[u8]) -> Result<(), DecodeError> {
        let array = ArrayValue::parse(v).map_err(|e| match e {
            ArrayError::Dimensions(n) => DecodeError::new(format!(
                "an array value has {n} dimensions and does not fit list<{}>: arrays map to \
                 one-dimensional lists; select the column through a view \
                 (e.g. array_to_json(col)::json)",
                arrow_name(self.field.data_type())
            )),
            ArrayError::Malformed(m) => DecodeError::new(m),
        })?;
        if array.len > 0 && !self.element.accepts_oid(array.elem_oid) {
            return Err(DecodeError::new(format!(
                "array elements of type OID {} cannot be decoded as {}",
                array.elem_oid,
                self.element.name()
            )));
        }
        let mut count = 0usize;
        for element in array.elements() {
            self.values.append(element?)?;
            count += 1;
        }
        let end = self.offsets.last().copied().unwrap_or(0) as usize + count;
        let end = i32::try_from(end)
            .map_err(|_| DecodeError::new("more than 2^31 array elements in one batch"))?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::array::tests::encode as encode_array;
    use crate::copy::numeric::tests::encode as encode_numeric;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Decimal128Type, Int32Type};
    use arrow_array::Array;
    use arrow_schema::Field;

    fn column(wire: &str, dt: DataType) -> Column {
        let (wire, array) = parse_decoder(wire).unwrap();
        Column::new(wire, array, &dt).unwrap()
    }

    #[test]
    fn decoders_must_match_the_arrow_type() {
        assert!(Column::new(Wire::Int4, false, &DataType::Int64).is_err());
        assert!(Column::new(Wire::Int4, true, &DataType::Int32).is_err());
        assert!(parse_decoder("int4[]").is_some() && parse_decoder("point").is_none());
    }

    #[test]
    fn int_arrays_keep_null_elements_and_empty_arrays() {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let mut c = column("int4[]", DataType::List(item));
        let e = |v: i32| Some(v.to_be_bytes().to_vec());
        c.append(Some(&encode_array(23, &[3], &[e(1), None, e(3)])))
            .unwrap();
        c.append(Some(&encode_array(23, &[], &[]))).unwrap();
        c.append(None).unwrap();
        let out = c.finish().unwrap();
        let list = out.as_list::<i32>();
        assert_eq!(list.len(), 3);
        let first = list.value(0);
        let ints = first.as_primitive::<Int32Type>();
        assert_eq!(
            ints.iter().collect::<Vec<_>>(),
            vec![Some(1), None, Some(3)]
        );
        assert_eq!(list.value(1).len(), 0);
        assert!(list.is_null(2) && list.is_valid(1));
    }

    #[test]
    fn multi_dimensional_arrays_are_a_clear_error() {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let mut c = column("int4[]", DataType::List(item));
        let e = Some(1i32.to_be_bytes().to_vec());
        let err = c
            .append(Some(&encode_array(23, &[1, 1], &[e])))
            .unwrap_err();
        assert!(err.0.contains("2 dimensions") && err.0.contains("one-dimensional lists"));
    }

    #[test]
    fn array_elements_of_another_type_are_refused() {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let mut c = column("int4[]", DataType::List(item));
        let e = Some(1i64.to_be_bytes().to_vec());
        assert!(c.append(Some(&encode_array(20, &[1], &[e]))).is_err());
    }

    #[test]
    fn date_and_numeric_arrays() {
        let item = Arc::new(Field::new("item", DataType::Date32, true));
        let mut c = column("date[]", DataType::List(item));
        c.append(Some(&encode_array(
            1082,
            &[2],
            &[Some(7305i32.to_be_bytes().to_vec()), None],
        )))
        .unwrap();
        let out = c.finish().unwrap();
        let dates = out.as_list::<i32>().value(0);
        let dates = dates.as_primitive::<Date32Type>();
        assert_eq!(dates.value(0), 18262); // 2020-01-01
        assert!(dates.is_null(1));

        let dt = DataType::Decimal128(6, 2);
        let item = Arc::new(Field::new("item", dt.clone(), true));
        let mut c = column("numeric[]", DataType::List(item));
        let n = |s: &str| Some(encode_numeric(s));
        c.append(Some(&encode_array(
            1700,
            &[3],
            &[n("1.25"), None, n("-0.01")],
        )))
        .unwrap();
        let out = c.finish().unwrap();
        let values = out.as_list::<i32>().value(0);
        let values = values.as_primitive::<Decimal128Type>();
        assert_eq!(values.data_type(), &dt);
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            vec![Some(125), None, Some(-1)]
        );
    }

    #[test]
    fn nan_in_a_decimal_names_the_type() {
        let mut c = column("numeric", DataType::Decimal128(12, 2));
        let err = c.append(Some(&encode_numeric("NaN"))).unwrap_err();
        assert_eq!(err.0, "NaN cannot be stored in decimal128(12, 2)");
    }

    #[test]
    fn intervals_are_structs_with_null_parts_under_null_rows() {
        let fields = Fields::from(vec![
            Field::new("months", DataType::Int32, true),
            Field::new("days", DataType::Int32, true),
            Field::new("microseconds", DataType::Int64, true),
        ]);
        let mut c = column("interval", DataType::Struct(fields));
        let mut v = Vec::new();
        v.extend_from_slice(&14_706_789_000i64.to_be_bytes());
        v.extend_from_slice(&3i32.to_be_bytes());
        v.extend_from_slice(&14i32.to_be_bytes());
        c.append(Some(&v)).unwrap();
        c.append(None).unwrap();
        let out = c.finish().unwrap();
        let s = out.as_struct();
        assert_eq!(s.column(0).as_primitive::<Int32Type>().value(0), 14);
        assert!(s.is_null(1) && s.column(2).is_null(1));
    }

    #[test]
    fn floats_keep_nan_infinities_and_negative_zero() {
        let mut c = column("float8", DataType::Float64);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0] {
            c.append(Some(&v.to_bits().to_be_bytes())).unwrap();
        }
        let out = c.finish().unwrap();
        let f = out.as_primitive::<arrow_array::types::Float64Type>();
        assert!(
            f.value(0).is_nan() && f.value(1) == f64::INFINITY && f.value(2) == f64::NEG_INFINITY
        );
        assert!(f.value(3) == 0.0 && f.value(3).is_sign_negative());
    }

    #[test]
    fn oids_are_unsigned() {
        let mut c = column("oid", DataType::Int64);
        c.append(Some(&u32::MAX.to_be_bytes())).unwrap();
        let out = c.finish().unwrap();
        assert_eq!(
            out.as_primitive::<arrow_array::types::Int64Type>().value(0),
            4_294_967_295
        );
    }
}
