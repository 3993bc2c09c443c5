//! Dates and times in binary form, counted from PostgreSQL's epoch 2000-01-01, moved to
//! Arrow's 1970-01-01. PostgreSQL's +/-infinity (the extreme integers) stay the extreme
//! integers, as the pure-Python reader does.

use super::errors::DecodeError;
use super::wire::{be_i32, be_i64, exact, int4, int8};

/// Days from 1970-01-01 to 2000-01-01.
pub const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub const EPOCH_MICROS: i64 = EPOCH_DAYS as i64 * 86_400_000_000;

/// `date` -> days since 1970-01-01.
#[inline]
pub fn date(v: &[u8]) -> Result<i32, DecodeError> {
    let days = int4(v, "date")?;
    if days == i32::MIN || days == i32::MAX {
        return Ok(days);
    }
    days.checked_add(EPOCH_DAYS)
        .ok_or_else(|| DecodeError::new("date out of the Arrow date32 range"))
}

/// `timestamp`/`timestamptz` -> microseconds since 1970-01-01 (UTC).
#[inline]
pub fn timestamp(v: &[u8]) -> Result<i64, DecodeError> {
    let micros = int8(v, "timestamp")?;
    if micros == i64::MIN || micros == i64::MAX {
        return Ok(micros);
    }
    micros.checked_add(EPOCH_MICROS).ok_or_else(|| {
        DecodeError::new("timestamp beyond the Arrow microsecond range (after year 294247)")
    })
}

/// `time` -> microseconds since midnight ('24:00:00' is 86,400,000,000).
#[inline]
pub fn time(v: &[u8]) -> Result<i64, DecodeError> {
    int8(v, "time")
}

/// `interval`: the three fields PostgreSQL keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub microseconds: i64,
}

/// `interval` on the wire: int64 microseconds, int32 days, int32 months.
#[inline]
pub fn interval(v: &[u8]) -> Result<Interval, DecodeError> {
    exact::<16>(v, "interval")?;
    Ok(Interval {
        microseconds: be_i64(v, 0),
        days: be_i32(v, 8),
        months: be_i32(v, 12),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_move_to_the_unix_epoch_and_keep_infinities() {
        assert_eq!(date(&0i32.to_be_bytes()), Ok(10_957)); // 2000-01-01
        assert_eq!(date(&(-730_119i32).to_be_bytes()), Ok(-719_162)); // 0001-01-01
        assert_eq!(date(&i32::MAX.to_be_bytes()), Ok(i32::MAX));
        assert_eq!(date(&i32::MIN.to_be_bytes()), Ok(i32::MIN));
        assert!(date(&[0, 0, 0]).is_err());
    }

    #[test]
    fn timestamps_move_to_the_unix_epoch_and_keep_infinities() {
        assert_eq!(timestamp(&0i64.to_be_bytes()), Ok(946_684_800_000_000));
        assert_eq!(timestamp(&(-1i64).to_be_bytes()), Ok(946_684_799_999_999));
        assert_eq!(timestamp(&i64::MAX.to_be_bytes()), Ok(i64::MAX));
        assert_eq!(timestamp(&i64::MIN.to_be_bytes()), Ok(i64::MIN));
        // 294276-12-31: fits PostgreSQL, not Arrow's int64 microseconds since 1970.
        assert!(timestamp(&9_223_371_331_199_999_999i64.to_be_bytes()).is_err());
    }

    #[test]
    fn intervals_keep_months_days_and_microseconds() {
        let mut v = Vec::new();
        v.extend_from_slice(&(-1_500_000i64).to_be_bytes());
        v.extend_from_slice(&(-2i32).to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            interval(&v),
            Ok(Interval {
                months: -1,
                days: -2,
                microseconds: -1_500_000
            })
        );
        assert!(interval(&v[..12]).is_err());
    }

    #[test]
    fn time_is_microseconds() {
        assert_eq!(time(&86_400_000_000i64.to_be_bytes()), Ok(86_400_000_000));
    }
}
