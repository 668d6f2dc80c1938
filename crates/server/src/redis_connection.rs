//! The Redis connection an instance keeps, shared by CVC sessions and rate limits:
//! multiplexed (concurrent commands are pipelined on it), connected lazily, reconnecting by
//! itself after Redis restarts, and failing fast rather than hanging while Redis is down. With
//! serving threads, each has a connection of its own (see [`OnePerServingThread`]).

use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::serving_threads::OnePerServingThread;

/// The calling thread's connection: `connection.get().clone()`.
pub type RedisConnection = Arc<OnePerServingThread<ConnectionManager>>;

/// A connection to the Redis at `url` for each serving thread, and one for every other
/// thread; nothing is sent until it is first used.
///
/// # Errors
/// [`RedisError`] for a malformed URL.
pub fn connect(url: &str) -> Result<RedisConnection, RedisError> {
    let client = redis::Client::open(url)?;
    let shared = lazy_connection(client.clone())?;
    let fallback = shared.clone();
    Ok(Arc::new(OnePerServingThread::per_thread(
        shared,
        move || {
            // The client and its settings were accepted once already: this cannot fail.
            lazy_connection(client.clone()).unwrap_or_else(|_| fallback.clone())
        },
    )))
}

fn lazy_connection(client: redis::Client) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}
