//! The sweeper: crypto-shreds tokens past their expiry, as a delete does.
//!
//! Expired tokens are already answered as not found by every read; the sweeper makes that
//! permanent by erasing their sealed data. Every instance runs one: the erasure is idempotent,
//! so instances sharing a database only repeat each other's work, never undo it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_unix;
use crate::store::{Store, StoreError};

pub const DEFAULT_INTERVAL_SECONDS: u64 = 60;
/// Tokens erased per statement: short transactions, so tokenize and proxy calls never wait long.
const BATCH: u32 = 1_000;
/// Batches per sweep at most; what is left waits for the next sweep (it is unusable already).
const MAX_BATCHES_PER_SWEEP: u32 = 100;

/// The running sweeper; it stops when this is dropped.
pub struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts sweeping `store` every `interval`, the first sweep at once.
pub fn start(store: Arc<dyn Store>, interval: Duration) -> Sweeper {
    Sweeper(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(store.as_ref(), now_unix()).await {
                Ok(0) => {}
                Ok(erased) => tracing::info!(tokens = erased, "expired tokens erased"),
                // The database's state is reported where it is watched (`/readyz`, the file
                // watch), once; here it is only a sweep put off.
                Err(e) if e.is_unavailable() => tracing::debug!(
                    cause = %crate::error_chain::chain(&e),
                    "expired tokens not erased: the database is unavailable"
                ),
                Err(e) => tracing::warn!(
                    cause = %crate::error_chain::chain(&e),
                    "expired tokens could not be erased; the next sweep tries again"
                ),
            }
        }
    }))
}

/// Erases the tokens expired at `now`, in batches; returns how many.
///
/// # Errors
/// [`StoreError`] from the database; the tokens erased before it stay erased.
pub async fn sweep(store: &dyn Store, now: i64) -> Result<u64, StoreError> {
    let mut erased = 0;
    for _ in 0..MAX_BATCHES_PER_SWEEP {
        let batch = store.shred_expired_tokens(now, BATCH).await?;
        erased += batch;
        if batch < u64::from(BATCH) {
            break;
        }
    }
    Ok(erased)
}
