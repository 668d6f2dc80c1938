//! The wall clock, in the units stored rows and expiry checks use. Passed into core as values
//! ("today"), never read there, so the pure rules stay testable.

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `unix` seconds as an RFC 3339 UTC timestamp (`2026-12-03T09:15:00Z`), the form API answers
/// give times in.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// The latest instant [`rfc3339`] writes with a four-digit year: 9999-12-31T23:59:59Z.
pub const LATEST_RFC3339: i64 = 253_402_300_799;

/// Reads an RFC 3339 timestamp (`2026-12-03T09:15:00Z`, `2026-12-03T10:15:00.250+01:00`) as
/// unix seconds, a fraction of a second dropped. `None` for anything else: another layout, a
/// date that does not exist (February 30), a missing offset.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b.get(i) != Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    let mut rest = b.get(19..)?;
    if let Some((b'.', fraction)) = rest.split_first() {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = fraction.get(digits..)?;
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: &u8, b: &u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(h1, h2)?, two(m1, m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    // Second 60 is a leap second: RFC 3339 allows it, and it is read as the next minute's 0.
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{LATEST_RFC3339, parse_rfc3339, rfc3339};

    proptest! {
        #[test]
        fn every_instant_is_read_back(unix in 0..=LATEST_RFC3339) {
            prop_assert_eq!(parse_rfc3339(&rfc3339(unix)), Some(unix));
        }

        /// The fuzz target of the parser: whatever a caller sends, an instant or `None`.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,40}", stamp in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?") {
            let _ = parse_rfc3339(&text);
            let _ = parse_rfc3339(&stamp);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_290_500), "2026-12-03T09:35:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_is_read_back() {
        for unix in [0, 951_782_400, 1_796_290_500, 4_102_444_799, LATEST_RFC3339] {
            assert_eq!(parse_rfc3339(&rfc3339(unix)), Some(unix), "{unix}");
        }
        assert_eq!(
            parse_rfc3339("2026-12-03T10:35:00.999+01:00"),
            Some(1_796_290_500)
        );
        assert_eq!(
            parse_rfc3339("2026-12-03t04:05:00-05:30"),
            Some(1_796_290_500)
        );
        assert_eq!(parse_rfc3339("2026-12-03T09:34:60Z"), Some(1_796_290_500));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
    }

    #[test]
    fn anything_but_rfc3339_is_refused() {
        for text in [
            "",
            "2026-12-03",
            "2026-12-03T09:35:00",
            "2026-12-03 09:35:00Z",
            "2026-12-03T09:35Z",
            "2026-12-03T09:35:00.Z",
            "2026-12-03T09:35:00+0100",
            "2026-12-03T09:35:00+24:00",
            "2026-13-03T09:35:00Z",
            "2026-00-03T09:35:00Z",
            "2025-02-29T09:35:00Z",
            "2026-04-31T09:35:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T09:60:00Z",
            "2026-12-03T09:35:61Z",
            "+2026-12-03T09:35:00Z",
            "2026-12-03T09:35:00Zjunk",
            "１２３４-12-03T09:35:00Z",
            "1796290500",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
