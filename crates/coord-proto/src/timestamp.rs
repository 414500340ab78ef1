//! Timestamps: integer milliseconds inside, RFC 3339 UTC with milliseconds
//! on the wire (`2026-04-07T21:13:45.123Z`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time, in milliseconds since the Unix epoch (UTC).
///
/// Serializes as an RFC 3339 string with millisecond precision and a `Z`
/// suffix; deserializes from any RFC 3339 string (other offsets are
/// converted to UTC, finer precision is truncated to ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time. The only clock read in this crate; the
    /// pure core never calls it (the daemon passes `now` in).
    ///
    /// Read from `SystemTime` as milliseconds, not through `time`'s
    /// `OffsetDateTime::now_utc`, which works out the calendar date only
    /// for this to throw it away: about 300 instructions per call, several
    /// calls per write (callgrind, docs/BENCHMARKS.md, "The write path").
    pub fn now() -> Self {
        use std::time::{SystemTime, UNIX_EPOCH};
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            // A clock set before 1970: the same instant, counted back.
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This timestamp plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Parses an RFC 3339 string.
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    /// Writes the fields into a stack buffer: every event carries two
    /// timestamps, and `time`'s formatter allocates a `String` per call
    /// (a measurable share of a batch append's CPU, docs/BENCHMARKS.md).
    /// Same output as `time`'s `[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z` (a property test holds them together).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .filter(|t| (0..=9999).contains(&t.year()));
        let Some(t) = t else {
            // Outside what RFC 3339 can say (before year 0, after 9999):
            // the raw ms, rather than a panic in `to_string`.
            return write!(f, "{}ms", self.0);
        };
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, t.year() as u32);
        put(5, 2, u8::from(t.month()).into());
        put(8, 2, t.day().into());
        put(11, 2, t.hour().into());
        put(14, 2, t.minute().into());
        put(17, 2, t.second().into());
        put(20, 3, t.millisecond().into());
        // Every byte written above is an ASCII digit or separator.
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some("RFC 3339, UTC, milliseconds"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;

    /// The wire form: RFC 3339 in UTC with exactly three fractional digits.
    const WIRE: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

    #[test]
    fn formats_rfc3339_with_millis() {
        let t = Timestamp::parse("2026-04-07T21:13:45.123Z").expect("parse");
        assert_eq!(t.to_string(), "2026-04-07T21:13:45.123Z");
        let t = Timestamp::parse("2026-04-07T23:13:45.5+02:00").expect("parse");
        assert_eq!(t.to_string(), "2026-04-07T21:13:45.500Z");
    }

    #[test]
    fn now_agrees_with_the_time_crate() {
        let before = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let now = Timestamp::now().as_millis() as i128;
        let after = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse("yesterday").is_err());
    }

    proptest::proptest! {
        #[test]
        fn round_trips(ms in 0i64..4_102_444_800_000) {
            let t = Timestamp(ms);
            proptest::prop_assert_eq!(Timestamp::parse(&t.to_string()).expect("parse"), t);
        }

        #[test]
        fn formats_as_the_time_crate_does(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let by_time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .expect("in range")
                .format(WIRE)
                .expect("format");
            proptest::prop_assert_eq!(Timestamp(ms).to_string(), by_time);
        }
    }
}
