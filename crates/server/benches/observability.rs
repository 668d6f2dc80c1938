//! What every request pays for being observed, the library's way against the vault's:
//!
//! - `log_line/*`: the request's span and log line as `request_context` writes them (the span
//!   made with the request's id and method, the app recorded, the span entered at the call's
//!   polls, the line written in it, the span closed), in `tracing-subscriber`'s default text
//!   format and in the vault's (`logging::TextLine`), both writing to a sink; the vault's
//!   behind `EnvFilter` (the filter `RUST_LOG` gives) and behind its own filter by target
//!   (`logging::by_target`), on one thread and on two at once (`*_two_threads`: each thread's
//!   call, the wall time of both running side by side, as the two serving threads do). The two
//!   threads share a scoped dispatcher, whose every span also counts a reference on one shared
//!   count (the vault's global one has none): their absolute figures are above the vault's, and
//!   what they show is the difference between the two filters;
//! - `histogram/*`: the ten latency samples a proxy call records (its stages and the request),
//!   into the Prometheus exporter's histogram and into the vault's (`metrics::LatencyHistogram`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cardvault_server::config::LogLevel;
use cardvault_server::logging::{by_target, text_lines};
use cardvault_server::metrics::LatencyHistogram;
use criterion::{Criterion, criterion_group, criterion_main};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

const FILTER: &str = "info,hyper=warn,h2=warn,rustls=warn,sqlx=warn,reqwest=warn";

fn one_request(id: &str, method: &http::Method) {
    let span =
        tracing::info_span!("request", request_id = %id, %method, app = tracing::field::Empty);
    {
        let _entered = span.enter();
        tracing::Span::current().record("app", "app_0193a5c27d1e");
    }
    // The frame enters the span at each poll of the call (about three on a proxy call: the
    // request, the audit turn, the processor's answer) and as it drops the finished call.
    for _ in 0..4 {
        let _entered = black_box(span.enter());
    }
    span.in_scope(|| {
        tracing::info!(
            route = black_box("/proxy/transaction"),
            status = 200u16,
            latency_us = black_box(1234u64),
            "request completed"
        );
    });
}

fn log_line(c: &mut Criterion) {
    let id = "0193a5c2-7d1e-7000-8000-0123456789ab";
    let method = http::Method::POST;
    let library = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(FILTER))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(library, || {
        c.bench_function("log_line/library_format", |b| {
            b.iter(|| one_request(black_box(id), &method))
        });
    });
    timed_alone_and_in_pairs(c, "vault_format", vault_lines(EnvFilter::new(FILTER)));
    timed_alone_and_in_pairs(
        c,
        "vault_format_by_target",
        vault_lines(by_target(LogLevel::Info)),
    );
}

/// The vault's text lines to a sink behind `filter`, as `logging::init` installs them.
fn vault_lines<F: Layer<Registry> + Send + Sync + 'static>(filter: F) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry()
            .with(filter)
            .with(text_lines(std::io::sink)),
    )
}

/// `log_line/NAME` on one thread, and `log_line/NAME_two_threads`: two threads serving
/// `calls` requests each at once, the wall time over `calls`.
fn timed_alone_and_in_pairs(c: &mut Criterion, name: &str, dispatch: Dispatch) {
    let id = "0193a5c2-7d1e-7000-8000-0123456789ab";
    let method = http::Method::POST;
    tracing::dispatcher::with_default(&dispatch, || {
        c.bench_function(&format!("log_line/{name}"), |b| {
            b.iter(|| one_request(black_box(id), &method))
        });
    });
    c.bench_function(&format!("log_line/{name}_two_threads"), |b| {
        b.iter_custom(|calls| {
            let started = Instant::now();
            std::thread::scope(|threads| {
                for _ in 0..2 {
                    threads.spawn(|| {
                        tracing::dispatcher::with_default(&dispatch, || {
                            for _ in 0..calls {
                                one_request(black_box(id), &method);
                            }
                        })
                    });
                }
            });
            started.elapsed()
        })
    });
}

/// A call's ten samples: about what the stages of a proxy call take on a loopback processor.
const SAMPLES: [Duration; 10] = [
    Duration::from_micros(8),
    Duration::from_micros(2),
    Duration::from_micros(35),
    Duration::from_micros(1),
    Duration::from_micros(4),
    Duration::from_micros(188),
    Duration::from_micros(8),
    Duration::from_micros(81),
    Duration::from_micros(3),
    Duration::from_micros(390),
];

fn histogram(c: &mut Criterion) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&cardvault_server::metrics::BUCKET_BOUNDS_SECONDS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let exporters: Vec<metrics::Histogram> = metrics::with_local_recorder(&recorder, || {
        (0..SAMPLES.len())
            .map(|i| metrics::histogram!("stage_seconds", "stage" => i.to_string()))
            .collect()
    });
    // The exporter keeps the samples until its upkeep sorts them into buckets (every 5 s, on a
    // thread of its own in the vault): run here, not timed, between timed stretches of 10,000
    // calls (the vault serves up to ~100,000 between two upkeeps).
    c.bench_function("histogram/exporter", |b| {
        b.iter_custom(|calls| {
            let mut timed = Duration::ZERO;
            let mut left = calls;
            while left > 0 {
                let stretch = left.min(10_000);
                let started = std::time::Instant::now();
                for _ in 0..stretch {
                    for (histogram, sample) in exporters.iter().zip(SAMPLES) {
                        histogram.record(black_box(sample).as_secs_f64());
                    }
                }
                timed += started.elapsed();
                left -= stretch;
                handle.run_upkeep();
            }
            timed
        })
    });
    let vault: Vec<LatencyHistogram> = SAMPLES
        .iter()
        .map(|_| LatencyHistogram::default())
        .collect();
    c.bench_function("histogram/vault", |b| {
        b.iter(|| {
            for (histogram, sample) in vault.iter().zip(SAMPLES) {
                histogram.record(black_box(sample));
            }
        })
    });
}

criterion_group!(benches, log_line, histogram);
criterion_main!(benches);
