//! Bounds on the work the vault takes on at once. Past `max_in_flight_requests`, a request is
//! answered at once with `503 Service unavailable` and `Retry-After` (load shedding) instead of
//! queueing: a queue would only turn overload into timeouts for everyone, and a caller that is
//! told to retry can go to another instance. Rate limits per key and budget class: [`rate`].

pub mod rate;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::api::ApiError;

/// Requests being served at once, at most.
#[derive(Clone)]
pub struct InFlightLimit(Arc<Semaphore>);

impl InFlightLimit {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }
}

/// Middleware: serves the request if there is room, else sheds it.
pub async fn shed_load(
    State(limit): State<InFlightLimit>,
    request: Request,
    next: Next,
) -> Response {
    match limit.0.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            crate::metrics::load_shed(crate::metrics::Shed::InFlight);
            ApiError::Overloaded.into_response()
        }
    }
}
