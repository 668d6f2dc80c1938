//! `DELETE /proxy/delete-cvc-session/{id}` (the id may also come in the query or a JSON body).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Caller;
use super::body::{RawBody, json_object, optional_text};
use super::openapi as doc;
use super::{ApiError, AppState};

#[utoipa::path(
    delete,
    path = "/proxy/delete-cvc-session/{id}",
    tag = "cvc sessions",
    summary = "Delete a CVC session",
    operation_id = "deleteCvcSession",
    description = "Deletes a CVC session before its time (it is single-use and short-lived anyway).",
    security(("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The CVC session")),
    responses(
        (status = 200, description = "`CVC session deleted!`", body = doc::Done),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`cvc_session_not_found`: unknown, expired, used, or another project's", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
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

#[utoipa::path(
    delete,
    path = "/proxy/delete-cvc-session",
    tag = "cvc sessions",
    summary = "Delete a CVC session named in the query or body",
    operation_id = "deleteCvcSessionByQueryOrBody",
    description = "As `DELETE /proxy/delete-cvc-session/{id}`, the session named in the query \
        string or, failing that, in a JSON body.",
    security(("api_key" = [])),
    params(("cvc_session_id" = Option<String>, Query, nullable = false, format = Uuid, description = "The session; else in the body")),
    request_body(content = Option<doc::CvcSessionIdBody>, description = "The session, when not in the query string"),
    responses(
        (status = 200, description = "`CVC session deleted!`", body = doc::Done),
        (status = 400, description = "`missing_field` (`cvc_session_id`), `invalid_body`, `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`cvc_session_not_found`: unknown, expired, used, or another project's", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
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
    entry.detail.set("cvc_session_id", id.to_string());
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
