//! Latency histograms kept as bucket counts: a sample is two relaxed atomic adds on the
//! recording thread's own counters, and the buckets are summed only when scraped.
//!
//! The exporter's histograms keep every sample in a lock-free list until the next upkeep sorts
//! them into buckets: an epoch guard and a clock read a sample, an allocation every few dozen.
//! A proxy call records ten (its stages and the request), ~1 % of its CPU at saturation that
//! way (docs/benchmarks.md, issue 17's sixteenth step).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thread_local::ThreadLocal;

/// Upper bounds (inclusive, as Prometheus's `le`) of the buckets, in nanoseconds (compared
/// without floating point when recording): from 100 µs (a cached auth, a render) to 30 s (a
/// slow processor), dense around the millisecond the vault's own work is measured in.
const BUCKET_BOUNDS_NANOS: [u64; 17] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// The same bounds in seconds, as the exposition gives them.
pub const BUCKET_BOUNDS_SECONDS: [f64; 17] = in_seconds(BUCKET_BOUNDS_NANOS);

const fn in_seconds(nanos: [u64; 17]) -> [f64; 17] {
    let mut seconds = [0.0; 17];
    let mut i = 0;
    while i < nanos.len() {
        // Both exact in f64, so the quotient is the double nearest the decimal bound.
        seconds[i] = nanos[i] as f64 / 1e9;
        i += 1;
    }
    seconds
}

/// The buckets and a last one for samples above every bound (`+Inf`).
const SLOTS: usize = BUCKET_BOUNDS_NANOS.len() + 1;

/// The most a sample adds to the sum: an hour. Nothing the vault times lasts that long, and
/// an absurd duration must not wrap the sum (which a scraper would take for a reset).
const LONGEST_SUMMED_NANOS: u64 = 3_600_000_000_000;

/// One series (a name and its labels): durations counted by bucket.
#[derive(Default)]
pub struct LatencyHistogram {
    threads: ThreadLocal<Counts>,
}

/// One thread's counts, aligned so that two threads recording never write the same cache line
/// (the threads' entries are side by side in one allocation).
#[derive(Default)]
#[repr(align(128))]
struct Counts {
    by_bucket: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
}

/// The series' totals at one moment: per bucket (not cumulative), and the sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub by_bucket: [u64; SLOTS],
    pub sum_seconds: f64,
}

impl Totals {
    pub fn count(&self) -> u64 {
        self.by_bucket.iter().sum()
    }
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKET_BOUNDS_NANOS.partition_point(|bound| *bound < nanos);
        let counts = self.threads.get_or_default();
        counts.by_bucket[slot].fetch_add(1, Ordering::Relaxed);
        counts
            .sum_nanos
            .fetch_add(nanos.min(LONGEST_SUMMED_NANOS), Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            by_bucket: [0; SLOTS],
            sum_seconds: 0.0,
        };
        let mut sum_nanos: u128 = 0;
        for counts in self.threads.iter() {
            for (total, count) in totals.by_bucket.iter_mut().zip(&counts.by_bucket) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos += u128::from(counts.sum_nanos.load(Ordering::Relaxed));
        }
        totals.sum_seconds = sum_nanos as f64 / 1e9;
        totals
    }
}

/// A histogram metric: its name, help text and series, in the order they were first used.
pub struct Family {
    name: &'static str,
    help: &'static str,
    series: Mutex<Vec<Series>>,
}

struct Series {
    labels: Vec<(&'static str, String)>,
    histogram: Arc<LatencyHistogram>,
}

impl Family {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            series: Mutex::new(Vec::new()),
        }
    }

    /// The series with exactly these labels, made the first time they are asked for. Callers
    /// keep the handle: this takes a lock and compares labels.
    pub fn series(&self, labels: &[(&'static str, &str)]) -> Arc<LatencyHistogram> {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let same = |s: &&Series| {
            s.labels.len() == labels.len()
                && s.labels
                    .iter()
                    .zip(labels)
                    .all(|((n1, v1), (n2, v2))| n1 == n2 && v1 == v2)
        };
        if let Some(found) = series.iter().find(same) {
            return found.histogram.clone();
        }
        let histogram = Arc::new(LatencyHistogram::default());
        series.push(Series {
            labels: labels.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
            histogram: histogram.clone(),
        });
        histogram
    }

    /// Appends the family in the text exposition format (0.0.4); nothing while it has no
    /// series.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() {
            return;
        }
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for one in series.iter() {
            let labels = label_text(&one.labels);
            let totals = one.histogram.totals();
            let mut cumulative = 0;
            for (bound, count) in BUCKET_BOUNDS_SECONDS.iter().zip(&totals.by_bucket) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
            }
            let count = totals.count();
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
            let labels = labels.trim_end_matches(',');
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", totals.sum_seconds);
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
        out.push('\n');
    }
}

/// `name="value",` for each label, values escaped as the format requires.
fn label_text(labels: &[(&'static str, String)]) -> String {
    let mut text = String::new();
    for (name, value) in labels {
        text.push_str(name);
        text.push_str("=\"");
        for ch in value.chars() {
            match ch {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                other => text.push(other),
            }
        }
        text.push_str("\",");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{BUCKET_BOUNDS_SECONDS, Family, LatencyHistogram};

    #[test]
    fn the_bounds_read_as_their_decimals_in_seconds() {
        let written: Vec<String> = BUCKET_BOUNDS_SECONDS.iter().map(f64::to_string).collect();
        assert_eq!(
            written,
            [
                "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30"
            ]
        );
    }

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bucket_and_one_above_in_the_next() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_nanos(100_001));
        histogram.record(Duration::ZERO);
        histogram.record(Duration::from_secs(30));
        histogram.record(Duration::from_secs(31));
        histogram.record(Duration::MAX);
        let totals = histogram.totals();
        assert_eq!(totals.by_bucket[0], 2, "{totals:?}");
        assert_eq!(totals.by_bucket[1], 1, "{totals:?}");
        assert_eq!(totals.by_bucket[16], 1, "{totals:?}");
        assert_eq!(totals.by_bucket[17], 2, "{totals:?}");
        assert_eq!(totals.count(), 6);
        // The longest sample adds an hour to the sum, not a wrapped-around remainder.
        let expected = 0.0001 + 0.000_100_001 + 30.0 + 31.0 + 3600.0;
        assert!((totals.sum_seconds - expected).abs() < 1e-6, "{totals:?}");
    }

    #[test]
    fn samples_from_several_threads_are_all_counted() {
        let histogram = std::sync::Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let histogram = histogram.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        histogram.record(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let totals = histogram.totals();
        assert_eq!(totals.by_bucket[2], 4000);
        assert_eq!(totals.count(), 4000);
        assert!(
            (totals.sum_seconds - 1.2).abs() < 1e-9,
            "{}",
            totals.sum_seconds
        );
    }

    #[test]
    fn a_family_renders_cumulative_buckets_a_sum_and_a_count_per_series() {
        let family = Family::new("test_seconds", "Test durations");
        let mut empty = String::new();
        family.render(&mut empty);
        assert_eq!(empty, "");

        let post = family.series(&[("route", "/proxy/transaction"), ("method", "POST")]);
        post.record(Duration::from_micros(200));
        post.record(Duration::from_millis(2));
        // Asked for again, the same series.
        family
            .series(&[("route", "/proxy/transaction"), ("method", "POST")])
            .record(Duration::from_secs(40));
        family
            .series(&[("route", "a\"b\\c\nd"), ("method", "GET")])
            .record(Duration::from_micros(50));
        let mut text = String::new();
        family.render(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP test_seconds Test durations");
        assert_eq!(lines[1], "# TYPE test_seconds histogram");
        assert_eq!(
            lines[2],
            "test_seconds_bucket{route=\"/proxy/transaction\",method=\"POST\",le=\"0.0001\"} 0"
        );
        assert!(lines.contains(
            &"test_seconds_bucket{route=\"/proxy/transaction\",method=\"POST\",le=\"0.00025\"} 1"
        ));
        assert!(lines.contains(
            &"test_seconds_bucket{route=\"/proxy/transaction\",method=\"POST\",le=\"30\"} 2"
        ));
        assert!(lines.contains(
            &"test_seconds_bucket{route=\"/proxy/transaction\",method=\"POST\",le=\"+Inf\"} 3"
        ));
        assert!(
            lines.contains(
                &"test_seconds_sum{route=\"/proxy/transaction\",method=\"POST\"} 40.0022"
            )
        );
        assert!(
            lines.contains(&"test_seconds_count{route=\"/proxy/transaction\",method=\"POST\"} 3")
        );
        assert!(lines.contains(&"test_seconds_count{route=\"a\\\"b\\\\c\\nd\",method=\"GET\"} 1"));
        // Two series: 17 bounds, +Inf, sum and count each; a blank line ends the family.
        assert_eq!(lines.len(), 2 + 2 * 20 + 1, "{text}");
        assert_eq!(lines.last(), Some(&""));
    }
}
