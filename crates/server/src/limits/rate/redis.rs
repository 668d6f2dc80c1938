//! Buckets in Redis, shared by every instance: GCRA on Redis's own clock (so the instances'
//! clocks do not matter), under `{prefix}rate:{budget}:{key}`. A bucket expires as soon as it
//! is full again, so Redis holds only the buckets in use.
//!
//! The checks of the calls in flight on a serving thread at once go to Redis as one script
//! call (see [`crate::group`]): under load Redis runs one script for many calls, instead of one
//! each, and the thread sends and reads one command. A group draws on each bucket as the same
//! checks one after another would at that instant: of a bucket's calls in the group, the
//! first ones admitted while it holds a call each, the rest told when it holds one again.
//!
//! When Redis does not answer, each instance falls back to a budget of its own in memory (the
//! same limits, counted per instance) rather than refusing every call or admitting all of
//! them, and tries Redis again a moment later.

use crate::group::Group;
use crate::redis_connection::RedisConnection;
use crate::serving_threads::OnePerServingThread;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Budget, Limited, MemoryRateLimits, RateLimitSettings, RateLimitStore};

/// For each key (`KEYS[i]`), with `ARGV` holding three numbers a key (the calls drawing on it,
/// its interval and its burst): admits as many of those calls, one after another, as the bucket
/// holds, and answers two numbers a key: the calls admitted, and the microseconds until the
/// bucket holds one more (0 when all were admitted). A call not admitted leaves the bucket as
/// it was. The stored value is the theoretical arrival time (GCRA) in microseconds of Redis's
/// clock; numbers go through `%.0f` because Lua would print large ones in exponent form.
const TAKE_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local answers = {}
for i, key in ipairs(KEYS) do
  local calls = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local admitted = 0
  while admitted < calls and now >= tat - (burst - 1) * interval do
    tat = tat + interval
    admitted = admitted + 1
  end
  if admitted > 0 then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
  end
  local wait = 0
  if admitted < calls then wait = tat - (burst - 1) * interval - now end
  answers[2 * i - 1] = admitted
  answers[2 * i] = wait
end
return answers
";

/// A check waits this long for Redis at most before this instance counts the call itself:
/// Redis answers in well under a millisecond when it is well.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After Redis failed, calls are counted in memory this long before Redis is tried again, so a
/// Redis that is down costs the calls nothing.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);
/// A serving thread's script calls in flight at once: while one is out, the checks that arrive
/// queue for the next, which takes them all.
const GROUPS_IN_FLIGHT: usize = 1;

pub struct RedisRateLimits {
    connection: RedisConnection,
    take: Arc<redis::Script>,
    /// The checks in flight on each serving thread, sent to Redis in groups.
    takes: OnePerServingThread<Group<Take, Drawn>>,
    prefix: String,
    settings: RateLimitSettings,
    local: Arc<MemoryRateLimits>,
    started: Instant,
    /// Milliseconds after `started` before which Redis is not tried.
    redis_resumes_at_ms: AtomicU64,
    /// Whether the last attempt failed (so the change is logged once each way).
    falling_back: AtomicBool,
}

/// One call's check: its bucket's Redis key and the bucket's limit.
struct Take {
    key: String,
    interval_us: u64,
    burst: u32,
}

/// A check's answer from Redis.
#[derive(Clone)]
enum Drawn {
    Admitted,
    /// Not admitted: the microseconds until the bucket holds a call again.
    Wait(u64),
    /// Redis did not answer; the group's calls all hear why.
    Failed(Arc<SharedError>),
    /// Not sent: Redis failed a moment ago, after the call was queued.
    Locally,
}

#[derive(Debug, thiserror::Error)]
enum SharedError {
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis")]
    Redis(#[source] redis::RedisError),
    #[error("Redis answered {0} numbers for {1} buckets")]
    Answer(usize, usize),
}

/// Sends `takes` to Redis as one script call; one answer for each, in order.
async fn draw(
    mut conn: redis::aio::ConnectionManager,
    script: Arc<redis::Script>,
    takes: Vec<Take>,
) -> Vec<Drawn> {
    // The distinct buckets, in the order their first call came, each with its calls.
    let mut buckets: Vec<(&Take, Vec<usize>)> = Vec::new();
    for (i, take) in takes.iter().enumerate() {
        match buckets.iter_mut().find(|(first, _)| first.key == take.key) {
            Some((_, calls)) => calls.push(i),
            None => buckets.push((take, vec![i])),
        }
    }
    let mut invocation = script.prepare_invoke();
    for (take, calls) in &buckets {
        invocation
            .key(&take.key)
            .arg(calls.len())
            .arg(take.interval_us)
            .arg(take.burst);
    }
    let answer: Result<Vec<u64>, SharedError> = match tokio::time::timeout(
        REDIS_TIMEOUT,
        invocation.invoke_async::<Vec<u64>>(&mut conn),
    )
    .await
    {
        Ok(Ok(numbers)) if numbers.len() == 2 * buckets.len() => Ok(numbers),
        Ok(Ok(numbers)) => Err(SharedError::Answer(numbers.len(), buckets.len())),
        Ok(Err(e)) => Err(SharedError::Redis(e)),
        Err(_) => Err(SharedError::Timeout),
    };
    let numbers = match answer {
        Ok(numbers) => numbers,
        Err(e) => return vec![Drawn::Failed(Arc::new(e)); takes.len()],
    };
    let mut drawn = vec![Drawn::Admitted; takes.len()];
    for ((_, calls), answer) in buckets.iter().zip(numbers.chunks_exact(2)) {
        let admitted = usize::try_from(answer[0]).unwrap_or(usize::MAX);
        for &call in calls.iter().skip(admitted) {
            drawn[call] = Drawn::Wait(answer[1]);
        }
    }
    drawn
}

impl RedisRateLimits {
    pub fn new(connection: RedisConnection, prefix: &str, settings: RateLimitSettings) -> Self {
        let groups =
            || Group::sharing_turn(Arc::new(tokio::sync::Semaphore::new(GROUPS_IN_FLIGHT)));
        Self {
            connection,
            take: Arc::new(redis::Script::new(TAKE_SCRIPT)),
            takes: OnePerServingThread::per_thread(groups(), groups),
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

    /// Whether Redis failed a moment ago (checks are counted in memory until it is tried again).
    fn redis_paused(&self) -> bool {
        self.elapsed_ms() < self.redis_resumes_at_ms.load(Ordering::Relaxed)
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
        if self.redis_paused() {
            return self.local.take_now(budget, key);
        }
        // `Rate` keeps intervals at one microsecond or more, and bursts are bounded in the
        // settings, so the script's arithmetic stays exact in Lua's doubles.
        let take = Take {
            key: self.key(budget, key),
            interval_us: u64::try_from(limit.interval.as_micros()).unwrap_or(u64::MAX),
            burst: limit.burst.get(),
        };
        let drawn = self
            .takes
            .get()
            .run_async(take, |takes| {
                // Checks queued behind a group that found Redis down are counted here without
                // another wait for it.
                let paused = self.redis_paused();
                let (conn, script) = (self.connection.get().clone(), self.take.clone());
                async move {
                    if paused {
                        vec![Drawn::Locally; takes.len()]
                    } else {
                        draw(conn, script, takes).await
                    }
                }
            })
            .await;
        match drawn {
            Some(Drawn::Admitted) => {
                self.redis_answered();
                Ok(())
            }
            Some(Drawn::Wait(wait_us)) => {
                self.redis_answered();
                Err(Limited {
                    retry_after: Duration::from_micros(wait_us),
                })
            }
            Some(Drawn::Failed(error)) => {
                self.redis_failed(&error);
                self.local.take_now(budget, key)
            }
            Some(Drawn::Locally) => self.local.take_now(budget, key),
            // The group's script call panicked: whether it drew on the bucket is unknown.
            None => self.local.take_now(budget, key),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::num::NonZeroU32;

    use super::*;
    use crate::limits::rate::Rate;

    const HOUR_US: u64 = 3_600_000_000;

    fn redis_url() -> String {
        std::env::var("CARDVAULT_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
    }

    /// A key prefix of this test's own, its keys deleted when dropped.
    struct Prefix(String);

    impl Prefix {
        fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Self(format!(
                "cvtest:rate:{}:{since_epoch}:{n}:",
                std::process::id()
            ))
        }

        fn key(&self, name: &str) -> String {
            format!("{}{name}", self.0)
        }
    }

    impl Drop for Prefix {
        fn drop(&mut self) {
            let Ok(client) = redis::Client::open(redis_url()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.0))
                .query(&mut conn)
                .unwrap_or_default();
            for key in keys {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut conn);
            }
        }
    }

    async fn connection() -> redis::aio::ConnectionManager {
        let client = redis::Client::open(redis_url()).unwrap();
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("Redis on CARDVAULT_TEST_REDIS_URL (default 127.0.0.1:6379)")
    }

    fn take(key: &str, burst: u32) -> Take {
        Take {
            key: key.to_owned(),
            interval_us: HOUR_US,
            burst,
        }
    }

    /// Admitted or not, and how long to wait, each within `(0, interval]` when refused.
    fn admitted(drawn: &[Drawn]) -> Vec<bool> {
        drawn
            .iter()
            .map(|d| match d {
                Drawn::Admitted => true,
                Drawn::Wait(us) => {
                    assert!((1..=HOUR_US).contains(us), "a wait of {us} µs");
                    false
                }
                Drawn::Failed(e) => panic!("Redis failed: {e}"),
                Drawn::Locally => panic!("not sent to Redis"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_group_draws_on_each_bucket_as_its_calls_one_after_another_would() {
        let prefix = Prefix::new();
        let (a, b) = (prefix.key("a"), prefix.key("b"));
        let script = Arc::new(redis::Script::new(TAKE_SCRIPT));
        let conn = connection().await;
        // One group: three calls on a bucket of two, two on a bucket of one, interleaved.
        let group = vec![
            take(&a, 2),
            take(&b, 1),
            take(&a, 2),
            take(&a, 2),
            take(&b, 1),
        ];
        let drawn = draw(conn.clone(), script.clone(), group).await;
        assert_eq!(admitted(&drawn), [true, true, true, false, false]);
        // The same calls one at a time, on buckets of their own, agree.
        let (a1, b1) = (prefix.key("a1"), prefix.key("b1"));
        let mut one_by_one = Vec::new();
        for take in [
            take(&a1, 2),
            take(&b1, 1),
            take(&a1, 2),
            take(&a1, 2),
            take(&b1, 1),
        ] {
            one_by_one.extend(draw(conn.clone(), script.clone(), vec![take]).await);
        }
        assert_eq!(admitted(&one_by_one), admitted(&drawn));
        // A refused call left its bucket as it was: the first group's buckets are spent, and
        // each refusal's wait is the bucket's next refill, not one more interval for each.
        let again = draw(conn.clone(), script.clone(), vec![take(&a, 2), take(&b, 1)]).await;
        assert_eq!(admitted(&again), [false, false]);
        for (first, later) in [(&drawn[3], &again[0]), (&drawn[4], &again[1])] {
            let (Drawn::Wait(first), Drawn::Wait(later)) = (first, later) else {
                unreachable!("both refused");
            };
            assert!(
                later <= first && first - later < 60_000_000,
                "{first} then {later}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_admit_exactly_the_burst() {
        let prefix = Prefix::new();
        let burst = NonZeroU32::new(5).unwrap();
        let settings = RateLimitSettings::off()
            .with(Budget::Tokenize, Rate::parse("1/h").unwrap(), burst)
            .with(Budget::Proxy, Rate::parse("1/h").unwrap(), burst);
        let limits = Arc::new(RedisRateLimits::new(
            crate::redis_connection::connect(&redis_url()).unwrap(),
            &prefix.0,
            settings,
        ));
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let limits = limits.clone();
                let (budget, key) = match i % 4 {
                    0 => (Budget::Tokenize, "app_a"),
                    1 => (Budget::Tokenize, "app_b"),
                    2 => (Budget::Proxy, "app_a"),
                    _ => (Budget::Tokenize, "app_a"),
                };
                tokio::spawn(async move { (budget, key, limits.take(budget, key).await) })
            })
            .collect();
        let mut admitted = std::collections::HashMap::new();
        for call in calls {
            let (budget, key, outcome) = call.await.unwrap();
            let count = admitted.entry((budget.name(), key)).or_insert(0);
            match outcome {
                Ok(()) => *count += 1,
                Err(limited) => assert!(limited.retry_after <= Duration::from_secs(3600)),
            }
        }
        assert!(
            !limits.falling_back.load(Ordering::Relaxed),
            "Redis answered"
        );
        let expected: std::collections::HashMap<_, _> = [
            (("tokenize", "app_a"), 5),
            (("tokenize", "app_b"), 5),
            (("proxy", "app_a"), 5),
        ]
        .into();
        assert_eq!(admitted, expected);
    }
}
