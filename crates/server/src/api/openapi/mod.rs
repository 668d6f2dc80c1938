//! `GET /openapi.json`: the API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types beside them, built once and served as is.

mod errors;
mod schemas;
#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::ApiError;
pub use errors::{BodyLimits, Common, ErrorBody, Idempotent, RateLimited};
pub use schemas::*;

/// The document. Every route of `api::router` is listed in `paths` (a unit test holds the two
/// together).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cardvault",
        description = "A self-hosted card-data vault with a detokenizing proxy, wire-compatible \
            with the Ozura Vault API. Every error answers with the envelope `Error`; extensions \
            to the compatible surface are marked as such."
    ),
    paths(
        super::tokenize::tokenize,
        super::tokenize::test_token,
        super::proxy::transaction,
        super::tokens::metadata,
        super::tokens::delete,
        super::detokenize::detokenize,
        super::cvc_sessions::delete_from_query_or_body,
        delete_cvc_session_trailing_slash,
        super::cvc_sessions::delete_by_path,
        super::collect::mint,
        super::collect::revoke,
        super::collect::asset,
        super::applications::current_key,
        super::applications::create,
        super::applications::list,
        super::applications::read,
        super::applications::update,
        super::applications::delete,
        super::applications::roll_key,
        super::projects::read,
        super::projects::update,
        super::projects::provision,
        super::audit_logs::list,
        super::health::healthz,
        super::health::readyz,
        metrics,
        document,
    ),
    components(schemas(ErrorBody, errors::ErrorCode, ProcessorTls)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tokens", description = "Tokenize, read, delete and reveal card and bank data"),
        (name = "proxy", description = "Send a processor request with card data filled in"),
        (name = "cvc sessions", description = "Single-use CVC sessions opened by tokenize"),
        (name = "browser collection", description = "Wax keys and the browser SDK and frames"),
        (name = "applications", description = "API keys and their permissions"),
        (name = "projects", description = "Project settings and sub-projects"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The credentials the routes take, each a header.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        components.add_security_scheme(
            "api_key",
            header(
                "X-API-Key",
                "An application's secret key (`key_<name>_test_pvt_…` / `key_<name>_live_pvt_…`).",
            ),
        );
        components.add_security_scheme(
            "pub_key",
            header(
                "X-Pub-Key",
                "The project's publishable key (`pk_test_…` / `pk_live_…`).",
            ),
        );
        components.add_security_scheme(
            "wax_key",
            header(
                "X-Wax-Key",
                "A browser checkout's key (`wax_test_…` / `wax_live_…`) from \
                 `POST /collect/sessions`, sent with `X-Tokenization-Session-Id`.",
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's metrics token."))
                    .build(),
            ),
        );
    }
}

/// The document as served, built on first use (`router` forces it at start).
static DOCUMENT: LazyLock<Option<Bytes>> = LazyLock::new(|| match ApiDoc::openapi().to_json() {
    Ok(json) => Some(Bytes::from(json)),
    Err(e) => {
        tracing::error!(cause = %e, "the OpenAPI document did not serialize");
        None
    }
});

/// Builds the served document now, so the first request does not pay for it.
pub fn prepare() {
    LazyLock::force(&DOCUMENT);
}

/// The document, pretty-printed (`cardvault openapi`).
///
/// # Errors
/// If it does not serialize (it is plain data: only a bug could make it fail).
pub fn pretty_json() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    operation_id = "getOpenApiDocument",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", body = Object),
        Common,
    )
)]
pub async fn document() -> Response {
    match &*DOCUMENT {
        Some(json) => {
            let mut response = json.clone().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => ApiError::Internal("the OpenAPI document did not serialize".into()).into_response(),
    }
}

/// The path `/proxy/delete-cvc-session/` (with its slash) is routed to the same handler as
/// `/proxy/delete-cvc-session`; an operation is documented once per path.
#[utoipa::path(
    delete,
    path = "/proxy/delete-cvc-session/",
    tag = "cvc sessions",
    summary = "Delete a CVC session named in the query or body",
    operation_id = "deleteCvcSessionByQueryOrBodySlash",
    description = "As `DELETE /proxy/delete-cvc-session` (the same call, with a trailing slash).",
    security(("api_key" = [])),
    params(("cvc_session_id" = Option<String>, Query, nullable = false, format = Uuid, description = "The session; else in the body")),
    request_body(content = Option<CvcSessionIdBody>, description = "The session, when not in the query string"),
    responses(
        (status = 200, description = "`CVC session deleted!`", body = Done),
        (status = 400, description = "`missing_field` (`cvc_session_id`), `invalid_body`", body = ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = ErrorBody),
        (status = 404, description = "`cvc_session_not_found`: unknown, expired, used, or another project's", body = ErrorBody),
        BodyLimits,
        Common,
    )
)]
#[allow(
    dead_code,
    reason = "documents a path routed to `delete_from_query_or_body`"
)]
fn delete_cvc_session_trailing_slash() {}

/// Prometheus metrics. Documented here because the route may be served on a listener of its
/// own (`metrics_listen`) rather than by `api::router`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    operation_id = "getMetrics",
    description = "Prometheus text exposition format: requests by route and status, latencies, \
        processor answers by destination, sessions, pools, rate-limited and shed counts, key \
        versions. Never card data, keys, tokens or URLs in a label.",
    security(("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "A missing or wrong bearer token"),
        Common,
    )
)]
#[allow(dead_code, reason = "documents a route served by the metrics module")]
fn metrics() {}
