//! `GET /metrics`: the Prometheus exposition, on the main listener behind a bearer token
//! (`metrics_token`), and/or on a plain-HTTP listener of its own (`metrics_listen`), meant for
//! a private network, without one. With neither set there is no `/metrics` (404 as any
//! unknown route) and nothing is recorded.

use std::net::SocketAddr;

use aws_lc_rs::digest::{SHA256, digest};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, AppState};
use crate::config::Redacted;
use crate::http_server::{self, ConnectionLimits};
use crate::metrics::Scraper;

const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapers connected to the metrics listener at once, at most.
const OWN_LISTENER_MAX_CONNECTIONS: usize = 64;

/// What `/metrics` serves, and the token the main listener asks for.
pub struct MetricsAccess {
    pub scraper: Scraper,
    /// `None`: no `/metrics` on the main listener.
    token: Option<BearerToken>,
}

impl MetricsAccess {
    pub fn new(scraper: Scraper, token: Option<&Redacted>) -> Self {
        Self {
            scraper,
            token: token.map(|t| BearerToken::new(t.expose())),
        }
    }
}

/// The metrics token, kept as its SHA-256 digest.
struct BearerToken(Vec<u8>);

impl BearerToken {
    fn new(token: &str) -> Self {
        Self(digest(&SHA256, token.as_bytes()).as_ref().to_vec())
    }

    /// Whether `Authorization: Bearer <token>` carries the token. Digests of equal length are
    /// compared in constant time, so the answer's timing says nothing about the token.
    fn permits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        let presented = digest(&SHA256, presented.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_ref(), &self.0).is_ok()
    }
}

/// The metrics listener; it stops when this is dropped.
pub struct OwnListener(tokio::task::JoinHandle<()>);

impl Drop for OwnListener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `/metrics` alone on `addr`, plain HTTP and without a token, with the main
/// listener's connection timeouts and a small connection cap.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_own_listener(
    addr: SocketAddr,
    scraper: Scraper,
    limits: ConnectionLimits,
) -> std::io::Result<OwnListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving /metrics without a token on a non-loopback address: keep it on a private \
             network, or set metrics_token and scrape the main listener instead"
        );
    }
    tracing::info!(%addr, "metrics listening");
    let limits = ConnectionLimits {
        max_connections: OWN_LISTENER_MAX_CONNECTIONS,
        // A scrape reads the stores (PostgreSQL, Redis) whose connections belong to the shared
        // runtime: served there, not on a thread of its own.
        serving_threads: 0,
        ..limits
    };
    let app = own_listener(scraper);
    Ok(OwnListener(tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = http_server::run(listener, app, limits, None, never).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    })))
}

/// The router of the metrics listener: `/metrics` only, no token.
fn own_listener(scraper: Scraper) -> Router {
    Router::new()
        .route("/metrics", get(open))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(scraper)
}

pub(super) async fn behind_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((access, token)) = state
        .metrics
        .as_ref()
        .and_then(|access| Some((access, access.token.as_ref()?)))
    else {
        return ApiError::RouteNotFound.into_response();
    };
    if !token.permits(&headers) {
        let mut refused = ApiError::InvalidApiKey
            .because("GET /metrics needs Authorization: Bearer <metrics_token>")
            .into_response();
        refused
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return refused;
    }
    exposition(&access.scraper).await
}

async fn open(State(scraper): State<Scraper>) -> Response {
    exposition(&scraper).await
}

async fn exposition(scraper: &Scraper) -> Response {
    let text = scraper.render().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_bearer_token_itself_opens_the_metrics() {
        let token = BearerToken::new("0123456789abcdef-token");
        assert!(token.permits(&with_authorization("Bearer 0123456789abcdef-token")));
        assert!(token.permits(&with_authorization("bearer 0123456789abcdef-token")));
        for refused in [
            "Bearer 0123456789abcdef-tokeN",
            "Bearer 0123456789abcdef-token2",
            "Bearer 0123456789abcdef",
            "Bearer ",
            "Basic 0123456789abcdef-token",
            "0123456789abcdef-token",
        ] {
            assert!(!token.permits(&with_authorization(refused)), "{refused}");
        }
        assert!(!token.permits(&HeaderMap::new()));
    }
}
