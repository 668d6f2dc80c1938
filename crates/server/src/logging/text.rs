//! The text log format, written out directly: line for line what `tracing-subscriber`'s
//! default format writes without colours (`Format<Full>` with `DefaultFields`), the same
//! escaping included, for about half the CPU. Every request writes one of these lines, and the
//! library's version spent most of its time in `core::fmt` machinery (padding, `Debug` of
//! plain strings a character at a time): ~2 µs of a proxy call's CPU at saturation
//! (docs/benchmarks.md, issue 17's sixteenth step). Values the fast paths do not cover
//! (errors with sources, strings that need escaping) go through the library's own code.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter: timestamp, level, the spans' names and fields, target, fields.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record (rustls logs through `log`) carries its real target in its fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_timestamp(&mut writer)?;
        writer.write_char(' ')?;
        writer.write_str(level_column(meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The level, padded to five characters, and the space after it.
fn level_column(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

/// The time now as RFC 3339 in UTC to the microsecond (`2026-12-05T23:50:00.123456Z`), as the
/// library writes it; a time it writes differently (before 1970, after 9999) is left to it.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let Some(text) = rfc3339_micros(SystemTime::now()) else {
        return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
    };
    // Only ASCII digits and separators were written.
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, for times from 1970 to 9999.
fn rfc3339_micros(time: SystemTime) -> Option<[u8; 27]> {
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    if year > 9999 {
        return None;
    }
    let of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], of_day / 3600);
    put_digits(&mut text[14..16], of_day % 3600 / 60);
    put_digits(&mut text[17..19], of_day % 60);
    put_digits(&mut text[20..26], u64::from(since_epoch.subsec_micros()));
    Some(text)
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded, into `out`.
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of the `days`-th day after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends each 400-year era's years.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The field formatter, for events and for the fields a span keeps: `name=value` separated by
/// spaces, the message bare and first.
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'writer> {
    writer: Writer<'writer>,
    is_empty: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// Writes the separator and `name=` for `field`; `false` for a field the line leaves out
    /// (a `log` record's metadata, shown as the target already) or after an error.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        self.result = self.separate().and_then(|()| {
            self.writer
                .write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.writer.write_char('=')
        });
        self.result.is_ok()
    }

    fn separate(&mut self) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer + fmt::Debug) {
        if field.name() == "message" {
            // Written bare, as any message.
            self.record_debug(field, &value);
        } else if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if needs_no_escaping(value) {
            // What `Debug` writes for a string with nothing to escape.
            if self.start(field) {
                self.result = self.writer.write_char('"').and_then(|()| {
                    self.writer.write_str(value)?;
                    self.writer.write_char('"')
                });
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The library's own: the error, then its sources as a list.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let mut library = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        library.record_error(field, value);
        self.result = library.finish();
        self.is_empty = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.result.is_err() {
                return;
            }
            self.result = self.separate().and_then(|()| {
                write!(
                    TerminalSafe {
                        inner: &mut self.writer
                    },
                    "{value:?}"
                )
            });
        } else if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// Whether `Debug` writes `value` as it is between quotes: printable ASCII with no quote or
/// backslash. Anything else is escaped by `Debug` itself.
fn needs_no_escaping(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Escapes what a terminal could take as a control sequence in a message (as the library does
/// since 0.3.20): ESC, BEL, BS, FF, DEL and the C1 controls.
struct TerminalSafe<'a, 'writer> {
    inner: &'a mut Writer<'writer>,
}

impl fmt::Write for TerminalSafe<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls (U+0080–U+009F) are 0xC2 0x80–0x9F in UTF-8.
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.inner.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.inner.write_str("\\x1b")?,
                '\x07' => self.inner.write_str("\\x07")?,
                '\x08' => self.inner.write_str("\\x08")?,
                '\x0c' => self.inner.write_str("\\x0c")?,
                '\x7f' => self.inner.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.inner, "\\u{{{:x}}}", ch as u32)?,
                _ => self.inner.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
