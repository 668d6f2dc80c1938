//! Buckets in Redis, shared by every instance: one script call per check (GCRA on Redis's own
//! clock, so the instances' clocks do not matter), under `{prefix}rate:{budget}:{key}`. A bucket
//! expires as soon as it is full again, so Redis holds only the buckets in use.
//!
//! When Redis does not answer, each instance falls back to a budget of its own in memory (the
//! same limits, counted per instance) rather than refusing every call or admitting all of
//! them, and tries Redis again a moment later.

use crate::redis_connection::RedisConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Budget, Limited, MemoryRateLimits, RateLimitSettings, RateLimitStore};

/// Admits a call if the bucket holds one and returns 0; else returns the microseconds until it
/// does, leaving the bucket as it was. The stored value is the theoretical arrival time (GCRA)
/// in microseconds of Redis's clock; numbers go through `%.0f` because Lua would print large
/// ones in exponent form.
const TAKE_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local earliest = tat - (burst - 1) * interval
if now < earliest then return earliest - now end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', string.format('%.0f', math.ceil((next - now) / 1000)))
return 0
";

/// A check waits this long for Redis at most before this instance counts the call itself:
/// Redis answers in well under a millisecond when it is well.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After Redis failed, calls are counted in memory this long before Redis is tried again, so a
/// Redis that is down costs the calls nothing.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);

pub struct RedisRateLimits {
    connection: RedisConnection,
    take: redis::Script,
    prefix: String,
    settings: RateLimitSettings,
    local: Arc<MemoryRateLimits>,
    started: Instant,
    /// Milliseconds after `started` before which Redis is not tried.
    redis_resumes_at_ms: AtomicU64,
    /// Whether the last attempt failed (so the change is logged once each way).
    falling_back: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
enum SharedError {
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis")]
    Redis(#[source] redis::RedisError),
}

impl RedisRateLimits {
    pub fn new(connection: RedisConnection, prefix: &str, settings: RateLimitSettings) -> Self {
        Self {
            connection,
            take: redis::Script::new(TAKE_SCRIPT),
            prefix: prefix.to_owned(),
            settings,
            local: MemoryRateLimits::start(&settings),
            started: Instant::now(),
            redis_resumes_at_ms: AtomicU64::new(0),
            falling_back: AtomicBool::new(false),
        }
    }

    fn key(&self, budget: Budget, key: &str) -> String {
        format!("{}rate:{}:{key}", self.prefix, budget.name())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The microseconds to wait (0: admitted), from Redis.
    async fn take_shared(
        &self,
        budget: Budget,
        key: &str,
        interval_us: u64,
        burst: u32,
    ) -> Result<u64, SharedError> {
        let mut conn = self.connection.get().clone();
        let mut invocation = self.take.key(self.key(budget, key));
        invocation.arg(interval_us).arg(burst);
        let answer: Result<redis::RedisResult<u64>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut conn)).await;
        match answer {
            Ok(result) => result.map_err(SharedError::Redis),
            Err(_) => Err(SharedError::Timeout),
        }
    }

    fn redis_failed(&self, error: &SharedError) {
        let resume =
            self.elapsed_ms() + u64::try_from(RETRY_REDIS_AFTER.as_millis()).unwrap_or(1000);
        self.redis_resumes_at_ms.store(resume, Ordering::Relaxed);
        if !self.falling_back.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cause = %crate::error_chain::chain(error),
                "rate limits: Redis is unreachable; each instance counts its own budgets until it is back"
            );
        }
    }

    fn redis_answered(&self) {
        if self.falling_back.swap(false, Ordering::Relaxed) {
            tracing::info!("rate limits: Redis answers again; budgets are shared again");
        }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimits {
    async fn take(&self, budget: Budget, key: &str) -> Result<(), Limited> {
        let Some(limit) = self.settings.limit(budget) else {
            return Ok(());
        };
        if self.elapsed_ms() < self.redis_resumes_at_ms.load(Ordering::Relaxed) {
            return self.local.take_now(budget, key);
        }
        // `Rate` keeps intervals at one microsecond or more, and bursts are bounded in the
        // settings, so the script's arithmetic stays exact in Lua's doubles.
        let interval_us = u64::try_from(limit.interval.as_micros()).unwrap_or(u64::MAX);
        match self
            .take_shared(budget, key, interval_us, limit.burst.get())
            .await
        {
            Ok(0) => {
                self.redis_answered();
                Ok(())
            }
            Ok(wait_us) => {
                self.redis_answered();
                Err(Limited {
                    retry_after: Duration::from_micros(wait_us),
                })
            }
            Err(error) => {
                self.redis_failed(&error);
                self.local.take_now(budget, key)
            }
        }
    }
}
