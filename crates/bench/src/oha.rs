//! The independent load generator: `oha` (crates.io; `bench/run.sh` installs it into
//! `target/tools`), run on the same targets as our own so that the latency figures do not rest on
//! one generator. It paces requests at a fixed rate and, with `--latency-correction`, measures
//! each from when it was due rather than when it was sent (no coordinated omission: a stall
//! counts against every request it held back).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::load::Target;

/// Connections oha spreads the paced requests over (wrk's default, as in the issue's own run).
pub const CONNECTIONS: &str = "10";

/// One oha run's figures.
pub struct OhaRun {
    pub requests_per_sec: f64,
    /// Answers other than 2xx, and requests that got no answer.
    pub failed: u64,
    /// Latency quantiles in milliseconds: p50, p99, p99.9.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// oha, if it can be had: the given path, `target/tools/bin/oha`, or one on `PATH`.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    let installed = PathBuf::from("target/tools/bin/oha");
    if installed.is_file() {
        return Some(installed);
    }
    Command::new("oha")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|_| PathBuf::from("oha"))
}

/// `rate` requests a second to `target` for `duration`; `None` (and a note on stderr) when oha
/// fails or prints what it should not.
pub fn run(
    oha: &Path,
    target: &Target,
    ca_file: &Path,
    rate: u64,
    duration: Duration,
) -> Option<OhaRun> {
    let mut command = Command::new(oha);
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-c", CONNECTIONS])
        .args(["-q", &rate.to_string()])
        .args(["-z", &format!("{}s", duration.as_secs())])
        .args(["-m", "POST"])
        .arg("--cacert")
        .arg(ca_file);
    for (name, value) in &target.headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let body = std::str::from_utf8(&target.body).expect("a UTF-8 body");
    command.args(["-d", body]).arg(&target.url);
    let out = match command.output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "   oha failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("   oha did not start: {e}");
            return None;
        }
    };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let seconds_to_ms = |key: &str| report["latencyPercentiles"][key].as_f64().map(|s| s * 1e3);
    let count = |key: &str, failed: fn(&str) -> bool| -> u64 {
        report[key].as_object().map_or(0, |counts| {
            counts
                .iter()
                .filter(|(k, _)| failed(k))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
    };
    Some(OhaRun {
        requests_per_sec: report["summary"]["requestsPerSec"].as_f64()?,
        // Requests still in flight when the run's time is up are cut off ("aborted due to
        // deadline"): not failures of the target.
        failed: count("statusCodeDistribution", |status| !status.starts_with('2'))
            + count("errorDistribution", |error| !error.contains("deadline")),
        p50: seconds_to_ms("p50")?,
        p99: seconds_to_ms("p99")?,
        p999: seconds_to_ms("p99.9")?,
    })
}
