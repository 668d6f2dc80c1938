//! Browser collection over HTTP: minting and revoking wax keys (`/collect/sessions`), and the
//! SDK and frames (`/collect/v1/…`) with the headers that keep them from being misused.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::auth::{Caller, project_by_pub_key};
use super::body::{RawBody, json_object, required_text};
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::collect::assets::{self, Kind};
use crate::collect::{Collect, DEFAULT_MAX_TOKENIZE_CALLS, MAX_TOKENIZE_CALLS, Refusal};
use crate::store::{Project, StoreError};

/// `POST /collect/sessions`: the merchant's backend mints a wax key for one checkout.
#[utoipa::path(
    post,
    path = "/collect/sessions",
    tag = "browser collection",
    summary = "Mint a wax key for a browser checkout",
    operation_id = "createCollectSession",
    description = "Mints a wax key for one checkout (extension): the vault's card fields in the \
        shopper's browser tokenize with it, up to `max_tokenize_calls` times, until it expires.",
    security(("api_key" = [])),
    request_body = doc::CollectSessionRequest,
    responses(
        (status = 201, description = "Minted; the wax key is shown once", body = doc::CollectSession),
        (status = 400, description = "`invalid_body`, `missing_field`, `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn mint(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_tokenization()?;
    let body = json_object(&body)?;
    let session_id = required_text(&body, "tokenization_session_id")?;
    if !Collect::is_valid_session_id(&session_id) {
        return Err(ApiError::invalid("tokenization_session_id")
            .because("1 to 128 letters, digits, '-' or '_'"));
    }
    let calls = match body.get("max_tokenize_calls") {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENIZE_CALLS,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_TOKENIZE_CALLS).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("max_tokenize_calls").because("an integer from 1 to 100")
            })?,
        Some(_) => {
            return Err(ApiError::invalid("max_tokenize_calls").because("an integer from 1 to 100"));
        }
    };
    let minted = state
        .collect
        .mint(&caller.project, &session_id, calls)
        .await
        .map_err(|e| match e {
            crate::collect::MintError::Store(e) => ApiError::from(e),
            crate::collect::MintError::Crypto(e) => ApiError::Internal(Box::new(e)),
        })?;
    let mut entry = caller.audit("collect_session.create");
    entry
        .detail
        .set("tokenization_session_id", session_id.clone());
    state.audit(entry).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "success": true,
            "wax_key": minted.wax_key.expose_secret(),
            "tokenization_session_id": session_id,
            "max_tokenize_calls": calls,
            "expires_at": crate::clock::rfc3339(minted.expires_at),
        })),
    ))
}

/// `DELETE /collect/sessions/{tokenization_session_id}`: revokes the checkout's wax keys.
#[utoipa::path(
    delete,
    path = "/collect/sessions/{id}",
    tag = "browser collection",
    summary = "Revoke a checkout's wax keys",
    operation_id = "revokeCollectSession",
    description = "Revokes the wax keys of a checkout (extension).",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The checkout's `tokenization_session_id`")),
    responses(
        (status = 200, description = "`Client session revoked`", body = doc::Done),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`client_session_not_found`", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_tokenization()?;
    let Ok(Path(id)) = id else {
        return Err(ApiError::ClientSessionNotFound);
    };
    let revoked = state.collect.revoke(&caller.project.id, &id).await;
    let mut entry = caller.audit("collect_session.revoke");
    entry.detail.set("tokenization_session_id", id.clone());
    if let Err(StoreError::NotFound) = &revoked {
        entry.outcome = ApiError::ClientSessionNotFound.code().to_owned();
    }
    state.audit(entry).await?;
    match revoked {
        Ok(()) => Ok(Json(
            json!({"success": true, "message": "Client session revoked"}),
        )),
        Err(StoreError::NotFound) => Err(ApiError::ClientSessionNotFound),
        Err(e) => Err(e.into()),
    }
}

/// The project behind a browser's tokenize call and its right to make it: `X-Pub-Key`,
/// `X-Wax-Key`, `X-Tokenization-Session-Id` and `X-Collect-Origin` (the page embedding the
/// frames, which the frame was served for).
pub async fn authorize_browser(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Project, crate::collect::Grant), ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let pub_key = header("x-pub-key")
        .ok_or_else(|| ApiError::InvalidApiKey.because("the X-Pub-Key header is missing"))?;
    let project = project_by_pub_key(state, pub_key)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let (Some(wax_key), Some(session_id)) =
        (header("x-wax-key"), header("x-tokenization-session-id"))
    else {
        return Err(ApiError::ClientSessionNotFound);
    };
    let origin = header("x-collect-origin").unwrap_or("null");
    let grant = state
        .collect
        .authorize(&project, wax_key, session_id, origin)
        .await
        .map_err(refusal)?;
    // Counted per checkout once the wax key is known good: a made-up session id has no
    // bucket to fill.
    state
        .rate_limits
        .admit(
            crate::limits::rate::Budget::Browser,
            &format!("{}:{session_id}", project.id),
        )
        .await?;
    Ok((project, grant))
}

pub fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::SessionNotFound => ApiError::ClientSessionNotFound,
        Refusal::OriginNotAllowed => ApiError::PermissionDenied
            .because("the page's origin is not one of the project's allowed origins"),
        Refusal::Store(e) => e.into(),
    }
}

/// `GET /collect/v1/{file}`.
#[utoipa::path(
    get,
    path = "/collect/v1/{file}",
    tag = "browser collection",
    summary = "The browser SDK and card-field frames",
    operation_id = "getCollectFile",
    description = "The browser SDK (`cardvault.js`, loadable from any origin) and the card-field \
        and tokenizer frames with their scripts and styles. A frame is served only for a page \
        whose origin the project allows (`pk` and `origin`), with a CSP `frame-ancestors` of \
        the project's origins; otherwise a page that cannot be framed (403).",
    params(
        ("file" = String, Path, description = "A file name, e.g. `cardvault.js` or `card-number.html`"),
        ("pk" = Option<String>, Query, nullable = false, description = "Frames: the project's publishable key"),
        ("origin" = Option<String>, Query, nullable = false, description = "Frames: the origin of the embedding page"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript; charset=utf-8"),
            (String = "text/html; charset=utf-8"),
            (String = "text/css; charset=utf-8"),
        )),
        (status = 403, description = "A frame for a page the project does not allow: a page that cannot be framed", body = String, content_type = "text/html; charset=utf-8"),
        (status = 404, description = "`not_found`: no such file", body = doc::ErrorBody),
        doc::Common,
    )
)]
pub async fn asset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(asset) = assets::find(&name) else {
        return ApiError::RouteNotFound.into_response();
    };
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    match asset.kind {
        Kind::Sdk => {
            // Any merchant page may load the SDK; CORS lets it check the integrity hash.
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
        }
        Kind::Support => {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
        }
        Kind::Frame => return frame(&state, query.as_deref(), response).await,
    }
    response
}

/// A frame page: framed only by the project's allowed origins, and only for a page that says
/// it is one of them; anything else gets a page that cannot be framed.
async fn frame(state: &AppState, query: Option<&str>, mut response: Response) -> Response {
    let param = |name: &str| {
        query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let ancestors = match (param("pk"), param("origin")) {
        (Some(pk), Some(origin)) => match frame_ancestors(state, &pk, &origin).await {
            Ok(ancestors) => ancestors,
            Err(e) => return e.into_response(),
        },
        _ => None,
    };
    let Some(ancestors) = ancestors else {
        return refused_frame();
    };
    let csp = format!("{FRAME_POLICY}; frame-ancestors {ancestors}");
    let headers = response.headers_mut();
    match HeaderValue::from_str(&csp) {
        Ok(value) => headers.insert(header::CONTENT_SECURITY_POLICY, value),
        Err(_) => return refused_frame(),
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The project's origins as a CSP source list, if `pk` names a project that allows `origin`.
async fn frame_ancestors(
    state: &AppState,
    pk: &str,
    origin: &str,
) -> Result<Option<String>, ApiError> {
    let Some(project) = project_by_pub_key(state, pk).await? else {
        return Ok(None);
    };
    let origins = state.collect.origins(&project.id).await?;
    if !cardvault_core::origin::is_allowed(&origins, origin) {
        tracing::debug!(project = %project.id, "frame refused: the page's origin is not allowed");
        return Ok(None);
    }
    Ok(Some(
        origins
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

/// Everything a frame may load comes from the vault itself; no inline script or style.
const FRAME_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; \
     form-action 'none'";

fn refused_frame() -> Response {
    const PAGE: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
        <title>Not available</title><p>This card field cannot be shown on this page: its \
        origin is not one of the project's allowed origins.</p></html>";
    let mut response = (StatusCode::FORBIDDEN, PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const HTML: &str = "text/html; charset=utf-8";
