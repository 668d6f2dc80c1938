//! Where a call's time goes, from the vault's own `/metrics`: the proxy's stage histograms and
//! the request-duration histogram, read before and after a run; the difference of their sums
//! over the difference of their counts is each stage's mean time per call in that run.

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
        Some(Self(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (name, value) = line.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        ))
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// Mean microseconds per call of each stage that ran, then of the whole request as the vault
/// timed it (`route`), between two scrapes.
pub fn means(before: &Scrape, after: &Scrape, route: &str) -> Vec<(String, f64)> {
    // `name_count{labels}` and `name_sum{labels}`, as Prometheus writes a histogram's totals.
    let mean = |name: &str, labels: &str| {
        let delta = |part: &str| {
            let sample = format!("{name}_{part}{labels}");
            after.get(&sample) - before.get(&sample)
        };
        let count = delta("count");
        (count > 0.0).then(|| delta("sum") / count * 1e6)
    };
    let mut out: Vec<(String, f64)> = names()
        .iter()
        .filter_map(|stage| {
            mean(
                "cardvault_proxy_stage_seconds",
                &format!("{{stage=\"{stage}\"}}"),
            )
            .map(|us| ((*stage).to_owned(), us))
        })
        .collect();
    // The series' labels in whatever order the exporter writes them.
    let route_label = format!("route=\"{route}\"");
    let request = after.0.keys().find(|name| {
        name.starts_with("cardvault_http_request_duration_seconds_count{")
            && name.contains(&route_label)
            && name.contains("method=\"POST\"")
    });
    let labels = request
        .map(|name| name.trim_start_matches("cardvault_http_request_duration_seconds_count"));
    if let Some(us) =
        labels.and_then(|labels| mean("cardvault_http_request_duration_seconds", labels))
    {
        out.push(("request".to_owned(), us));
    }
    out
}
