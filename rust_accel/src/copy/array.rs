//! Arrays on the wire: int32 ndim, int32 has-null flag, uint32 element type OID, per
//! dimension int32 size and int32 lower bound, then per element int32 length (-1 = NULL)
//! and bytes. Only one-dimensional arrays map to Arrow lists; lower bounds are dropped
//! (as `array_to_json` does for the pure-Python reader).

use super::errors::DecodeError;
use super::wire::be_i32;

/// A parsed array header with its elements still encoded.
#[derive(Debug)]
pub struct ArrayValue<'a> {
    pub elem_oid: u32,
    pub len: usize,
    elements: &'a [u8],
}

/// Why an array value cannot become a list.
#[derive(Debug, PartialEq, Eq)]
pub enum ArrayError {
    Dimensions(i32),
    Malformed(&'static str),
}

impl<'a> ArrayValue<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Self, ArrayError> {
        if v.len() < 12 {
            return Err(ArrayError::Malformed("array value shorter than its header"));
        }
        let ndim = be_i32(v, 0);
        let elem_oid = be_i32(v, 8) as u32;
        match ndim {
            0 => Ok(ArrayValue {
                elem_oid,
                len: 0,
                elements: &[],
            }),
            1 => {
                if v.len() < 20 {
                    return Err(ArrayError::Malformed("array value shorter than its header"));
                }
                let len = be_i32(v, 12);
                if len < 0 {
                    return Err(ArrayError::Malformed("negative array size"));
                }
                Ok(ArrayValue {
                    elem_oid,
                    len: len as usize,
                    elements: &v[20..],
                })
            }
            n => Err(ArrayError::Dimensions(n)),
        }
    }

    /// The elements in order, `None` for NULL.
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            data: self.elements,
            at: 0,
            left: self.len,
        }
    }
}

pub struct Elements<'a> {
    data: &'a [u8],
    at: usize,
    left: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Option<&'a [u8]>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return if self.at == self.data.len() {
                None
            } else {
                self.left = usize::MAX; // report once, then stop
                self.data = &[];
                self.at = 0;
                Some(Err(DecodeError::new(
                    "array value longer than its elements",
                )))
            };
        }
        if self.left == usize::MAX {
            return None;
        }
        self.left -= 1;
        if self.data.len() < self.at + 4 {
            self.left = 0;
            self.at = self.data.len();
            return Some(Err(DecodeError::new(
                "array value shorter than its elements",
            )));
        }
        let len = be_i32(self.data, self.at);
        self.at += 4;
        if len == -1 {
            return Some(Ok(None));
        }
        if len < 0 || self.data.len() - self.at < len as usize {
            self.left = 0;
            self.at = self.data.len();
            return Some(Err(DecodeError::new("malformed array element")));
        }
        let value = &self.data[self.at..self.at + len as usize];
        self.at += len as usize;
        Some(Ok(Some(value)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-dimensional array (or `ndim` dimensions of the given sizes) on the wire.
    pub(crate) fn encode(elem_oid: u32, dims: &[i32], elements: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        out.extend_from_slice(&i32::from(elements.iter().any(Option::is_none)).to_be_bytes());
        out.extend_from_slice(&elem_oid.to_be_bytes());
        for size in dims {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
        }
        for element in elements {
            match element {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    fn int4s(v: &[u8]) -> Vec<Option<i32>> {
        let array = ArrayValue::parse(v).unwrap();
        array
            .elements()
            .map(|e| {
                e.unwrap()
                    .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
            })
            .collect()
    }

    #[test]
    fn elements_with_nulls() {
        let v = encode(
            23,
            &[3],
            &[
                Some(1i32.to_be_bytes().to_vec()),
                None,
                Some(3i32.to_be_bytes().to_vec()),
            ],
        );
        assert_eq!(ArrayValue::parse(&v).unwrap().elem_oid, 23);
        assert_eq!(int4s(&v), vec![Some(1), None, Some(3)]);
    }

    #[test]
    fn an_empty_array_has_no_dimensions() {
        let v = encode(25, &[], &[]);
        assert_eq!(int4s(&v), vec![]);
    }

    #[test]
    fn several_dimensions_are_reported() {
        let one = Some(1i32.to_be_bytes().to_vec());
        let v = encode(23, &[2, 2], &[one.clone(), one.clone(), one.clone(), one]);
        assert_eq!(
            ArrayValue::parse(&v).unwrap_err(),
            ArrayError::Dimensions(2)
        );
    }

    #[test]
    fn truncated_elements_are_errors() {
        let v = encode(23, &[2], &[Some(1i32.to_be_bytes().to_vec())]);
        let errors = ArrayValue::parse(&v)
            .unwrap()
            .elements()
            .filter(Result::is_err)
            .count();
        assert_eq!(errors, 1);
        let mut long = encode(23, &[1], &[Some(1i32.to_be_bytes().to_vec())]);
        long.extend_from_slice(&[0, 0]);
        let results: Vec<_> = ArrayValue::parse(&long).unwrap().elements().collect();
        assert_eq!(results.len(), 2);
        assert!(results[1].is_err());
    }
}
