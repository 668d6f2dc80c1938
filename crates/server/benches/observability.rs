//! What every request pays for being observed, the library's way against the vault's:
//!
//! - `log_line/*`: the request's span and log line as `request_context` writes them (the span
//!   made with the request's id and method, the app recorded, the line written in it, the span
//!   closed), in `tracing-subscriber`'s default text format and in the vault's
//!   (`logging::TextLine`), both behind the default filter and writing to a sink;
//! - `histogram/*`: the ten latency samples a proxy call records (its stages and the request),
//!   into the Prometheus exporter's histogram and into the vault's (`metrics::LatencyHistogram`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use cardvault_server::logging::{TextFields, TextLine};
use cardvault_server::metrics::LatencyHistogram;
use criterion::{Criterion, criterion_group, criterion_main};
use tracing_subscriber::EnvFilter;

const FILTER: &str = "info,hyper=warn,h2=warn,rustls=warn,sqlx=warn,reqwest=warn";

fn one_request(id: &str, method: &http::Method) {
    let span =
        tracing::info_span!("request", request_id = %id, %method, app = tracing::field::Empty);
    {
        let _entered = span.enter();
        tracing::Span::current().record("app", "app_0193a5c27d1e");
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
    let vault = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(FILTER))
        .with_writer(std::io::sink)
        .with_ansi(false)
        .fmt_fields(TextFields)
        .event_format(TextLine)
        .finish();
    tracing::subscriber::with_default(vault, || {
        c.bench_function("log_line/vault_format", |b| {
            b.iter(|| one_request(black_box(id), &method))
        });
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
