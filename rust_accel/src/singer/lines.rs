//! Runs of RECORD lines in a block of Singer input, so a target hands whole blocks to the
//! decoder instead of handling its input one line at a time in Python.
//!
//! The head test is exactly the Python router's regular expression
//! `^\{\s*"type"\s*:\s*"RECORD"\s*,\s*"stream"\s*:\s*"([^"\\]*)"` (`\s` as in a bytes
//! pattern); a line it does not match (other messages, other key orders, escaped stream
//! names) ends a run and is left to the line-by-line path.

/// `\s` of a Python bytes pattern.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// `lit` at `i` (after optional white space when `space`): the index after it.
fn token(s: &[u8], i: usize, lit: &[u8], space: bool) -> Option<usize> {
    let i = if space { skip_space(s, i) } else { i };
    s.get(i..)?.starts_with(lit).then_some(i + lit.len())
}

/// The stream a RECORD line names in its head, or None when the head is not of that form.
pub fn record_head(line: &[u8]) -> Option<&[u8]> {
    let mut i = token(line, 0, b"{", false)?;
    for lit in [
        &b"\"type\""[..],
        b":",
        b"\"RECORD\"",
        b",",
        b"\"stream\"",
        b":",
        b"\"",
    ] {
        i = token(line, i, lit, true)?;
    }
    let len = line[i..].iter().position(|&b| b == b'"' || b == b'\\')?;
    (line[i + len] == b'"').then(|| &line[i..i + len])
}

/// What [`record_run`] found at `start`.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    /// The stream named by the first line's head (None: not a RECORD head, or no
    /// complete line at `start`).
    pub head: Option<&'a [u8]>,
    /// The end of the run (`start` when it is empty).
    pub end: usize,
    /// How many lines it holds.
    pub count: usize,
}

/// The complete lines (each ending in `\n`) from `start` whose head names `stream`, at
/// most `max_lines` of them, ending with the line that brings their bytes to `max_bytes`
/// or more. When the first line names another stream (or `stream` is None) the run is
/// empty and `head` says which stream it names, so the caller can ask again with its
/// limits.
pub fn record_run<'a>(
    data: &'a [u8],
    start: usize,
    stream: Option<&[u8]>,
    max_lines: usize,
    max_bytes: usize,
) -> Run<'a> {
    let empty = |head| Run {
        head,
        end: start,
        count: 0,
    };
    let Some(first_len) = data
        .get(start..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
    else {
        return empty(None);
    };
    let head = record_head(&data[start..=(start + first_len)]);
    let (Some(found), Some(wanted)) = (head, stream) else {
        return empty(head);
    };
    if found != wanted || max_lines == 0 {
        return empty(head);
    }
    let (mut pos, mut count, mut line_len) = (start, 0, first_len + 1);
    loop {
        pos += line_len;
        count += 1;
        if count >= max_lines || pos - start >= max_bytes {
            break;
        }
        let Some(len) = data[pos..].iter().position(|&b| b == b'\n') else {
            break;
        };
        if record_head(&data[pos..=(pos + len)]) != Some(wanted) {
            break;
        }
        line_len = len + 1;
    }
    Run {
        head,
        end: pos,
        count,
    }
}

/// The lines of `data[start..end]`: each ends after a `\n`; a last piece without one is a
/// line too. Exactly how the Python side splits a segment when it decodes it itself.
pub fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(
            record_head(b"{\"type\":\"RECORD\",\"stream\":\"a-b\",\"record\":{}}\n"),
            Some(&b"a-b"[..])
        );
        assert_eq!(
            record_head(b"{ \"type\" :\t\"RECORD\" ,\x0c\"stream\":  \"\"}"),
            Some(&b""[..])
        );
        for bad in [
            &b" {\"type\":\"RECORD\",\"stream\":\"a\"}"[..],
            b"{\"stream\":\"a\",\"type\":\"RECORD\"}",
            b"{\"type\":\"STATE\",\"value\":{}}",
            b"{\"type\":\"RECORD\",\"stream\":\"a\\\"b\"}",
            b"{\"type\":\"RECORD\",\"stream\":\"abc",
            b"{\"type\":\"RECORD\",\"stream\":",
            b"",
        ] {
            assert_eq!(record_head(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    const A: &[u8] = b"{\"type\":\"RECORD\",\"stream\":\"a\",\"record\":{\"x\":1}}\n";
    const B: &[u8] = b"{\"type\":\"RECORD\",\"stream\":\"b\",\"record\":{\"x\":1}}\n";
    const S: &[u8] = b"{\"type\":\"STATE\",\"value\":{}}\n";

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn runs_stop_at_other_lines_and_limits() {
        let data = cat(&[A, A, A, B, S, A]);
        let a = Some(&b"a"[..]);
        let got = record_run(&data, 0, a, 100, 1 << 20);
        assert_eq!((got.head, got.end, got.count), (a, 3 * A.len(), 3));
        // Another stream: empty, named.
        let got = record_run(&data, 3 * A.len(), a, 100, 1 << 20);
        assert_eq!((got.head, got.count), (Some(&b"b"[..]), 0));
        // Not a RECORD head.
        let at = 3 * A.len() + B.len();
        assert_eq!(record_run(&data, at, a, 100, 1 << 20), empty(at, None));
        // No stream given: only the head.
        assert_eq!(record_run(&data, 0, None, 100, 1 << 20), empty(0, a));
        // Line and byte limits (the line reaching max_bytes is included).
        assert_eq!(record_run(&data, 0, a, 2, 1 << 20).count, 2);
        assert_eq!(record_run(&data, 0, a, 100, A.len() + 1).count, 2);
        assert_eq!(record_run(&data, 0, a, 100, A.len()).count, 1);
        assert_eq!(record_run(&data, 0, a, 0, 1 << 20).count, 0);
    }

    fn empty(end: usize, head: Option<&[u8]>) -> Run<'_> {
        Run {
            head,
            end,
            count: 0,
        }
    }

    #[test]
    fn incomplete_lines_are_not_taken() {
        let data = cat(&[A, &A[..A.len() - 1]]);
        let a = Some(&b"a"[..]);
        assert_eq!(record_run(&data, 0, a, 100, 1 << 20).count, 1);
        assert_eq!(
            record_run(&data, A.len(), a, 100, 1 << 20),
            empty(A.len(), None)
        );
        assert_eq!(record_run(&data, data.len() + 5, a, 100, 1 << 20).count, 0);
    }

    #[test]
    fn splitting() {
        let pieces: Vec<&[u8]> = split_lines(b"a\nb\n\nc").collect();
        assert_eq!(pieces, [&b"a\n"[..], b"b\n", b"\n", b"c"]);
        assert_eq!(split_lines(b"").count(), 0);
    }
}
