//! `DELETE /proxy/delete-cvc-session/{id}` (the id may also come in the query or a JSON body).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Caller;
use super::body::{RawBody, json_object, optional_text};
use super::{ApiError, AppState};

pub async fn delete_by_path(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    // A path that does not even decode names no session.
    let Ok(Path(id)) = id else {
        caller.require_tokenization()?;
        return Err(ApiError::CvcSessionNotFound);
    };
    delete(&state, &caller, &id).await
}

pub async fn delete_from_query_or_body(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let from_query = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "cvc_session_id")
            .map(|(_, v)| v.into_owned())
    });
    let id = match from_query {
        Some(id) => Some(id),
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
    let deleted = state.cvc.delete(id, &caller.project.id).await?;
    let mut entry = caller.audit("cvc_session.delete");
    entry.detail["cvc_session_id"] = id.to_string().into();
    if !deleted {
        entry.outcome = ApiError::CvcSessionNotFound.code().to_owned();
    }
    state.audit(entry).await?;
    if !deleted {
        return Err(ApiError::CvcSessionNotFound);
    }
    Ok(Json(
        json!({"success": true, "message": "CVC session deleted!"}),
    ))
}
