//! Buckets in this process's memory (`governor`'s keyed GCRA limiters, one per budget class):
//! the default, and each instance's own budget while a shared Redis cannot be reached.
//!
//! A check is a sharded-map read and an atomic compare-and-swap: no lock is held across calls,
//! so the proxy's hot path does not queue behind other keys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Budget, Limited, RateLimitSettings, RateLimitStore};

/// How often buckets that have filled up again (indistinguishable from new ones) are dropped,
/// so one bucket per checkout ever seen does not stay in memory.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct MemoryRateLimits<C: Clock = DefaultClock> {
    clock: C,
    limiters: [Option<Keyed<C>>; Budget::ALL.len()],
}

impl MemoryRateLimits {
    /// Buckets for `settings`, pruned in the background until the returned value is dropped.
    pub fn start(settings: &RateLimitSettings) -> Arc<Self> {
        let limits = Arc::new(Self::with_clock(settings, DefaultClock::default()));
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limits) => limits.prune(),
                    None => break,
                }
            }
        });
        limits
    }
}

impl<C: Clock + Clone> MemoryRateLimits<C> {
    fn with_clock(settings: &RateLimitSettings, clock: C) -> Self {
        let limiters = Budget::ALL.map(|budget| {
            let limit = settings.limit(budget)?;
            // `Rate` never yields a zero interval, so `with_period` always has a quota.
            let quota = Quota::with_period(limit.interval)?.allow_burst(limit.burst);
            Some(RateLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ))
        });
        Self { clock, limiters }
    }

    /// Takes one call from `key`'s bucket of `budget`.
    ///
    /// # Errors
    /// [`Limited`] when the bucket is empty.
    pub fn take_now(&self, budget: Budget, key: &str) -> Result<(), Limited> {
        let Some(limiter) = &self.limiters[budget.index()] else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    fn prune(&self) {
        for limiter in self.limiters.iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimits {
    async fn take(&self, budget: Budget, key: &str) -> Result<(), Limited> {
        self.take_now(budget, key)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::limits::rate::Rate;

    fn limits(rate: &str, burst: u32) -> (MemoryRateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let settings = RateLimitSettings::off().with(
            Budget::Tokenize,
            Rate::parse(rate).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        );
        let clock = FakeRelativeClock::default();
        (
            MemoryRateLimits::with_clock(&settings, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_burst_then_one_call_per_interval() {
        let (limits, clock) = limits("2/s", 3);
        for _ in 0..3 {
            assert_eq!(limits.take_now(Budget::Tokenize, "app_a"), Ok(()));
        }
        let refused = limits.take_now(Budget::Tokenize, "app_a").unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        clock.advance(Duration::from_millis(499));
        assert!(limits.take_now(Budget::Tokenize, "app_a").is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(limits.take_now(Budget::Tokenize, "app_a"), Ok(()));
        assert!(limits.take_now(Budget::Tokenize, "app_a").is_err());
    }

    #[test]
    fn keys_and_classes_have_buckets_of_their_own() {
        let (limits, _) = limits("1/h", 1);
        assert_eq!(limits.take_now(Budget::Tokenize, "app_a"), Ok(()));
        assert!(limits.take_now(Budget::Tokenize, "app_a").is_err());
        assert_eq!(limits.take_now(Budget::Tokenize, "app_b"), Ok(()));
        // A class without a limit admits everything.
        for _ in 0..100 {
            assert_eq!(limits.take_now(Budget::Proxy, "app_a"), Ok(()));
        }
    }

    #[test]
    fn pruning_forgets_only_buckets_that_filled_up_again() {
        let (limits, clock) = limits("1/s", 2);
        limits.take_now(Budget::Tokenize, "idle").unwrap();
        clock.advance(Duration::from_secs(10));
        limits.take_now(Budget::Tokenize, "busy").unwrap();
        limits.take_now(Budget::Tokenize, "busy").unwrap();
        limits.prune();
        let tokenize = limits.limiters[Budget::Tokenize.index()].as_ref().unwrap();
        assert_eq!(tokenize.len(), 1, "only the bucket in use is kept");
        assert!(limits.take_now(Budget::Tokenize, "busy").is_err());
        for _ in 0..2 {
            assert_eq!(limits.take_now(Budget::Tokenize, "idle"), Ok(()));
        }
    }
}
