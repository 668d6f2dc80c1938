//! Rate limits: a token bucket (GCRA) per caller and budget class. An application key has a
//! budget for each kind of call (tokenize, proxy, reveal, provisioning); a browser checkout (a
//! wax key's session) has one of its own. Over budget, a call is answered `429` with the time
//! until the bucket holds a call again, before it does any work.
//!
//! The buckets live in this process ([`MemoryRateLimits`], `governor`) or, when Redis is
//! configured, in Redis ([`RedisRateLimits`]), where every instance draws on the same budget.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

mod memory;
mod redis;
mod setting;

pub use self::memory::MemoryRateLimits;
pub use self::redis::RedisRateLimits;
pub use self::setting::{Period, Rate, RateError};

/// The most calls a bucket may hold: enough for any burst, and small enough that the Redis
/// script's arithmetic (in Lua's doubles, microseconds) stays exact at the slowest rate.
pub const MAX_BURST: u32 = 1_000_000;

/// The kinds of calls that draw on separate budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `/tokenize`, `/test-tokens`, token metadata and deletion, CVC session deletion, minting
    /// and revoking wax keys: the calls a merchant's backend makes per checkout.
    Tokenize,
    /// `/proxy/transaction`.
    Proxy,
    /// `/detokenize`: card data back in the clear, so the strictest.
    Reveal,
    /// Managing applications and projects, provisioning sub-projects, reading the audit log.
    Provisioning,
    /// A browser's tokenize call with a wax key, per checkout (project and tokenization session).
    Browser,
}

impl Budget {
    pub const ALL: [Self; 5] = [
        Self::Tokenize,
        Self::Proxy,
        Self::Reveal,
        Self::Provisioning,
        Self::Browser,
    ];

    /// Stable, for settings, Redis keys and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenize => "tokenize",
            Self::Proxy => "proxy",
            Self::Reveal => "reveal",
            Self::Provisioning => "provisioning",
            Self::Browser => "browser",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One budget: refills one call every `interval`, holds at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub interval: Duration,
    pub burst: NonZeroU32,
}

/// The limit of each budget class; `None`: that class is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitSettings([Option<Limit>; Budget::ALL.len()]);

impl RateLimitSettings {
    /// Nothing limited.
    pub fn off() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with(mut self, budget: Budget, rate: Rate, burst: NonZeroU32) -> Self {
        self.0[budget.index()] = rate.interval().map(|interval| Limit { interval, burst });
        self
    }

    pub fn limit(&self, budget: Budget) -> Option<Limit> {
        self.0[budget.index()]
    }

    pub fn is_off(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// A call over budget: when the bucket holds one again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, rounded up and at least 1 (what `Retry-After` can say).
    pub fn retry_after_seconds(self) -> u64 {
        let whole = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            whole + 1
        } else {
            whole
        };
        rounded.max(1)
    }
}

/// Where the buckets live.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Takes one call from `key`'s bucket of class `budget`; a class without a limit always
    /// admits. A refused call leaves the bucket as it was.
    async fn take(&self, budget: Budget, key: &str) -> Result<(), Limited>;
}

/// The vault's rate limits: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct RateLimits {
    /// `None` when nothing is limited: a call then costs one branch.
    store: Option<Arc<dyn RateLimitStore>>,
    refused: Arc<[AtomicU64; Budget::ALL.len()]>,
}

impl RateLimits {
    pub fn new(store: Option<Arc<dyn RateLimitStore>>) -> Self {
        Self {
            store,
            refused: Arc::new(Default::default()),
        }
    }

    /// Takes one call from `key`'s `budget`.
    ///
    /// # Errors
    /// [`Limited`] when the budget is spent (counted in [`RateLimits::refused`]).
    pub async fn admit(&self, budget: Budget, key: &str) -> Result<(), Limited> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let result = store.take(budget, key).await;
        if result.is_err() {
            self.refused[budget.index()].fetch_add(1, Ordering::Relaxed);
            crate::metrics::rate_limited(budget.name());
        }
        result
    }

    /// Calls refused for being over `budget` since start (for metrics).
    pub fn refused(&self, budget: Budget) -> u64 {
        self.refused[budget.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        let secs = |retry_after| Limited { retry_after }.retry_after_seconds();
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(Duration::from_micros(1)), 1);
        assert_eq!(secs(Duration::from_secs(1)), 1);
        assert_eq!(secs(Duration::from_millis(1001)), 2);
        assert_eq!(secs(Duration::from_secs(3600)), 3600);
    }

    #[test]
    fn budget_names_are_distinct_and_index_their_own_slot() {
        for (i, budget) in Budget::ALL.iter().enumerate() {
            assert_eq!(budget.index(), i);
            assert_eq!(
                Budget::ALL
                    .iter()
                    .filter(|b| b.name() == budget.name())
                    .count(),
                1
            );
        }
    }

    #[tokio::test]
    async fn refusals_are_counted_per_budget() {
        let burst = NonZeroU32::new(1).unwrap();
        let settings =
            RateLimitSettings::off().with(Budget::Reveal, Rate::parse("1/h").unwrap(), burst);
        let limits = RateLimits::new(Some(MemoryRateLimits::start(&settings)));
        assert_eq!(limits.admit(Budget::Reveal, "app_a").await, Ok(()));
        assert!(limits.admit(Budget::Reveal, "app_a").await.is_err());
        assert_eq!(limits.admit(Budget::Proxy, "app_a").await, Ok(()));
        assert_eq!(limits.refused(Budget::Reveal), 1);
        assert_eq!(limits.refused(Budget::Proxy), 0);
    }
}
