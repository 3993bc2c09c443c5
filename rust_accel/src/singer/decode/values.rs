//! Value conversions of the Singer decoder, each as `decode.py`'s exact path (and its
//! fast path) reads them: integers, floats and their tokens, dates, times, date-times,
//! base64 and decimals. A value read any other way declines.

use super::{Decline, Res};
use crate::singer::json::{Num, Parser};

/// A JSON number with more significant digits than this is not read exactly the same way
/// by Python's two paths when it becomes a decimal (float repr vs. the digits).
const EXACT_FLOAT_DIGITS: usize = 15;

/// An integer token's value, if it has one and fits an i128 (else the batch declines).
pub(super) fn int_value(num: &Num<'_>) -> Res<i128> {
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

pub(super) fn parse_f64(text: &[u8]) -> f64 {
    // SAFETY-free: a validated JSON number is ASCII and valid Rust float syntax.
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A float column's value: a number token or one of the NaN/Infinity tokens. The integer
/// `-0` declines: Python reads it as 0.0 on its exact path and -0.0 on Arrow's.
pub(super) fn float_value<'a>(p: &mut Parser<'a>) -> Res<Option<&'a [u8]>> {
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
pub(super) fn is_infinity_token(text: &[u8]) -> bool {
    text == b"inf" || text == b"-inf"
}

/// A number read as infinity is beyond the double range (`1e400`): Python refuses it,
/// only the tokens Infinity and -Infinity stand for infinities.
pub(super) fn finite_or_token(text: &[u8], v: f64) -> Res<f64> {
    if v.is_infinite() && !is_infinity_token(text) {
        return Err(Decline("number beyond the float64 range"));
    }
    Ok(v)
}

/// Whether the integer token lies in `i64::MIN..=u64::MAX` (orjson's range; beyond it the
/// Python decoder re-reads the line with `json`, and this decoder declines).
pub(super) fn orjson_int(text: &[u8]) -> bool {
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
pub(super) fn parse_date(s: &[u8]) -> Res<i64> {
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
pub(super) fn parse_time(s: &[u8]) -> Res<(i64, i64, usize, usize)> {
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
pub(super) fn parse_timestamp(s: &[u8]) -> Res<(i64, i64)> {
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
    Ok(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return Err(Decline("not base64")),
    }))
}

/// Standard, padded base64 with zero trailing bits (anything looser declines).
pub(super) fn base64_decode(s: &[u8], out: &mut Vec<u8>) -> Res<()> {
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
pub(super) fn decimal_digits(
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

#[cfg(test)]
mod tests {
    use super::*;

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
