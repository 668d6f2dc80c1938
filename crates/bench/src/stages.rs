//! Where a call's time goes, from the vault's own `/metrics`: the proxy's stage histograms and
//! the request-duration histogram, read before and after a run; the difference of their sums
//! over the difference of their counts is each stage's mean time per call in that run, and the
//! difference of a bucket's counts says how many calls were slow in it.

use std::collections::HashMap;

use cardvault_server::metrics::Stage;

/// The bearer token the benchmark's vaults serve `/metrics` with (metrics on, as in production).
pub const METRICS_TOKEN: &str = "bench-metrics-token-0123456789";

/// The proxy's stages, in the order a call runs through them.
pub fn names() -> [&'static str; 9] {
    Stage::ALL.map(Stage::label)
}

/// One scrape: each sample's value by its name with labels, as exposed.
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub async fn take(client: &reqwest::Client, base_url: &str) -> Option<Self> {
        let text = client
            .get(format!("{base_url}/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(Self::parse(&text))
    }

    fn parse(exposition: &str) -> Self {
        Self(
            exposition
                .lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (name, value) = line.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// The bound above which a call counts as slow (one of the histograms' bucket bounds): at
/// 1,000 req/s for 10 s, p99.9 is the tenth slowest call and its target is 3 ms, so the calls
/// past this bound are the ones the tail is made of.
pub const SLOW_BOUND_MICROS: u64 = 2_500;

/// [`SLOW_BOUND_MICROS`] as the exposition writes a bucket's bound (`le="0.0025"`).
fn slow_bound_label() -> String {
    (SLOW_BOUND_MICROS as f64 / 1e6).to_string()
}

/// One stage (or the whole request) between two scrapes.
pub struct StageTime {
    pub name: String,
    pub mean_us: f64,
    pub calls: u64,
    /// Calls in which this stage alone took longer than [`SLOW_BOUND_MICROS`].
    pub slow_calls: u64,
}

/// Each stage that ran, then the whole request as the vault timed it (`route`), between two
/// scrapes.
pub fn between(before: &Scrape, after: &Scrape, route: &str) -> Vec<StageTime> {
    // `name_count{labels}`, `name_sum{labels}` and `name_bucket{labels,le="…"}`, as Prometheus
    // writes a histogram; `labels` comes without its braces.
    let bound = slow_bound_label();
    let time = |stage: &str, name: &str, labels: &str| {
        let delta = |sample: String| after.get(&sample) - before.get(&sample);
        let count = delta(format!("{name}_count{{{labels}}}"));
        (count > 0.0).then(|| {
            let fast = delta(format!("{name}_bucket{{{labels},le=\"{bound}\"}}"));
            StageTime {
                name: stage.to_owned(),
                mean_us: delta(format!("{name}_sum{{{labels}}}")) / count * 1e6,
                calls: count as u64,
                slow_calls: (count - fast).max(0.0) as u64,
            }
        })
    };
    let mut out: Vec<StageTime> = names()
        .iter()
        .filter_map(|stage| {
            time(
                stage,
                "cardvault_proxy_stage_seconds",
                &format!("stage=\"{stage}\""),
            )
        })
        .collect();
    // The series' labels in whatever order the exporter writes them.
    let route_label = format!("route=\"{route}\"");
    let request = after.0.keys().find(|name| {
        name.starts_with("cardvault_http_request_duration_seconds_count{")
            && name.contains(&route_label)
            && name.contains("method=\"POST\"")
    });
    let labels = request.map(|name| {
        name.trim_start_matches("cardvault_http_request_duration_seconds_count{")
            .trim_end_matches('}')
    });
    if let Some(request) =
        labels.and_then(|labels| time("request", "cardvault_http_request_duration_seconds", labels))
    {
        out.push(request);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram series as the vault exposes it: cumulative buckets, a sum and a count.
    fn series(name: &str, labels: &str, fast: u64, count: u64, sum: f64) -> String {
        format!(
            "{name}_bucket{{{labels},le=\"0.001\"}} {fast}\n\
             {name}_bucket{{{labels},le=\"0.0025\"}} {fast}\n\
             {name}_bucket{{{labels},le=\"+Inf\"}} {count}\n\
             {name}_sum{{{labels}}} {sum}\n\
             {name}_count{{{labels}}} {count}\n"
        )
    }

    #[test]
    fn each_stage_gets_its_mean_and_its_slow_calls_between_two_scrapes() {
        let stage = "cardvault_proxy_stage_seconds";
        let request = "cardvault_http_request_duration_seconds";
        let route = "route=\"/proxy/transaction\",method=\"POST\"";
        let before = Scrape::parse(&format!(
            "# TYPE {stage} histogram\n{}{}",
            series(stage, "stage=\"audit\"", 10, 10, 0.001),
            series(request, route, 10, 10, 0.003),
        ));
        // 1,000 more calls: 997 audits under the bound, 3 over; 5 requests over it.
        let after = Scrape::parse(&format!(
            "{}{}{}",
            series(stage, "stage=\"audit\"", 1_007, 1_010, 0.101),
            series(stage, "stage=\"upstream\"", 1_000, 1_000, 0.2),
            series(request, route, 1_005, 1_010, 0.503),
        ));
        let times = between(&before, &after, "/proxy/transaction");
        let found: Vec<(&str, u64, u64)> = times
            .iter()
            .map(|t| (t.name.as_str(), t.mean_us.round() as u64, t.slow_calls))
            .collect();
        assert_eq!(
            found,
            [("upstream", 200, 0), ("audit", 100, 3), ("request", 500, 5)]
        );
    }
}
