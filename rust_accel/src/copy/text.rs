//! Text-like values: UTF-8 checked once (a `SQL_ASCII` database can hold any bytes), jsonb
//! without its version byte, uuid as PostgreSQL prints it.

use super::errors::DecodeError;

/// The bytes as `&str`, or an error saying the data is not UTF-8.
#[inline]
pub fn utf8(v: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(v).map_err(|e| {
        DecodeError::new(format!(
            "invalid UTF-8 at byte {} (is the database encoding SQL_ASCII?)",
            e.valid_up_to()
        ))
    })
}

/// `jsonb` on the wire: a version byte (1), then the JSON text.
#[inline]
pub fn jsonb(v: &[u8]) -> Result<&str, DecodeError> {
    match v.split_first() {
        Some((1, text)) => utf8(text),
        Some((version, _)) => Err(DecodeError::new(format!("unknown jsonb version {version}"))),
        None => Err(DecodeError::new("empty jsonb value")),
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 16 bytes -> `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lowercase, as `uuid_out`).
#[inline]
pub fn uuid(v: &[u8], out: &mut [u8; 36]) -> Result<(), DecodeError> {
    if v.len() != 16 {
        return Err(DecodeError::new(format!(
            "uuid value of {} bytes, expected 16",
            v.len()
        )));
    }
    let mut at = 0;
    for (i, byte) in v.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[(byte >> 4) as usize];
        out[at + 1] = HEX[(byte & 0xf) as usize];
        at += 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_canonically() {
        let raw: Vec<u8> = (0..16).map(|i| (i * 17) as u8).collect();
        let mut out = [0u8; 36];
        uuid(&raw, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert!(uuid(&raw[..15], &mut out).is_err());
    }

    #[test]
    fn jsonb_drops_its_version_byte() {
        assert_eq!(jsonb(b"\x01{\"a\": 1}"), Ok("{\"a\": 1}"));
        assert!(jsonb(b"\x02{}").is_err());
        assert!(jsonb(b"").is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(utf8("hé".as_bytes()), Ok("hé"));
        assert!(utf8(b"h\xff").is_err());
    }
}
