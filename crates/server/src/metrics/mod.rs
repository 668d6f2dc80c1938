//! Prometheus metrics: what the vault counts and times, and the one recorder per process.
//!
//! Every label value comes from a closed set (route templates, status codes, stage names,
//! reasons) or from the operator's and projects' allowlist patterns, capped in number (see
//! [`labels`]): never a card number, CVC, key, token, request path or URL.
//!
//! Nothing is recorded until [`install`] runs, which the server does only when metrics are
//! exposed (`metrics_token` or `metrics_listen`): a vault without metrics pays one atomic load
//! per recording site. Fixed series (proxy stages, load shedding) are registered once at
//! install and recorded through their handles, so the hot path builds no label set for them.
//! Latency histograms are the vault's own ([`histogram`]), rendered after the exporter's
//! metrics.

mod histogram;
mod labels;
mod scrape;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ::metrics::{Counter, counter, describe_counter, describe_gauge, gauge};
use http::{Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use histogram::Family;
pub use histogram::{BUCKET_BOUNDS_SECONDS, LatencyHistogram};
pub use labels::DestinationLabel;
pub use scrape::Scraper;

use crate::upstream::{UpstreamError, UpstreamResponse};

pub const HTTP_REQUESTS: &str = "cardvault_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "cardvault_http_request_duration_seconds";
pub const PROXY_STAGE_DURATION: &str = "cardvault_proxy_stage_seconds";
pub const PROCESSOR_RESPONSES: &str = "cardvault_processor_responses_total";
pub const CVC_SESSIONS_CREATED: &str = "cardvault_cvc_sessions_created_total";
pub const CVC_SESSIONS_LIVE: &str = "cardvault_cvc_sessions_live";
pub const CLIENT_SESSIONS_LIVE: &str = "cardvault_client_sessions_live";
pub const DB_POOL_CONNECTIONS: &str = "cardvault_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "cardvault_db_pool_max_connections";
pub const RATE_LIMITED: &str = "cardvault_rate_limited_total";
pub const LOAD_SHED: &str = "cardvault_load_shed_total";
pub const SEALED_RECORDS: &str = "cardvault_sealed_records";
pub const KEY_ROTATION_DONE: &str = "cardvault_key_rotation_records_done";
pub const KEY_ROTATION_TOTAL: &str = "cardvault_key_rotation_records_total";

static REQUEST_DURATIONS: Family = Family::new(
    HTTP_REQUEST_DURATION,
    "Time from the request's arrival to its answer, by route template and method",
);
static STAGE_DURATIONS: Family = Family::new(
    PROXY_STAGE_DURATION,
    "Time spent in each stage of POST /proxy/transaction (stages that completed)",
);

/// A stage of `POST /proxy/transaction`, in the order a call runs through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `X-API-Key` to application and project (cached, else one query).
    Auth,
    /// The project's destination settings: the allowlists, the processor's TLS settings.
    Destination,
    /// Loading the token and opening its sealed data.
    TokenLoad,
    /// Resolving the destination and checking its addresses.
    Resolve,
    /// Taking the CVC session (only when the template uses it).
    Cvc,
    /// Filling the placeholders of the template.
    Render,
    /// The processor call: connect (or reuse), send, read the answer.
    Upstream,
    /// From the processor's answer on: its counters, masking echoed secrets, wrapping.
    Scrub,
    /// Committing the call's audit record.
    Audit,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Auth,
        Stage::Destination,
        Stage::TokenLoad,
        Stage::Resolve,
        Stage::Cvc,
        Stage::Render,
        Stage::Upstream,
        Stage::Scrub,
        Stage::Audit,
    ];

    /// Its place in [`Stage::ALL`].
    fn index(self) -> usize {
        match self {
            Self::Auth => 0,
            Self::Destination => 1,
            Self::TokenLoad => 2,
            Self::Resolve => 3,
            Self::Cvc => 4,
            Self::Render => 5,
            Self::Upstream => 6,
            Self::Scrub => 7,
            Self::Audit => 8,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Destination => "destination",
            Self::TokenLoad => "token_load",
            Self::Resolve => "resolve",
            Self::Cvc => "cvc",
            Self::Render => "render",
            Self::Upstream => "upstream",
            Self::Scrub => "scrub",
            Self::Audit => "audit",
        }
    }
}

/// Why a request or connection was refused for lack of capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `max_in_flight_requests` reached: answered 503 `overloaded`.
    InFlight,
    /// `max_connections` reached: the connection answered 503 (or closed, over TLS).
    Connections,
}

impl Shed {
    const ALL: [Shed; 2] = [Shed::InFlight, Shed::Connections];

    fn label(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Connections => "connections",
        }
    }
}

/// The installed recorder, with the handles of the fixed series.
struct Installed {
    handle: PrometheusHandle,
    stages: [Arc<LatencyHistogram>; Stage::ALL.len()],
    shed: [Counter; Shed::ALL.len()],
    cvc_sessions_created: Counter,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Set once a rotation running in this process reports its own progress; the scrape then
/// stops deriving it from the store.
static ROTATION_REPORTED: AtomicBool = AtomicBool::new(false);

fn installed() -> Option<&'static Installed> {
    INSTALLED.get()
}

/// Installs the process's recorder (once; later calls return the same handle) and starts its
/// upkeep. From then on everything below is recorded.
pub fn install() -> PrometheusHandle {
    INSTALLED
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Only an empty bucket list is refused; without buckets histograms become summaries.
            let builder = match builder.set_buckets(&histogram::BUCKET_BOUNDS_SECONDS) {
                Ok(builder) => builder,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed: /metrics shows only the latency histograms"
                );
            }
            describe();
            let installed = Installed {
                handle,
                stages: Stage::ALL.map(|s| STAGE_DURATIONS.series(&[("stage", s.label())])),
                shed: Shed::ALL.map(|r| counter!(LOAD_SHED, "reason" => r.label())),
                cvc_sessions_created: counter!(CVC_SESSIONS_CREATED),
            };
            // Counters that are 0 are shown as 0 rather than missing, so rates start at once.
            for counter in &installed.shed {
                counter.increment(0);
            }
            installed.cvc_sessions_created.increment(0);
            installed
        })
        .handle
        .clone()
}

/// HELP lines: a metric's meaning and unit, for whoever reads the exposition.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by route template, method and status"
    );
    describe_counter!(
        PROCESSOR_RESPONSES,
        "Processor calls by destination (the allowlist pattern that admitted it, else other) and outcome (status class, timeout, error)"
    );
    describe_counter!(
        CVC_SESSIONS_CREATED,
        "CVC sessions created by this instance"
    );
    describe_gauge!(
        CVC_SESSIONS_LIVE,
        "CVC sessions held in this process's memory (absent with Redis)"
    );
    describe_gauge!(
        CLIENT_SESSIONS_LIVE,
        "Browser tokenization sessions (wax keys) alive with calls left, all instances"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections of this instance, by state (idle, in_use)"
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "Database pool size limit of this instance"
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by class");
    describe_counter!(
        LOAD_SHED,
        "Requests and connections refused for lack of capacity, by reason"
    );
    describe_gauge!(
        SEALED_RECORDS,
        "Sealed records (live tokens, processor TLS keys) per data key version"
    );
    describe_gauge!(
        KEY_ROTATION_DONE,
        "Sealed records under the newest data key version (rotation progress)"
    );
    describe_gauge!(
        KEY_ROTATION_TOTAL,
        "Sealed records to be under the newest data key version"
    );
}

/// One answered request. `route` is the matched route template (`/tokens/{token}`), never the
/// path; `None` for a request no route matched.
pub fn request(route: Option<&str>, method: &Method, status: StatusCode, elapsed: Duration) {
    if installed().is_none() {
        return;
    }
    let route = route.unwrap_or("unmatched");
    let method = labels::method(method);
    REQUEST_METRICS.with_borrow_mut(|by_route| {
        let Some(by_outcome) = by_text(by_route, route) else {
            return;
        };
        let (count, duration) = by_outcome.entry((method, status)).or_insert_with(|| {
            let duration = REQUEST_DURATIONS.series(&[("route", route), ("method", method)]);
            let route = ::metrics::SharedString::from(route.to_owned());
            let status = labels::status(status);
            (
                counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status),
                duration,
            )
        });
        count.increment(1);
        duration.record(elapsed);
    });
}

/// A route's handles, by method label and status code.
type ByOutcome = HashMap<(&'static str, StatusCode), (Counter, Arc<LatencyHistogram>)>;

thread_local! {
    /// Each thread's handles on the request counter and duration histogram, by route (its
    /// template, or `unmatched`) and then method and status. Registering a handle builds its
    /// labels and looks them up in the recorder (allocations and a hash every request); the
    /// combinations are few (routes are templates, methods a fixed set of labels, statuses
    /// three digits), so each thread keeps the ones it has used.
    static REQUEST_METRICS: RefCell<HashMap<String, ByOutcome>> =
        RefCell::new(HashMap::new());
}

/// The proxy's stages timed one after another, with one clock read at each boundary: a stage
/// ends where the next begins, so a call of six stages reads the clock seven times, not twelve
/// (a read is ~20–40 ns on the hosts measured, and a call made ~50 of them: docs/benchmarks.md,
/// issue 17's thirty-first step). Reads nothing and records nothing when metrics are off.
#[must_use = "a stage is recorded only by `lap`"]
pub struct StageClock(Option<(&'static Installed, Instant)>);

impl StageClock {
    /// Starts the first stage now.
    pub fn start() -> Self {
        Self(installed().map(|installed| (installed, Instant::now())))
    }

    /// Starts the first stage at `now`, a reading the caller already made.
    pub fn start_at(now: Instant) -> Self {
        Self(installed().map(|installed| (installed, now)))
    }

    /// Ends `stage` now and starts the next one.
    pub fn lap(&mut self, stage: Stage) {
        if let Some((installed, last)) = &mut self.0 {
            let now = Instant::now();
            installed.stages[stage.index()].record(now.saturating_duration_since(*last));
            *last = now;
        }
    }

    /// Starts the next stage now, leaving the time since the last boundary out of every stage
    /// (work that belongs to none, such as giving a CVC session back).
    pub fn restart(&mut self) {
        if let Some((_, last)) = &mut self.0 {
            *last = Instant::now();
        }
    }
}

/// Runs `work` as `stage`, timed from its first poll to its end whatever its outcome.
pub fn timed<F: Future>(stage: Stage, work: F) -> Timed<F> {
    Timed {
        stage,
        clock: None,
        work,
    }
}

pin_project_lite::pin_project! {
    /// See [`timed`]. A future of its own rather than an `async fn`: an `async fn` keeps its
    /// argument beside the copy it awaits, so every stage it wraps (the processor call's is
    /// kilobytes) would count twice in the size of each call's future, which is copied
    /// whole when it is moved (docs/benchmarks.md, issue 17's tenth step).
    #[must_use = "a stage runs and is timed only when awaited"]
    pub struct Timed<F> {
        stage: Stage,
        // Started at the first poll.
        clock: Option<StageClock>,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.clock.get_or_insert_with(StageClock::start);
        let out = std::task::ready!(this.work.poll(cx));
        if let Some(mut clock) = this.clock.take() {
            clock.lap(*this.stage);
        }
        Poll::Ready(out)
    }
}

/// The processor's answer (or its absence) to a call admitted under `destination`.
pub fn processor_answer(
    destination: &DestinationLabel,
    sent: &Result<UpstreamResponse, UpstreamError>,
) {
    if installed().is_none() {
        return;
    }
    let outcome = match sent {
        Ok(answer) => labels::status_class(answer.status),
        Err(UpstreamError::Timeout { .. }) => "timeout",
        Err(UpstreamError::TooLarge(_)) => "too_large",
        Err(UpstreamError::Unreachable(_)) => "unreachable",
        Err(
            UpstreamError::Failed(_)
            | UpstreamError::NonPublicAddress
            | UpstreamError::Unresolvable
            | UpstreamError::Setup(_)
            | UpstreamError::Unbuildable(_),
        ) => "error",
    };
    PROCESSOR_COUNTERS.with_borrow_mut(|by_destination| {
        // Kept per thread: building the key and finding it in the recorder allocates and
        // hashes, every call.
        let label = destination.label();
        let Some(by_outcome) = by_text(by_destination, &label) else {
            return;
        };
        by_outcome
            .entry(outcome)
            .or_insert_with(
                || counter!(PROCESSOR_RESPONSES, "destination" => label, "outcome" => outcome),
            )
            .increment(1);
    });
}

/// `map`'s entry for `key`, made if missing, looked up by the borrowed text: the key's own
/// `String` is made only the first time (once per thread, for the maps above and below).
/// Always `Some`: an `Option` rather than a panic on a case that cannot happen.
fn by_text<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
}

thread_local! {
    /// Each thread's processor answer counters, by destination label and outcome: both from
    /// bounded sets (see [`labels`]).
    static PROCESSOR_COUNTERS: RefCell<HashMap<String, HashMap<&'static str, Counter>>> =
        RefCell::new(HashMap::new());
}

/// The vault's own histograms in the text exposition format, after the exporter's metrics.
fn render_histograms(out: &mut String) {
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    REQUEST_DURATIONS.render(out);
    STAGE_DURATIONS.render(out);
}

/// A request or connection refused for lack of capacity.
pub fn load_shed(reason: Shed) {
    if let Some(installed) = installed() {
        let index = Shed::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        installed.shed[index].increment(1);
    }
}

/// A request refused by a rate limit of `class` (`tokenize`, `proxy`, `reveal`,
/// `provisioning`, `client_session`, …: a fixed name, never a key or id).
pub fn rate_limited(class: &'static str) {
    if installed().is_some() {
        counter!(RATE_LIMITED, "class" => class).increment(1);
    }
}

/// A CVC session was created by this instance.
pub fn cvc_session_created() {
    if let Some(installed) = installed() {
        installed.cvc_sessions_created.increment(1);
    }
}

/// Progress of a key rotation running in this process: `done` of `total` records are sealed
/// under the new version. Once called, the scrape reports these numbers instead of deriving
/// them from the store.
pub fn set_key_rotation_progress(done: u64, total: u64) {
    if installed().is_some() {
        ROTATION_REPORTED.store(true, Ordering::Relaxed);
        gauge!(KEY_ROTATION_DONE).set(done as f64);
        gauge!(KEY_ROTATION_TOTAL).set(total as f64);
    }
}

fn rotation_reported() -> bool {
    ROTATION_REPORTED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::Stage;

    #[test]
    fn each_stage_records_into_its_own_series() {
        for (at, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(stage.index(), at, "{}", stage.label());
        }
    }
}
