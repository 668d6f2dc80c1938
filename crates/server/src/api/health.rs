//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::openapi as doc;

/// The process is up and serving; says nothing about its backends.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    operation_id = "healthz",
    description = "Liveness: the process is up and serving; says nothing about its backends.",
    responses(
        (status = 200, description = "Alive", body = doc::Liveness),
        doc::Common,
    )
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"success": true, "message": "ok", "data": {"status": "alive"}}))
}

/// Ready to take traffic: every backend a request needs answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    operation_id = "readyz",
    description = "Readiness: 200 when the database answers (the CVC session store is reported, \
        not required: only calls that use a CVC need it).",
    responses(
        (status = 200, description = "Ready", body = doc::Readiness),
        (status = 414, description = "`uri_too_long`", body = doc::ErrorBody),
        (status = 431, description = "`headers_too_large`", body = doc::ErrorBody),
        (status = 500, description = "`internal`", body = doc::ErrorBody),
        (status = 503, description = "Not ready (the database does not answer), or `overloaded`", body = doc::NotReady,
            headers(("Retry-After" = u32, description = "Seconds to wait (with `overloaded`)"))),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match state.store.ping().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(cause = %e, "readiness: database unreachable");
            "unavailable"
        }
    };
    // CVC sessions are needed only by calls that use a CVC: the instance still serves the rest.
    let cvc_sessions = match state.cvc.ping().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(cause = %e, "readiness: CVC session store unreachable");
            "unavailable"
        }
    };
    let ready = database == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "success": ready,
        "message": if ready { "ready" } else { "Service unavailable" },
        "data": {"database": database, "cvc_sessions": cvc_sessions},
    });
    (status, Json(body))
}
