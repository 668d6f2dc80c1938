//! Structured logs to stderr, as text or JSON (a serving thread's info lines in batches: see
//! [`BatchedStderr`]).

mod batched;
mod text;

pub use batched::{BatchedStderr, flush_this_thread};
pub use text::{TextFields, TextLine};

use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

use crate::config::{LogFormat, LogLevel};

/// The libraries whose lines below a warning are noise in the vault's log, whatever its level.
const QUIET_LIBRARIES: [&str; 5] = ["hyper", "h2", "rustls", "sqlx", "reqwest"];

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init(format: LogFormat, level: LogLevel) {
    match EnvFilter::try_from_default_env() {
        Ok(from_env) => install(from_env, format),
        Err(_) => install(by_target(level), format),
    }
    // The default hook prints the panic message, which could quote a value; log only where.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(location = location.as_deref().unwrap_or("unknown"), "panic");
    }));
}

/// `level` for the vault's lines, warnings and errors only from [`QUIET_LIBRARIES`]: decided
/// once per call site. `EnvFilter` decides the same lines but also follows every span, for
/// directives that name spans (which only `RUST_LOG` can give): a lock all serving threads
/// share, taken as the request's span is made, entered and left at each poll, recorded and
/// closed (docs/benchmarks.md, issue 17's thirtieth step).
pub fn by_target(level: LogLevel) -> Targets {
    let quiet = QUIET_LIBRARIES.map(|library| (library, LevelFilter::WARN));
    Targets::new()
        .with_default(level_filter(level))
        .with_targets(quiet)
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

fn install<F>(filter: F, format: LogFormat)
where
    F: Layer<Registry> + Send + Sync + 'static,
{
    let filtered = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => filtered
            .with(
                fmt::layer()
                    .with_writer(BatchedStderr)
                    .json()
                    .flatten_event(true),
            )
            .try_init(),
        LogFormat::Text => filtered.with(text_lines(BatchedStderr)).try_init(),
    };
}

/// The vault's text lines (`TextLine`, `TextFields`, no colours), written to `writer`.
pub fn text_lines<S, W>(writer: W) -> fmt::Layer<S, TextFields, TextLine, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .fmt_fields(TextFields)
        .event_format(TextLine)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn the_vaults_lines_follow_the_level_and_the_libraries_stay_at_warnings() {
        let info = by_target(LogLevel::Info);
        assert!(info.would_enable("cardvault_server::api", &Level::INFO));
        assert!(!info.would_enable("cardvault_server::api", &Level::DEBUG));
        for library in [
            "hyper",
            "hyper_util::client::legacy",
            "h2::proto",
            "rustls",
            "sqlx::query",
            "reqwest",
        ] {
            assert!(info.would_enable(library, &Level::WARN), "{library}");
            assert!(!info.would_enable(library, &Level::INFO), "{library}");
        }
        let trace = by_target(LogLevel::Trace);
        assert!(trace.would_enable("cardvault_server::store", &Level::TRACE));
        assert!(!trace.would_enable("h2::codec", &Level::DEBUG));
        let error = by_target(LogLevel::Error);
        assert!(!error.would_enable("cardvault_server::api", &Level::WARN));
        assert!(error.would_enable("cardvault_server::api", &Level::ERROR));
    }

    #[test]
    fn the_highest_level_a_line_may_have_is_the_one_the_environments_filter_gave() {
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            let directives = format!(
                "{},{}",
                level.as_str(),
                QUIET_LIBRARIES.map(|l| format!("{l}=warn")).join(",")
            );
            let by_env = EnvFilter::new(&directives);
            let hint = by_target(level);
            assert_eq!(
                by_env.max_level_hint(),
                Layer::<Registry>::max_level_hint(&hint),
                "{directives}"
            );
        }
    }
}
