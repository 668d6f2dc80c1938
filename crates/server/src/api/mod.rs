//! The HTTP API: routes, shared state, and the request context every call runs in.

mod applications;
mod auth;
mod body;
pub mod cache;
mod cvc_sessions;
mod error;
mod health;
mod proxy;
mod request_context;
mod tokenize;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use cardvault_core::destination::{AllowRule, DestinationRules};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, BodyKind};
pub use proxy::tls_profile::key_aad as tls_key_aad;

use crate::crypto::Keyring;
use crate::cvc::CvcSessions;
use crate::store::{Application, DestinationTls, Project, Store};
use crate::upstream::UpstreamClient;

/// The handles every request may use; each is cheap to clone and does its own locking.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keyring: Arc<Keyring>,
    pub cvc: CvcSessions,
    pub upstream: UpstreamClient,
    pub policy: Arc<RequestPolicy>,
    pub caches: Arc<Caches>,
}

/// Answers kept for a few seconds (`cache_ttl_ms`) so a request does not ask the database again.
pub struct Caches {
    /// API key hash → its application and project.
    pub callers: cache::TtlCache<Vec<u8>, (Application, Project)>,
    /// Publishable key hash → its project.
    pub publishable_keys: cache::TtlCache<Vec<u8>, Project>,
    /// Project id → its destination allowlist and TLS settings.
    pub destinations: cache::TtlCache<String, Arc<ProjectDestinations>>,
}

impl Caches {
    pub fn new(ttl: Duration) -> Self {
        Self {
            callers: cache::TtlCache::new(ttl),
            publishable_keys: cache::TtlCache::new(ttl),
            destinations: cache::TtlCache::new(ttl),
        }
    }
}

/// A project's outbound settings, parsed.
pub struct ProjectDestinations {
    pub allow: Vec<AllowRule>,
    /// TLS settings with their host pattern parsed, exact hosts before wildcards.
    pub tls: Vec<(AllowRule, DestinationTls)>,
}

impl AppState {
    /// The project's destination settings, from the cache or the database.
    pub async fn project_destinations(
        &self,
        project_id: &str,
    ) -> Result<Arc<ProjectDestinations>, ApiError> {
        if let Some(found) = self.caches.destinations.get(&project_id.to_owned()) {
            return Ok(found);
        }
        // A stored rule that no longer parses fails the call: dropping it could empty the list,
        // and an empty list would permit everything.
        let allow = self
            .store
            .destination_rules(project_id)
            .await?
            .iter()
            .map(|r| AllowRule::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut tls = self
            .store
            .destination_tls(project_id)
            .await?
            .into_iter()
            .map(|t| AllowRule::parse(&t.host).map(|rule| (rule, t)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // Exact hosts before wildcards.
        tls.sort_by_key(|(_, t)| t.host.starts_with("*."));
        let found = Arc::new(ProjectDestinations { allow, tls });
        self.caches
            .destinations
            .insert(project_id.to_owned(), found.clone());
        Ok(found)
    }
}

/// Per-request rules fixed at start.
pub struct RequestPolicy {
    pub cvc_ttl: Duration,
    pub destinations: DestinationRules,
    /// Server-wide allowlist; empty when the operator set none.
    pub allowlist: Vec<AllowRule>,
    pub require_allowlist: bool,
    pub max_request_bytes: usize,
    pub body_read_timeout: Duration,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.policy.max_request_bytes;
    Router::new()
        .route("/tokenize", post(tokenize::tokenize))
        .route("/test-tokens", post(tokenize::test_token))
        .route("/proxy/transaction", post(proxy::transaction))
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
        .route("/api/applications/key", get(applications::current_key))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(axum::middleware::from_fn(request_context::record_route))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        .layer(axum::middleware::from_fn(request_context::request_context))
        .with_state(state)
}
