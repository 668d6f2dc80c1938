//! Bounds on the work the vault takes on at once. Past `max_in_flight_requests`, a request is
//! answered at once with `503 Service unavailable` and `Retry-After` (load shedding) instead of
//! queueing: a queue would only turn overload into timeouts for everyone, and a caller that is
//! told to retry can go to another instance. Rate limits per key and budget class: [`rate`].

pub mod rate;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests being served at once, at most.
#[derive(Clone)]
pub struct InFlightLimit(Arc<Semaphore>);

impl InFlightLimit {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }

    /// A place for one more request, or `None`: shed it (see `api::request_context`).
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}
