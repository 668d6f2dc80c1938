use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use super::{TextFields, TextLine, civil_date, rfc3339_micros};

/// Lines written by a subscriber under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// What the library's default text format writes for `events`.
fn as_the_library_writes(events: fn()) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, events);
    out.text()
}

/// What the vault's text format writes for `events`.
fn as_the_vault_writes(events: fn()) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(Level::TRACE)
        .fmt_fields(TextFields)
        .event_format(TextLine)
        .finish();
    tracing::subscriber::with_default(subscriber, events);
    out.text()
}

/// `text` with every timestamp (`2026-12-05T23:50:00.123456Z`) replaced by `<time>`, and the
/// number of them.
fn without_timestamps(text: &str) -> (String, usize) {
    const SHAPE: &[u8; 27] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let matches_at = |bytes: &[u8]| {
        bytes.len() >= SHAPE.len()
            && SHAPE.iter().zip(bytes).all(|(want, got)| match want {
                b'd' => got.is_ascii_digit(),
                other => got == other,
            })
    };
    let bytes = text.as_bytes();
    let (mut out, mut found, mut at) = (Vec::new(), 0, 0);
    while at < bytes.len() {
        if matches_at(&bytes[at..]) {
            out.extend_from_slice(b"<time>");
            found += 1;
            at += SHAPE.len();
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    (String::from_utf8(out).unwrap(), found)
}

#[derive(Debug)]
struct Refused {
    because: io::Error,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.because)
    }
}

/// Every shape of event and span the vault's code logs, and the awkward values a field can
/// hold.
fn every_kind_of_event() {
    tracing::info!("outside any span");
    tracing::warn!(
        count = 3u64,
        negative = -7i64,
        flag = true,
        ratio = 0.5f64,
        large = u128::MAX,
        "numbers and a bool"
    );
    let request = tracing::info_span!(
        "request",
        request_id = %"0193a5c2-7d1e-7000-8000-0123456789ab",
        method = %http::Method::POST,
        app = tracing::field::Empty
    );
    {
        let _in_request = request.enter();
        tracing::info!(
            route = "/proxy/transaction",
            status = 200u64,
            latency_us = 1234u64,
            "request completed"
        );
        request.record("app", "app_1");
        tracing::info!(route = "/tokens/{token}", "the app recorded later");
        let bare = tracing::debug_span!("bare");
        let _in_bare = bare.enter();
        let later = tracing::trace_span!("later", step = tracing::field::Empty);
        let _in_later = later.enter();
        tracing::error!(
            plain = "abc",
            quoted = "say \"hi\"",
            backslash = r"a\b",
            newline = "a\nb",
            tab = "a\tb",
            unicode = "café ✓",
            control = "\u{1b}[31m",
            nul = "a\0b",
            empty = "",
            "strings of every kind"
        );
        later.record("step", 2u64);
        tracing::debug!("after a field recorded on an empty span");
    }
    tracing::info!(r#type = "raw identifier", "a raw identifier");
    tracing::info!(
        log.target = "left out",
        log.line = 3u64,
        kept = 1u64,
        "a log record's metadata"
    );
    tracing::warn!(
        "control \u{1b}[2J escape, \u{7} bell, \u{8} backspace, \u{c} form feed, \u{7f} delete, \u{85} next line, \u{9b} csi; a\nnewline and a \"quote\""
    );
    tracing::info!(message = "a message given as a field \u{1b}");
    tracing::info!(shown = %"displayed", debugged = ?vec![1, 2], "display and debug");
    let refused = Refused {
        because: io::Error::other("no route"),
    };
    tracing::warn!(
        error = &refused as &(dyn std::error::Error + 'static),
        "an error with a source"
    );
    tracing::info!(only = 1u64);
    tracing::info!(message = 5u64);
    tracing::info!(message = -1i64, after = true);
    tracing::info!(message = true);
    tracing::trace!("trace");
    // A record of the `log` crate (rustls logs so), as the bridge hands it over: its target,
    // file and line in fields the line leaves out.
    tracing_log::format_trace(
        &tracing_log::log::Record::builder()
            .args(format_args!("a record of the log crate"))
            .level(tracing_log::log::Level::Warn)
            .target("rustls::client::hs")
            .module_path(Some("rustls::client::hs"))
            .file(Some("src/client/hs.rs"))
            .line(Some(42))
            .build(),
    )
    .unwrap();
}

#[test]
fn lines_are_the_libraries_own_to_the_byte() {
    let (library, library_times) = without_timestamps(&as_the_library_writes(every_kind_of_event));
    let (vault, vault_times) = without_timestamps(&as_the_vault_writes(every_kind_of_event));
    assert_eq!(vault, library);
    // One timestamp a line, in the library's shape (a message holds one newline).
    assert_eq!(vault_times, library.lines().count() - 1);
    assert_eq!(vault_times, library_times);
    // The comparison saw the lines that matter.
    assert!(
        vault.contains(
            "request{request_id=0193a5c2-7d1e-7000-8000-0123456789ab method=POST app=\"app_1\"}: "
        ),
        "{vault}"
    );
    assert!(vault.contains("\\x1b[2J"), "{vault}");
    assert!(vault.contains("error.sources=[no route]"), "{vault}");
    assert!(
        vault.contains(" WARN rustls::client::hs: a record of the log crate\n"),
        "{vault}"
    );
    assert!(vault.contains(": -1 after=true\n"), "{vault}");
}

#[test]
fn the_timestamp_is_the_time_now() {
    let before = SystemTime::now();
    let written = as_the_vault_writes(|| tracing::info!("now"));
    let after = SystemTime::now();
    let stamp = &written[..27];
    let floor = |t: SystemTime| {
        let micros = t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        UNIX_EPOCH + Duration::from_micros(micros)
    };
    let earliest = String::from_utf8(rfc3339_micros(floor(before)).unwrap().to_vec()).unwrap();
    let latest = String::from_utf8(rfc3339_micros(floor(after)).unwrap().to_vec()).unwrap();
    // Same width, so the text orders as the time does.
    assert!(
        earliest.as_str() <= stamp && stamp <= latest.as_str(),
        "{earliest} {stamp} {latest}"
    );
}

#[test]
fn timestamps_of_known_instants() {
    let at = |seconds: u64, micros: u64| {
        let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
        rfc3339_micros(time).map(|t| String::from_utf8(t.to_vec()).unwrap())
    };
    assert_eq!(at(0, 0).unwrap(), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        at(951_782_399, 999_999).unwrap(),
        "2000-02-28T23:59:59.999999Z"
    );
    assert_eq!(at(951_782_400, 1).unwrap(), "2000-02-29T00:00:00.000001Z");
    assert_eq!(at(1_000_000_000, 0).unwrap(), "2001-09-09T01:46:40.000000Z");
    assert_eq!(
        at(1_234_567_890, 123_456).unwrap(),
        "2009-02-13T23:31:30.123456Z"
    );
    // 2100 is not a leap year.
    assert_eq!(at(4_107_456_000, 0).unwrap(), "2100-02-28T00:00:00.000000Z");
    assert_eq!(at(4_107_542_400, 0).unwrap(), "2100-03-01T00:00:00.000000Z");
    assert_eq!(
        at(253_402_300_799, 0).unwrap(),
        "9999-12-31T23:59:59.000000Z"
    );
    // Past 9999 the library's own format (a sign, five digits) is used.
    assert_eq!(at(253_402_300_800, 0), None);
    assert_eq!(rfc3339_micros(UNIX_EPOCH - Duration::from_secs(1)), None);
}

#[test]
fn dates_agree_with_counting_the_days_one_by_one() {
    let (mut year, mut month, mut day) = (1970, 1, 1);
    for days in 0..200_000 {
        assert_eq!(civil_date(days), (year, month, day), "day {days}");
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        day += 1;
        if day > month_days {
            day = 1;
            month += 1;
            if month > 12 {
                month = 1;
                year += 1;
            }
        }
    }
}
