//! The exposition, with the gauges that are cheaper to read at a scrape than to keep up to
//! date on every request: sessions alive, the database pool, sealed records per key version.
//!
//! A gauge whose source fails is left at its last value (and the failure logged at debug):
//! a scrape always answers, so the metrics stay readable while a backend is down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;

use super::{
    CLIENT_SESSIONS_LIVE, CVC_SESSIONS_LIVE, DB_POOL_CONNECTIONS, DB_POOL_MAX_CONNECTIONS,
    KEY_ROTATION_DONE, KEY_ROTATION_TOTAL, SEALED_RECORDS,
};
use crate::cvc::CvcSessions;
use crate::store::Store;

/// Live client sessions: one indexed count over a table swept to a checkout window's rows.
const CLIENT_SESSIONS_REFRESH: Duration = Duration::from_secs(5);
/// Sealed records: a scan of the tokens table, so at most this often, and never waited for
/// once a first count is known.
const SEALED_RECORDS_REFRESH: Duration = Duration::from_secs(60);

/// Renders the exposition; cheap to clone.
#[derive(Clone)]
pub struct Scraper {
    handle: PrometheusHandle,
    store: Arc<dyn Store>,
    cvc: CvcSessions,
    client_sessions: Arc<Cached<u64>>,
    sealed: Arc<Cached<Vec<(u32, u64)>>>,
}

impl Scraper {
    pub fn new(handle: PrometheusHandle, store: Arc<dyn Store>, cvc: CvcSessions) -> Self {
        Self {
            handle,
            store,
            cvc,
            client_sessions: Arc::new(Cached::new(CLIENT_SESSIONS_REFRESH)),
            sealed: Arc::new(Cached::new(SEALED_RECORDS_REFRESH)),
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub async fn render(&self) -> String {
        self.update_gauges().await;
        let mut text = self.handle.render();
        super::render_histograms(&mut text);
        text
    }

    async fn update_gauges(&self) {
        if let Some(live) = self.cvc.live_sessions() {
            gauge!(CVC_SESSIONS_LIVE).set(live as f64);
        }
        let pool = self.store.pool_usage();
        gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
        gauge!(DB_POOL_CONNECTIONS, "state" => "in_use")
            .set(f64::from(pool.open.saturating_sub(pool.idle)));
        gauge!(DB_POOL_MAX_CONNECTIONS).set(f64::from(pool.max));

        let store = self.store.clone();
        let live = self
            .client_sessions
            .get(move || async move {
                store
                    .live_collect_sessions(crate::clock::now_unix())
                    .await
                    .inspect_err(
                        |e| tracing::debug!(error = %e, "metrics: client sessions not counted"),
                    )
                    .ok()
            })
            .await;
        if let Some(live) = live {
            gauge!(CLIENT_SESSIONS_LIVE).set(live as f64);
        }

        let store = self.store.clone();
        let sealed = self
            .sealed
            .get(move || async move {
                store
                    .sealed_records()
                    .await
                    .inspect_err(
                        |e| tracing::debug!(error = %e, "metrics: sealed records not counted"),
                    )
                    .ok()
            })
            .await;
        if let Some(per_version) = sealed {
            for (version, count) in &per_version {
                gauge!(SEALED_RECORDS, "version" => version.to_string()).set(*count as f64);
            }
            // Without a rotation reporting its own progress, the store tells it: the records
            // already under the newest version, of all of them.
            if !super::rotation_reported() {
                let total: u64 = per_version.iter().map(|(_, n)| n).sum();
                let done = per_version.last().map_or(0, |(_, n)| *n);
                gauge!(KEY_ROTATION_DONE).set(done as f64);
                gauge!(KEY_ROTATION_TOTAL).set(total as f64);
            }
        }
    }
}

/// A value read from a backend now and then: fresh for `ttl`; after that the stale value is
/// answered while one background load replaces it (only the very first load is waited for).
struct Cached<T> {
    ttl: Duration,
    value: Mutex<Option<(Instant, T)>>,
    loading: AtomicBool,
}

impl<T: Clone + Send + 'static> Cached<T> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            value: Mutex::new(None),
            loading: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<(bool, T)> {
        let value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        value
            .as_ref()
            .map(|(at, v)| (at.elapsed() < self.ttl, v.clone()))
    }

    fn set(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), value));
    }

    async fn get<F, Fut>(self: &Arc<Self>, load: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<T>> + Send + 'static,
    {
        match self.current() {
            Some((true, value)) => Some(value),
            Some((false, stale)) => {
                if !self.loading.swap(true, Ordering::AcqRel) {
                    let this = self.clone();
                    let load = load();
                    tokio::spawn(async move {
                        if let Some(value) = load.await {
                            this.set(value);
                        }
                        this.loading.store(false, Ordering::Release);
                    });
                }
                Some(stale)
            }
            None => {
                let value = load().await?;
                self.set(value.clone());
                Some(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_value_is_answered_while_it_is_reloaded() {
        let cached = Arc::new(Cached::new(Duration::ZERO));
        assert_eq!(cached.get(|| async { Some(1) }).await, Some(1));
        // Stale (ttl 0): the old value now, the new one once the background load landed.
        assert_eq!(cached.get(|| async { Some(2) }).await, Some(1));
        for _ in 0..100 {
            if !cached.loading.load(Ordering::Acquire) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(cached.current().map(|(_, v)| v), Some(2));
    }

    #[tokio::test]
    async fn a_failed_first_load_is_retried_at_the_next_scrape() {
        let cached: Arc<Cached<u32>> = Arc::new(Cached::new(Duration::from_secs(60)));
        assert_eq!(cached.get(|| async { None }).await, None);
        assert_eq!(cached.get(|| async { Some(7) }).await, Some(7));
        assert_eq!(cached.get(|| async { Some(8) }).await, Some(7));
    }
}
