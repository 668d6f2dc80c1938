//! `DELETE /proxy/delete-cvc-session/{id}` (the id may also come in the query or a JSON body).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Caller;
use super::body::{RawBody, json_object, optional_text};
use super::{ApiError, AppState};

pub async fn delete_by_path(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    delete(&state, &caller, &id).await
}

pub async fn delete_from_query_or_body(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let id = match query.get("cvc_session_id") {
        Some(id) => Some(id.clone()),
        None if body.iter().all(u8::is_ascii_whitespace) => None,
        None => optional_text(&json_object(&body)?, "cvc_session_id")?,
    };
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::missing("cvc_session_id"))?;
    delete(&state, &caller, &id).await
}

async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<Json<Value>, ApiError> {
    caller.require_tokenization()?;
    let id = Uuid::parse_str(id.trim()).map_err(|_| ApiError::CvcSessionNotFound)?;
    if !state.cvc.delete(id, &caller.project.id).await? {
        return Err(ApiError::CvcSessionNotFound);
    }
    Ok(Json(
        json!({"success": true, "message": "CVC session deleted!"}),
    ))
}
