//! The decoder's columns: one Arrow builder per field, nested for structs and lists,
//! chosen once from the schema (an unsupported type declines); `parser.rs` fills them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder,
    LargeBinaryBuilder, LargeStringBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, LargeListArray, ListArray, NullArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, Fields, TimeUnit};

use super::{Decline, Res};
use crate::singer::metadata::{self, Extension};

pub(super) enum Col {
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

pub(super) struct StructCol {
    pub(super) fields: Fields,
    pub(super) children: Vec<Col>,
    pub(super) index: HashMap<Vec<u8>, usize>,
    pub(super) seen: Vec<u32>,
    pub(super) stamp: u32,
    pub(super) nulls: NullBufferBuilder,
    pub(super) len: usize,
}

pub(super) struct ListCol {
    field: FieldRef,
    pub(super) item: Col,
    pub(super) offsets: Vec<i64>,
    large: bool,
    pub(super) nulls: NullBufferBuilder,
}

impl Col {
    /// `member`: the field is an object member (a list item's `null` is always SQL NULL).
    fn new(field: &arrow_schema::Field, f32_direct: bool, member: bool) -> Res<Col> {
        let json = match metadata::extension(field) {
            Extension::None => false,
            Extension::Json => true,
            Extension::Other => return Err(Decline("extension type")),
        };
        let json_null = member && metadata::sql_null_omitted(field);
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

    pub(super) fn null(&mut self) {
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

    pub(super) fn finish(self) -> Res<ArrayRef> {
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
                    .map(Col::finish)
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

impl StructCol {
    pub(super) fn new(fields: &Fields, f32_direct: bool) -> Res<StructCol> {
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
}
