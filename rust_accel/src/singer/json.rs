//! JSON scanning for the Singer decoder: a cursor over one line that reads strings (with
//! their escapes), numbers and literals, and skips whole values while checking they are
//! JSON as Python's `json` reads it. Anything else declines (`Decline`), never an error.

use super::decode::{Decline, Res};

/// Nesting deeper than this declines (Python's json stops near 1000 with `RecursionError`).
pub const MAX_DEPTH: usize = 256;

pub struct Parser<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

/// A JSON number token: its text, whether it has a fraction or exponent.
pub struct Num<'a> {
    pub text: &'a [u8],
    pub integral: bool,
}

impl<'a> Parser<'a> {
    #[inline]
    pub fn ws(&mut self) {
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
    pub fn peek(&mut self) -> Res<u8> {
        self.ws();
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Decline("unexpected end of line"))
    }

    #[inline]
    pub fn expect(&mut self, b: u8) -> Res<()> {
        if self.peek()? == b {
            self.pos += 1;
            Ok(())
        } else {
            Err(Decline("unexpected character"))
        }
    }

    #[inline]
    pub fn literal(&mut self, word: &[u8]) -> Res<()> {
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
    pub fn more(&mut self, close: u8) -> Res<bool> {
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
    pub fn string(&mut self, scratch: &mut Vec<u8>) -> Res<Option<&'a [u8]>> {
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
    pub fn number(&mut self) -> Res<Num<'a>> {
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
    pub fn skip(&mut self, scratch: &mut Vec<u8>, depth: usize, constants: bool) -> Res<()> {
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
