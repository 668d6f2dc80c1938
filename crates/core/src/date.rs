//! Calendar months, without a clock: the caller says what "now" is.

/// A calendar month, ordered in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// The UTC month containing `unix_seconds`.
    pub fn from_unix(unix_seconds: u64) -> Self {
        // Howard Hinnant's civil_from_days, restricted to dates after 1970.
        let days = (unix_seconds / 86_400) as i64;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year: year as u16,
            month: month as u8,
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
    }
}
