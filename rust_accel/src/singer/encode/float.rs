//! Floats as Singer text: Arrow's float-to-string layout of the shortest round-trip
//! digits, and the Singer tokens for NaN, the infinities and -0.0.

use super::values::push_digits;

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
pub fn write_float<F: zmij::Float + Into<f64>>(out: &mut Vec<u8>, v: F) {
    // Widening to f64 keeps NaN, the infinities and their signs.
    let wide: f64 = v.into();
    if wide.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if wide == f64::INFINITY {
        out.extend_from_slice(b"Infinity");
    } else if wide == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Infinity");
    } else {
        let mut buffer = zmij::Buffer::new();
        let text = buffer.format_finite(v);
        let magnitude = wide.abs();
        if (1e-5..1e10).contains(&magnitude) && !text.contains('e') {
            // zmij's plain text is already Arrow's, but for the ".0" of whole values.
            let text = text.strip_suffix(".0").unwrap_or(text);
            out.extend_from_slice(text.as_bytes());
        } else {
            write_float_text(out, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn float32(v: f32) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
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
}
