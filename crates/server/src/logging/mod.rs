//! Structured logs to stderr, as text or JSON.

mod text;

pub use text::{TextFields, TextLine};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init(format: LogFormat, level: LogLevel) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},hyper=warn,h2=warn,rustls=warn,sqlx=warn,reqwest=warn",
            level.as_str()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(text::TextFields)
            .event_format(text::TextLine)
            .try_init(),
    };
    // The default hook prints the panic message, which could quote a value; log only where.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(location = location.as_deref().unwrap_or("unknown"), "panic");
    }));
}
