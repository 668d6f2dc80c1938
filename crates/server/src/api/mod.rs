//! The HTTP API: routes, shared state, and the request context every call runs in.

mod applications;
mod audit_logs;
mod auth;
mod body;
mod collect;
mod cvc_sessions;
mod detokenize;
mod error;
mod health;
mod idempotency;
pub mod metrics;
mod openapi;
mod projects;
mod proxy;
mod rate_limit;
mod request_context;
mod tokenize;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};

pub use error::{ApiError, BodyKind};
pub use openapi::pretty_json as openapi_json;
pub(crate) use tokenize::{
    validate as validate_token_data, validate_options as validate_token_options,
};

use crate::cache::TtlCache;
use crate::collect::Collect;
use crate::crypto::Keyring;
use crate::cvc::CvcSessions;
use crate::destinations::Destinations;
use crate::store::{Application, Project, Store};
use crate::upstream::UpstreamClient;

/// The handles every request may use, behind one reference count. axum clones the state
/// several times a request (router, middleware, extractors); cloned field by field that was a
/// dozen reference counts each time, shared by every serving thread's core (a few % of a proxy
/// call's CPU at saturation, docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// What [`AppState`] holds; each is cheap to clone and does its own locking.
pub struct Handles {
    pub store: Arc<dyn Store>,
    pub keyring: Arc<Keyring>,
    pub cvc: CvcSessions,
    pub destinations: Arc<Destinations>,
    pub upstream: UpstreamClient,
    pub policy: Arc<RequestPolicy>,
    pub caches: Arc<Caches>,
    pub collect: Arc<Collect>,
    pub audit: crate::audit::AuditLog,
    /// What `/metrics` serves; `None`: metrics are off.
    pub metrics: Option<Arc<metrics::MetricsAccess>>,
    pub rate_limits: crate::limits::rate::RateLimits,
    pub idempotency: crate::idempotency::Idempotency,
}

impl AppState {
    /// Commits `entry` to the audit log; a call that cannot be audited is not answered as done.
    pub async fn audit(&self, entry: crate::audit::Entry) -> Result<(), ApiError> {
        self.audit
            .record(entry)
            .await
            .map_err(|e| ApiError::Unavailable(Box::new(e)))
    }
}

/// Bound on cached API keys and publishable keys.
const MAX_CACHED_KEYS: u64 = 100_000;

/// Answers kept for a few seconds (`cache_ttl_ms`) so a request does not ask the database again.
pub struct Caches {
    /// API key hash → its application and project.
    pub callers: TtlCache<Vec<u8>, (Arc<Application>, Arc<Project>)>,
    /// Publishable key hash → its project.
    pub publishable_keys: TtlCache<Vec<u8>, Project>,
}

impl Caches {
    pub fn new(ttl: Duration) -> Self {
        Self {
            callers: TtlCache::new(ttl, MAX_CACHED_KEYS),
            publishable_keys: TtlCache::new(ttl, MAX_CACHED_KEYS),
        }
    }
}

/// Per-request rules fixed at start.
pub struct RequestPolicy {
    pub cvc_ttl: Duration,
    /// Requests served at once, at most; more are shed with 503 (see `limits`).
    pub max_in_flight_requests: usize,
    pub max_request_bytes: usize,
    pub body_read_timeout: Duration,
    /// Lifetime of a token tokenized without an expiry of its own, and the latest expiry a
    /// caller may ask for; `None`: kept until deleted.
    pub token_retention: Option<Duration>,
}

pub fn router(state: AppState) -> Router {
    let in_flight = crate::limits::InFlightLimit::new(state.policy.max_in_flight_requests);
    openapi::prepare();
    Router::new()
        .route("/tokenize", post(tokenize::tokenize))
        .route("/test-tokens", post(tokenize::test_token))
        .route("/proxy/transaction", post(proxy::transaction))
        .route(
            "/tokens/{token}",
            get(tokens::metadata).delete(tokens::delete),
        )
        .route("/detokenize", post(detokenize::detokenize))
        .route(
            "/proxy/delete-cvc-session",
            delete(cvc_sessions::delete_from_query_or_body),
        )
        .route(
            "/proxy/delete-cvc-session/",
            delete(cvc_sessions::delete_from_query_or_body),
        )
        .route(
            "/proxy/delete-cvc-session/{id}",
            delete(cvc_sessions::delete_by_path),
        )
        .route("/collect/sessions", post(collect::mint))
        .route("/collect/sessions/{id}", delete(collect::revoke))
        .route("/collect/v1/{file}", get(collect::asset))
        .route("/api/applications/key", get(applications::current_key))
        .route(
            "/api/applications",
            post(applications::create).get(applications::list),
        )
        .route(
            "/api/applications/{id}",
            get(applications::read)
                .put(applications::update)
                .delete(applications::delete),
        )
        .route(
            "/api/applications/{id}/roll-key",
            post(applications::roll_key),
        )
        .route(
            "/api/projects/{id}",
            get(projects::read).patch(projects::update),
        )
        .route("/internal/provision", post(projects::provision))
        .route("/audit-logs", get(audit_logs::list))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // Answers 404, as an unknown route, when no metrics token is set.
        .route("/metrics", get(metrics::behind_token))
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(request_context::FrameLayer::new(in_flight))
        .with_state(state)
}
