//! A budget's sustained rate as an operator writes it: `500/s`, `30/min`, `5/h`, a bare number
//! (calls a second), or `off`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest time between two calls a budget can refill by: both backends count in whole
/// microseconds (Redis's clock), so `1000000/s` is the fastest rate.
const MIN_INTERVAL: Duration = Duration::from_micros(1);

/// How fast a budget refills, or no budget at all.
///
/// Invariant: a `Calls` rate refills at least one call per microsecond at most (`interval()` is
/// never zero) and `calls` is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Off,
    Calls { calls: u32, per: Period },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
}

impl Period {
    fn length(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "min",
            Self::Hour => "h",
        }
    }
}

/// A rate that does not parse; its text says what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate `{0}`: write calls per period, such as `100/s`, `30/min` or `5/h` (at least 1, \
     at most 1000000/s), or `off`"
)]
pub struct RateError(String);

impl Rate {
    /// `N/s`, `N/sec`, `N/second`, `N/min`, `N/minute`, `N/h`, `N/hour`, a bare `N` (a second),
    /// or `off`; `N` from 1 up to one call per microsecond. Zero is refused, not read as `off`:
    /// it could as well mean "nothing allowed", and guessing either way is worse than asking.
    ///
    /// # Errors
    /// [`RateError`] naming the text.
    pub fn parse(text: &str) -> Result<Self, RateError> {
        let refuse = || RateError(text.to_owned());
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        let (calls, unit) = trimmed.split_once('/').unwrap_or((trimmed, "s"));
        let calls: u32 = calls.trim().parse().map_err(|_| refuse())?;
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Period::Second,
            "min" | "minute" => Period::Minute,
            "h" | "hour" => Period::Hour,
            _ => return Err(refuse()),
        };
        Self::calls(u64::from(calls), per).ok_or_else(refuse)
    }

    fn calls(calls: u64, per: Period) -> Option<Self> {
        let calls = u32::try_from(calls).ok().filter(|c| *c >= 1)?;
        (per.length() / calls >= MIN_INTERVAL).then_some(Self::Calls { calls, per })
    }

    /// The time one call takes to refill; `None` for `off`.
    pub fn interval(self) -> Option<Duration> {
        match self {
            Self::Off => None,
            Self::Calls { calls, per } => Some(per.length() / calls.max(1)),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Calls { calls, per } => write!(f, "{calls}/{}", per.unit()),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // An environment variable's `100` arrives as a number, `100/s` as text.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Negative(i64),
            Fraction(f64),
            Text(String),
            Other(IgnoredAny),
        }
        let refuse = |shown: String| -> D::Error { de::Error::custom(RateError(shown)) };
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Rate::calls(n, Period::Second).ok_or_else(|| refuse(n.to_string())),
            Raw::Text(text) => Rate::parse(&text).map_err(de::Error::custom),
            Raw::Negative(n) => Err(refuse(n.to_string())),
            Raw::Fraction(n) => Err(refuse(n.to_string())),
            Raw::Other(_) => Err(refuse("…".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_every_written_form() {
        let cases = [
            ("500/s", "500/s", Duration::from_millis(2)),
            (" 30 / min ", "30/min", Duration::from_secs(2)),
            ("5/hour", "5/h", Duration::from_secs(720)),
            ("1/h", "1/h", Duration::from_secs(3600)),
            ("20", "20/s", Duration::from_millis(50)),
            ("1000000/s", "1000000/s", Duration::from_micros(1)),
        ];
        for (text, shown, interval) in cases {
            let rate = Rate::parse(text).unwrap();
            assert_eq!(rate.to_string(), shown, "{text}");
            assert_eq!(rate.interval(), Some(interval), "{text}");
            assert_eq!(Rate::parse(shown), Ok(rate), "{text} round trips");
        }
        assert_eq!(Rate::parse("OFF"), Ok(Rate::Off));
        assert_eq!(Rate::Off.interval(), None);
    }

    #[test]
    fn zero_junk_and_impossible_speeds_are_refused() {
        for text in [
            "0",
            "0/s",
            "-1/s",
            "1.5/s",
            "fast",
            "5/week",
            "/s",
            "",
            "1000001/s",
            "5/s/s",
        ] {
            let error = Rate::parse(text).unwrap_err().to_string();
            assert!(
                error.contains("`100/s`") && error.contains("`off`"),
                "{error}"
            );
        }
    }
}
