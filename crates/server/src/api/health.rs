//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// The process is up and serving; says nothing about its backends.
pub async fn healthz() -> Json<Value> {
    Json(json!({"success": true, "message": "ok", "data": {"status": "alive"}}))
}

/// Ready to take traffic: every backend a request needs answers.
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
