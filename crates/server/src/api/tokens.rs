//! `GET /tokens/{token}` (what a token is, never the number it holds) and
//! `DELETE /tokens/{token}` (crypto-shredding: the sealed data is erased, not flagged).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::auth::Caller;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::clock::rfc3339;
use crate::crypto::Sealed;
use crate::store::{StoreError, TokenKind, TokenRecord};
use crate::tokens::TokenData;

/// Longer than any token the vault issues (`tok_` and 32 hex digits) or imports; a longer path
/// names no token and is refused before the database is asked.
const MAX_TOKEN_LEN: usize = 128;

/// Metadata only: the card number, account number and holder name never leave through here.
#[utoipa::path(
    get,
    path = "/tokens/{token}",
    tag = "tokens",
    summary = "Read a token's metadata",
    operation_id = "getToken",
    description = "What a token is (extension): type, brand, BIN, last four digits, expiry, \
        dates, the destinations it may be sent to (when it has a rule of its own); never the \
        number it holds.",
    security(("api_key" = [])),
    params(("token" = String, Path, description = "The token (`tok_…`)")),
    responses(
        (status = 200, description = "The token's metadata", body = doc::TokenMetadataAnswer),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`token_not_found`: unknown, deleted, expired, or another project's", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_tokenization()?;
    let id = token_id(token)?;
    let record = live_token(&state, &caller.project.id, &id).await?;
    // The expiry is inside the sealed data (it changes when a deduplicated card is tokenized
    // again), so the record is opened; only the expiry, routing number and the token's own rule
    // on destinations (sealed with it, so what is shown is what the proxy enforces) are read.
    let (data, allowed) = TokenData::open_with_rule(
        &state.keyring,
        &record.sealed,
        &record.project_id,
        &record.id,
    )?;
    let mut answer = json!({
        "token": record.id,
        "type": record.kind.as_str(),
        "brand": record.brand,
        "last4": record.last4,
        "bin": record.bin,
        "expiration_month": null,
        "expiration_year": null,
        "created_at": rfc3339(record.created_at),
        "expires_at": record.expires_at.map(rfc3339),
    });
    if let Some(allowed) = allowed {
        answer["allowed_destinations"] = json!(allowed.patterns());
    }
    match (&data, record.kind) {
        (TokenData::Card { expiry, .. }, TokenKind::Card) => {
            answer["expiration_month"] = json!(expiry.month());
            answer["expiration_year"] = json!(expiry.year());
        }
        (TokenData::Bank { routing, .. }, TokenKind::Bank) => {
            answer["routing_number"] = json!(routing.as_str());
        }
        _ => {
            return Err(ApiError::Internal(
                "token kind differs from its data".into(),
            ));
        }
    }
    if caller.project.deduplicate
        && let Some(fingerprint) = &record.fingerprint
    {
        answer["fingerprint"] = json!(hex::encode(fingerprint));
    }
    Ok(Json(json!({"success": true, "data": answer})))
}

/// Erases the token's sealed data and fingerprint; from then on every call answers
/// `404 Token not found`, and tokenizing the same card again gives a new token.
#[utoipa::path(
    delete,
    path = "/tokens/{token}",
    tag = "tokens",
    summary = "Delete a token",
    operation_id = "deleteToken",
    description = "Erases the token's data (extension): from then on it is not found, and the \
        same card tokenized again gets a new token.",
    security(("api_key" = [])),
    params(("token" = String, Path, description = "The token (`tok_…`)")),
    responses(
        (status = 200, description = "`Token deleted`", body = doc::Done),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`token_not_found`", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_tokenization()?;
    let id = token_id(token)?;
    let deleted = state.store.delete_token(&caller.project.id, &id).await;
    let mut entry = caller.audit("token.delete");
    entry.token.clone_from(&id);
    entry.outcome = match &deleted {
        Ok(()) => "ok".to_owned(),
        Err(StoreError::NotFound) => ApiError::TokenNotFound.code().to_owned(),
        Err(_) => "failed".to_owned(),
    };
    state.audit(entry).await?;
    match deleted {
        Ok(()) => Ok(Json(json!({"success": true, "message": "Token deleted"}))),
        Err(StoreError::NotFound) => Err(ApiError::TokenNotFound),
        Err(e) => Err(e.into()),
    }
}

/// A live token of the caller's project: another project's, a deleted and an expired token
/// are all `404 Token not found`, told apart for no one.
///
/// # Errors
/// [`ApiError::TokenNotFound`], or the store's failure.
pub(super) async fn live_token(
    state: &AppState,
    project_id: &str,
    id: &str,
) -> Result<TokenRecord, ApiError> {
    found(id, state.store.token(project_id, id)).await
}

/// The sealed values of a live token of the project, for a call that opens it and needs
/// nothing else of the token's row (the proxy); the errors are [`live_token`]'s.
pub(super) async fn live_sealed_token(
    state: &AppState,
    project_id: &str,
    id: &str,
) -> Result<Sealed, ApiError> {
    found(id, state.store.sealed_token(project_id, id)).await
}

/// What `read` finds of the token `id`, which is not asked for when `id` could not be a token.
async fn found<T>(
    id: &str,
    read: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    if !could_be_a_token(id) {
        return Err(ApiError::TokenNotFound);
    }
    match read.await {
        Ok(found) => Ok(found),
        Err(StoreError::NotFound) => Err(ApiError::TokenNotFound),
        Err(e) => Err(e.into()),
    }
}

/// No token is empty, longer than this, or holds a control character.
fn could_be_a_token(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_TOKEN_LEN && !id.contains(char::is_control)
}

/// A path segment that does not even decode, or could not be a token, names no token.
fn token_id(token: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match token {
        Ok(Path(id)) if could_be_a_token(&id) => Ok(id),
        _ => Err(ApiError::TokenNotFound),
    }
}
