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

/// `0000-01-01T00:00:00.000Z`, the first instant RFC 3339 can write.
const FIRST_MS: i64 = -62_167_219_200_000;
/// `9999-12-31T23:59:59.999Z`, the last.
const LAST_MS: i64 = 253_402_300_799_999;
const DAY_MS: i64 = 86_400_000;

impl Timestamp {
    /// The wire form as ASCII bytes (`2026-04-07T21:13:45.123Z`, 24
    /// bytes), or `None` outside the years 0–9999 that RFC 3339 can say.
    /// No byte needs escaping in JSON: the event encoder writes them as
    /// they are.
    ///
    /// The calendar date comes from arithmetic on the day number (Howard
    /// Hinnant's `civil_from_days`, proleptic Gregorian), not from
    /// `time`'s `OffsetDateTime`, whose accessors each work out the date
    /// again: every event carries two timestamps, and that formatting was
    /// 6 % of a batch append's instructions (docs/BENCHMARKS.md, "The
    /// write path"). A property test holds the output to `time`'s.
    pub fn rfc3339_bytes(self) -> Option<[u8; 24]> {
        if !(FIRST_MS..=LAST_MS).contains(&self.0) {
            return None;
        }
        let (year, month, day) = civil_from_days(self.0.div_euclid(DAY_MS));
        let in_day = self.0.rem_euclid(DAY_MS);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1_000 % 60);
        put(20, 3, in_day % 1_000);
        Some(b)
    }
}

/// `(year, month 1–12, day 1–31)` of the day `days` after 1970-01-01, in
/// the proleptic Gregorian calendar (Howard Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// `2026-04-07T21:13:45.123Z` ([`Timestamp::rfc3339_bytes`]), the same
    /// output as `time`'s `[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339_bytes() {
            // Every byte is an ASCII digit or separator.
            Some(b) => f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?),
            // Outside what RFC 3339 can say (before year 0, after 9999):
            // the raw ms, rather than a panic in `to_string`.
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    /// The wire form as one string, without `collect_str`'s trip through
    /// the formatter (views and API bodies carry many timestamps).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339_bytes() {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).map_err(serde::ser::Error::custom)?),
            None => s.collect_str(self),
        }
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
    fn formats_the_edges_of_rfc3339_and_falls_back_outside_them() {
        assert_eq!(Timestamp(FIRST_MS).to_string(), "0000-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(LAST_MS).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2000 is a leap year (divisible by 400), 2100 is not (by 100).
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp(4_107_542_400_000).to_string(),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(Timestamp(FIRST_MS - 1).to_string(), "-62167219200001ms");
        assert_eq!(Timestamp(LAST_MS + 1).to_string(), "253402300800000ms");
        assert_eq!(Timestamp(LAST_MS + 1).rfc3339_bytes(), None);
    }

    #[test]
    fn serializes_as_its_display_in_and_out_of_range() {
        for ms in [
            FIRST_MS - 1,
            FIRST_MS,
            -1,
            0,
            1_775_596_425_123,
            LAST_MS,
            LAST_MS + 1,
        ] {
            let t = Timestamp(ms);
            assert_eq!(
                serde_json::to_string(&t).expect("serialize"),
                format!("\"{t}\"")
            );
        }
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
