//! The one Redis connection an instance keeps, shared by CVC sessions and rate limits:
//! multiplexed (concurrent commands are pipelined on it), connected lazily, reconnecting by
//! itself after Redis restarts, and failing fast rather than hanging while Redis is down.

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection to the Redis at `url`; nothing is sent until it is first used.
///
/// # Errors
/// [`RedisError`] for a malformed URL.
pub fn connect(url: &str) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}
