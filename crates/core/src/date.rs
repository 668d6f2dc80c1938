//! Calendar months, without a clock: the caller says what "now" is.

/// A calendar month, ordered in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// The UTC month containing `unix_seconds`. A year past `u16::MAX` (an instant some 2·10¹²
    /// seconds ahead, which no real clock reports) saturates at `u16::MAX`.
    pub fn from_unix(unix_seconds: u64) -> Self {
        // Howard Hinnant's civil_from_days, restricted to dates after 1970: every quantity is
        // then non-negative, so unsigned arithmetic computes the same values without casts.
        let days = unix_seconds / 86_400;
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        Self {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            // Invariant: `month` is 1..=12 (`mp` is 0..=11), so the fallback is never taken.
            month: u8::try_from(month).unwrap_or(12),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_instants() {
        assert_eq!(
            YearMonth::from_unix(0),
            YearMonth {
                year: 1970,
                month: 1
            }
        );
        // 2026-11-25T17:40:00Z
        assert_eq!(
            YearMonth::from_unix(1_795_628_400),
            YearMonth {
                year: 2026,
                month: 11
            }
        );
        // 2024-02-29T23:59:59Z, a leap day
        assert_eq!(
            YearMonth::from_unix(1_709_251_199),
            YearMonth {
                year: 2024,
                month: 2
            }
        );
        // 2024-03-01T00:00:00Z
        assert_eq!(
            YearMonth::from_unix(1_709_251_200),
            YearMonth {
                year: 2024,
                month: 3
            }
        );
        // 9999-12-31T23:59:59Z
        assert_eq!(
            YearMonth::from_unix(253_402_300_799),
            YearMonth {
                year: 9999,
                month: 12
            }
        );
    }

    #[test]
    fn years_past_u16_saturate() {
        assert_eq!(YearMonth::from_unix(u64::MAX).year, u16::MAX);
    }
}
