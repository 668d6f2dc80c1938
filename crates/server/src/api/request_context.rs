//! The context of every request: an id (echoed as `X-Request-Id`), a tracing span, one log line
//! when it completes. Nothing from the body, query or header values is ever recorded.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::ApiError;
use crate::http_server::{MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES};

const REQUEST_ID: &str = "x-request-id";

/// The request's id (the caller's `X-Request-Id` when safe, else a new one), for handlers that
/// record it (the audit log).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The route template (`/tokens/{token}`), never the concrete path.
#[derive(Clone)]
struct RouteName(String);

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let span =
        tracing::info_span!("request", request_id = %id, %method, app = tracing::field::Empty);
    let mut response = match within_header_limits(&request) {
        Ok(()) => next.run(request).instrument(span.clone()).await,
        Err(refused) => span.in_scope(|| refused.into_response()),
    };
    let route = response
        .extensions()
        .get::<RouteName>()
        .map(|r| r.0.clone());
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            route = route.as_deref().unwrap_or("unmatched"),
            status,
            latency_us = started.elapsed().as_micros() as u64,
            "request completed"
        );
    });
    crate::metrics::request(route, &method, response.status(), started.elapsed());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The API's limits on the request line and headers, the same on HTTP/1 and HTTP/2 (whose
/// libraries would otherwise allow different amounts, and answer without the envelope).
fn within_header_limits(request: &Request) -> Result<(), ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong);
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge);
    }
    Ok(())
}

/// Runs inside the router, where the matched route is known, and hands it out to the logger.
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteName(route));
    }
    response
}

/// A caller's id is kept only if it is short, plain and cannot be a card number: ids are logged.
fn is_safe_request_id(id: &str) -> bool {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    let mut run = 0;
    let mut longest_digit_run = 0;
    for b in id.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        longest_digit_run = longest_digit_run.max(run);
    }
    plain && longest_digit_run < 12
}

#[cfg(test)]
mod tests {
    use super::is_safe_request_id;

    #[test]
    fn request_ids_that_could_carry_data_are_replaced() {
        assert!(is_safe_request_id("req-7f3a9c"));
        assert!(is_safe_request_id("0190f3c2-6a1b-7c3d-8e4f-123456789abc"));
        assert!(!is_safe_request_id("4242424242424242"));
        assert!(!is_safe_request_id("id with spaces"));
        assert!(!is_safe_request_id(""));
    }
}
