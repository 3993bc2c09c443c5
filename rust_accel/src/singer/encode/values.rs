//! The text of one value, as `encode.py` writes it: JSON strings (orjson's escapes),
//! decimals, dates, times, timestamps and base64. A value Python would write differently
//! (a date outside years 1-9999, ...) declines.

use super::{Decline, Res};

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

/// The decimal digits of `v`, zero-padded to `width` (1: the shortest form).
pub(super) fn push_digits(out: &mut Vec<u8>, v: u64, width: usize) {
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
    let text = if let Some(text) = cached {
        text
    } else {
        let text = format_date(days)?;
        DATES.with(|c| c.borrow_mut()[slot] = (days, text));
        text
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

#[cfg(test)]
mod tests {
    use super::*;

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
