//! PostgreSQL `numeric` in binary form: int16 ndigits, int16 weight, uint16 sign,
//! int16 dscale, then ndigits base-10000 digits, most significant first. The value is
//! sum(digit[i] * 10000^(weight - i)). Decoded to a scaled decimal integer (i128 or
//! i256) or to the text `numeric_out` prints.

use arrow_buffer::i256;

use super::errors::DecodeError;
use super::wire::be_i16;

const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;

/// A numeric value borrowed from the COPY buffer.
#[derive(Debug, Clone, Copy)]
pub struct Numeric<'a> {
    pub weight: i16,
    pub sign: u16,
    pub dscale: u16,
    digits: &'a [u8],
}

/// Why a numeric does not fit a decimal column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDecimal {
    NaN,
    Infinite,
    /// More significant digits than the decimal's precision.
    Overflow,
    /// Non-zero digits beyond the decimal's scale.
    Inexact,
}

/// The integer types behind Arrow decimals.
pub trait DecimalInt: Copy + PartialOrd {
    const ZERO: Self;
    const TEN: Self;
    fn from_u32(v: u32) -> Self;
    fn mul_checked(self, other: Self) -> Option<Self>;
    fn add_checked(self, other: Self) -> Option<Self>;
    fn negate(self) -> Self;

    /// 10^exp, or None if it does not fit.
    fn pow10(exp: u32) -> Option<Self> {
        let mut v = Self::from_u32(1);
        for _ in 0..exp {
            v = v.mul_checked(Self::TEN)?;
        }
        Some(v)
    }
}

impl DecimalInt for i128 {
    const ZERO: Self = 0;
    const TEN: Self = 10;
    fn from_u32(v: u32) -> Self {
        i128::from(v)
    }
    fn mul_checked(self, other: Self) -> Option<Self> {
        self.checked_mul(other)
    }
    fn add_checked(self, other: Self) -> Option<Self> {
        self.checked_add(other)
    }
    fn negate(self) -> Self {
        -self
    }
}

impl DecimalInt for i256 {
    const ZERO: Self = i256::ZERO;
    const TEN: Self = i256::from_parts(10, 0);
    fn from_u32(v: u32) -> Self {
        i256::from_i128(i128::from(v))
    }
    fn mul_checked(self, other: Self) -> Option<Self> {
        self.checked_mul(other)
    }
    fn add_checked(self, other: Self) -> Option<Self> {
        self.checked_add(other)
    }
    fn negate(self) -> Self {
        self.wrapping_neg()
    }
}

const POW10: [u32; 5] = [1, 10, 100, 1000, 10000];

impl<'a> Numeric<'a> {
    /// Parse the binary representation.
    pub fn parse(v: &'a [u8]) -> Result<Self, DecodeError> {
        if v.len() < 8 {
            return Err(DecodeError::new("numeric value shorter than its header"));
        }
        let ndigits = be_i16(v, 0);
        let weight = be_i16(v, 2);
        let sign = be_i16(v, 4) as u16;
        let dscale = be_i16(v, 6);
        if ndigits < 0 || dscale < 0 || v.len() != 8 + 2 * ndigits as usize {
            return Err(DecodeError::new("malformed numeric value"));
        }
        if !matches!(sign, SIGN_POS | SIGN_NEG | SIGN_NAN | SIGN_PINF | SIGN_NINF) {
            return Err(DecodeError::new(format!(
                "numeric value with invalid sign {sign:#x}"
            )));
        }
        let digits = &v[8..];
        if digits
            .chunks_exact(2)
            .any(|d| u16::from_be_bytes([d[0], d[1]]) > 9999)
        {
            return Err(DecodeError::new("numeric digit out of range"));
        }
        Ok(Numeric {
            weight,
            sign,
            dscale: dscale as u16,
            digits,
        })
    }

    pub fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    #[inline]
    fn digit(&self, i: usize) -> u32 {
        u32::from(u16::from_be_bytes([
            self.digits[2 * i],
            self.digits[2 * i + 1],
        ]))
    }

    /// The value times 10^scale as an exact integer, `|result| < limit` (10^precision).
    pub fn to_scaled<T: DecimalInt>(self, scale: i8, limit: T) -> Result<T, NotDecimal> {
        match self.sign {
            SIGN_NAN => return Err(NotDecimal::NaN),
            SIGN_PINF | SIGN_NINF => return Err(NotDecimal::Infinite),
            _ => {}
        }
        let scale = i32::from(scale);
        let base = T::from_u32(10000);
        let mut acc = T::ZERO;
        // Horner over the digits; `shift` is the power of ten of digit i's last place
        // once the value is scaled: 4 * (weight - i) + scale.
        let mut shift = 4 * i32::from(self.weight) + scale;
        for i in 0..self.ndigits() {
            let d = self.digit(i);
            if shift >= 0 {
                acc = acc.mul_checked(base).ok_or(NotDecimal::Overflow)?;
                acc = acc
                    .add_checked(T::from_u32(d))
                    .ok_or(NotDecimal::Overflow)?;
            } else if shift > -4 {
                // This digit straddles the last decimal place: keep its leading part.
                let drop = POW10[(-shift) as usize];
                if d % drop != 0 {
                    return Err(NotDecimal::Inexact);
                }
                let keep = T::from_u32(POW10[(4 + shift) as usize]);
                acc = acc.mul_checked(keep).ok_or(NotDecimal::Overflow)?;
                acc = acc
                    .add_checked(T::from_u32(d / drop))
                    .ok_or(NotDecimal::Overflow)?;
            } else if d != 0 {
                return Err(NotDecimal::Inexact);
            }
            shift -= 4;
        }
        // The last digit's place is 10^(shift + 4); scale the integer up to 10^0.
        let last = shift + 4;
        if self.ndigits() > 0 && last > 0 {
            let factor = T::pow10(last as u32).ok_or(NotDecimal::Overflow)?;
            acc = acc.mul_checked(factor).ok_or(NotDecimal::Overflow)?;
        }
        if acc >= limit {
            return Err(NotDecimal::Overflow);
        }
        Ok(if self.sign == SIGN_NEG {
            acc.negate()
        } else {
            acc
        })
    }

    /// Append the text `numeric_out` prints (PostgreSQL's `get_str_from_var`).
    pub fn write_text(&self, out: &mut String) {
        match self.sign {
            SIGN_NAN => return out.push_str("NaN"),
            SIGN_PINF => return out.push_str("Infinity"),
            SIGN_NINF => return out.push_str("-Infinity"),
            SIGN_NEG => out.push('-'),
            _ => {}
        }
        let ndigits = self.ndigits() as i32;
        let digit = |d: i32| -> u32 {
            if d >= 0 && d < ndigits {
                self.digit(d as usize)
            } else {
                0
            }
        };
        let mut buf = itoa4::Buffer::default();
        if self.weight < 0 {
            out.push('0');
        } else {
            for d in 0..=i32::from(self.weight) {
                let v = digit(d);
                if d == 0 {
                    out.push_str(buf.unpadded(v));
                } else {
                    out.push_str(buf.padded(v));
                }
            }
        }
        if self.dscale > 0 {
            out.push('.');
            let end = out.len() + self.dscale as usize;
            let mut d = i32::from(self.weight) + 1;
            let mut written = 0;
            while written < self.dscale as usize {
                out.push_str(buf.padded(digit(d)));
                d += 1;
                written += 4;
            }
            out.truncate(end);
        }
    }
}

/// Formatting of one base-10000 digit without allocation.
mod itoa4 {
    #[derive(Default)]
    pub struct Buffer([u8; 4]);

    impl Buffer {
        /// Four digits, zero-padded.
        pub fn padded(&mut self, v: u32) -> &str {
            self.0 = [
                b'0' + (v / 1000 % 10) as u8,
                b'0' + (v / 100 % 10) as u8,
                b'0' + (v / 10 % 10) as u8,
                b'0' + (v % 10) as u8,
            ];
            std::str::from_utf8(&self.0).unwrap_or("0000")
        }

        /// The digits without leading zeros ("0" for zero).
        pub fn unpadded(&mut self, v: u32) -> &str {
            let skip = match v {
                0..=9 => 3,
                10..=99 => 2,
                100..=999 => 1,
                _ => 0,
            };
            &self.padded(v)[skip..]
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The binary form of a decimal string, as PostgreSQL's `numeric_send` writes it.
    pub(crate) fn encode(text: &str) -> Vec<u8> {
        let (sign, body) = match text {
            "NaN" => return header(0, 0, SIGN_NAN, 0),
            "Infinity" => return header(0, 0, SIGN_PINF, 0),
            "-Infinity" => return header(0, 0, SIGN_NINF, 0),
            _ => match text.strip_prefix('-') {
                Some(rest) => (SIGN_NEG, rest),
                None => (SIGN_POS, text),
            },
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let dscale = frac.len() as i16;
        // Pad the integer part on the left and the fraction on the right to groups of 4.
        let int_pad = (4 - int.len() % 4) % 4;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let all = format!(
            "{}{}{}{}",
            "0".repeat(int_pad),
            int,
            frac,
            "0".repeat(frac_pad)
        );
        let mut groups: Vec<u16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = ((int.len() + int_pad) / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let sign = if groups.is_empty() { SIGN_POS } else { sign };
        let mut out = header(groups.len() as i16, weight, sign, dscale);
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    fn header(ndigits: i16, weight: i16, sign: u16, dscale: i16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        out
    }

    fn text(v: &[u8]) -> String {
        let mut s = String::new();
        Numeric::parse(v).unwrap().write_text(&mut s);
        s
    }

    #[test]
    fn text_is_what_postgres_prints() {
        for s in [
            "0",
            "0.00",
            "1",
            "-1",
            "10000",
            "12345678",
            "0.0001",
            "-0.0000000001",
            "3.14159265358979323846264338327950288419716939937510582097494459",
            "-12345678901234567890.123456789",
            "1000000000000000000000000000000",
            "9999.9999",
            "0.5",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert_eq!(text(&encode(s)), s);
        }
    }

    #[test]
    fn trailing_zero_digits_come_from_dscale() {
        // 1.5 with dscale 5 (as numeric(10,5) stores it): one digit group, printed to 5 places.
        let mut v = header(2, 0, SIGN_POS, 5);
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&5000u16.to_be_bytes());
        assert_eq!(text(&v), "1.50000");
    }

    fn dec128(s: &str, precision: u32, scale: i8) -> Result<i128, NotDecimal> {
        let limit = i128::pow10(precision).unwrap();
        Numeric::parse(&encode(s))
            .unwrap()
            .to_scaled::<i128>(scale, limit)
    }

    #[test]
    fn decimals_are_exact_at_their_scale() {
        assert_eq!(dec128("1.25", 6, 2), Ok(125));
        assert_eq!(dec128("-0.01", 6, 2), Ok(-1));
        assert_eq!(dec128("0", 12, 2), Ok(0));
        assert_eq!(dec128("9999999999.99", 12, 2), Ok(999_999_999_999));
        assert_eq!(dec128("-0.0000000001", 38, 10), Ok(-1));
        assert_eq!(dec128("1.5", 10, 0), Err(NotDecimal::Inexact));
        assert_eq!(dec128("1000", 3, 0), Err(NotDecimal::Overflow));
        assert_eq!(dec128("12.5", 5, 3), Ok(12_500));
        assert_eq!(
            dec128("100000000000000000000", 21, 0),
            Ok(100_000_000_000_000_000_000)
        );
        assert_eq!(dec128("NaN", 12, 2), Err(NotDecimal::NaN));
        assert_eq!(dec128("Infinity", 12, 2), Err(NotDecimal::Infinite));
    }

    #[test]
    fn thirty_eight_digits_fit_i128() {
        // 28 integer digits and 10 decimals: the digit groups alone would need 40 digits.
        let v = "1234567890123456789012345678.0123456789";
        assert_eq!(
            dec128(v, 38, 10),
            Ok(12345678901234567890123456780123456789)
        );
        let max = "9999999999999999999999999999.9999999999";
        assert_eq!(
            dec128(max, 38, 10),
            Ok(99999999999999999999999999999999999999)
        );
        assert_eq!(
            dec128(&format!("-{max}"), 38, 10),
            Ok(-99999999999999999999999999999999999999)
        );
        assert_eq!(
            dec128("99999999999999999999999999999999999999", 38, 0),
            Ok(99999999999999999999999999999999999999)
        );
    }

    #[test]
    fn decimal256_holds_sixty_digits() {
        let v = "123456789012345678901234567890123456789012345678901234.12345";
        let limit = i256::pow10(60).unwrap();
        let got = Numeric::parse(&encode(v))
            .unwrap()
            .to_scaled::<i256>(5, limit)
            .unwrap();
        assert_eq!(
            got.to_string(),
            "12345678901234567890123456789012345678901234567890123412345"
        );
        let encoded = encode(&format!("-{v}"));
        let neg = Numeric::parse(&encoded).unwrap();
        assert_eq!(
            neg.to_scaled::<i256>(5, limit).unwrap().to_string(),
            "-12345678901234567890123456789012345678901234567890123412345"
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(Numeric::parse(&[0, 1]).is_err());
        let mut v = header(1, 0, SIGN_POS, 0);
        v.extend_from_slice(&10000u16.to_be_bytes());
        assert!(Numeric::parse(&v).is_err());
        assert!(Numeric::parse(&header(0, 0, 0x1234, 0)).is_err());
    }
}
