//! `POST /proxy/transaction`: fill the caller's processor request with card data and send it.
//!
//! Stages, in order (each fails before any later one runs): parse and check the request (no
//! I/O), load and open the token, check the destination's addresses, take the CVC session,
//! render, send, scrub the answer. Everything before "take the CVC session" leaves the session
//! untouched; everything before "send" guarantees the processor saw nothing.

mod json_mode;
mod raw_mode;
mod request;
mod response;
pub mod tls_profile;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use cardvault_core::destination::allowlist_permits;
use cardvault_core::template::Placeholder;
use uuid::Uuid;

use super::auth::Caller;
use super::body::RawBody;
use super::{ApiError, AppState, ProjectDestinations};
use crate::cvc::CvcLease;
use crate::store::StoreError;
use crate::token_data::TokenData;
use crate::upstream::UpstreamError;

pub async fn transaction(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require_tokenization()?;
    let rules = &state.policy.destinations;
    let request = if raw_mode::applies(&headers, uri.query(), &body) {
        raw_mode::parse(&headers, uri.query(), &body, rules)?
    } else {
        json_mode::parse(&body, rules)?
    };

    let destinations = state.project_destinations(&caller.project.id).await?;
    check_allowlists(&state, &destinations, &request.url)?;

    let record = match state.store.token(&caller.project.id, &request.token).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Err(ApiError::TokenNotFound),
        Err(e) => return Err(e.into()),
    };
    let data = TokenData::open(
        &state.keyring,
        &record.sealed,
        &record.project_id,
        &record.id,
    )?;
    let mut values = data.substitutions();
    drop(data);
    let needs_cvc = request.body.placeholders().any(|p| p == Placeholder::Cvc);
    if values
        .missing(
            request
                .body
                .placeholders()
                .filter(|p| *p != Placeholder::Cvc),
        )
        .is_some()
    {
        return Err(ApiError::InvalidTemplate);
    }

    state.upstream.check_destination(&request.url).await?;
    let tls = tls_profile::for_destination(
        &state.keyring,
        &caller.project.id,
        &destinations,
        &request.url,
    )?;

    // From here a single-use session is held: a call that ends before anything was sent gives
    // it back, so the merchant's retry can still use it.
    let lease = if needs_cvc {
        let session = request
            .cvc_session_id
            .as_deref()
            .ok_or(ApiError::missing("cvc_session_id"))?;
        let session = Uuid::parse_str(session.trim()).map_err(|_| ApiError::CvcSessionNotFound)?;
        let lease = state
            .cvc
            .take(session, &caller.project.id)
            .await?
            .ok_or(ApiError::CvcSessionNotFound)?;
        if let Some(cvc) = lease.code() {
            values.set(
                Placeholder::Cvc,
                cardvault_core::secret::SecretString::new(cvc.expose_secret().to_owned()),
            );
        }
        Some(lease)
    } else {
        None
    };

    let outgoing = match request.body.render(&values) {
        Ok(outgoing) => outgoing,
        Err(e) => {
            finish_lease(lease, false).await;
            return Err(e);
        }
    };
    let sent = state
        .upstream
        .send(
            tls.as_ref(),
            request.method,
            request.url,
            request.headers,
            outgoing,
        )
        .await;
    let request_sent = sent
        .as_ref()
        .map_or_else(UpstreamError::request_sent, |_| true);
    finish_lease(lease, request_sent).await;
    let upstream = sent?;
    Ok(response::wrap(upstream, &values))
}

/// Gives a held CVC session back (nothing was sent) before answering, so the merchant's retry
/// finds it; uses it up (the processor may have seen it) in the background, off the answer's
/// path: until that lands, the session is held, which is as unusable as gone. A store that
/// cannot be reached leaves it held until its TTL ends: never usable twice, at worst not
/// usable again.
async fn finish_lease(lease: Option<CvcLease>, sent: bool) {
    let Some(lease) = lease else {
        return;
    };
    let finish = async move {
        if let Err(e) = lease.finish(sent).await {
            tracing::warn!(error = %e, sent, "CVC session could not be finished");
        }
    };
    if sent {
        tokio::spawn(finish);
    } else {
        finish.await;
    }
}

/// The server-wide list, when set, and the project's own list, when it has one, must both permit
/// the destination. With `require_allowlist`, having neither list permits nothing.
fn check_allowlists(
    state: &AppState,
    project: &ProjectDestinations,
    url: &url::Url,
) -> Result<(), ApiError> {
    let policy = &state.policy;
    if !policy.allowlist.is_empty() && !allowlist_permits(&policy.allowlist, url) {
        return Err(ApiError::InvalidProxyUrl);
    }
    if !project.allow.is_empty() && !allowlist_permits(&project.allow, url) {
        return Err(ApiError::InvalidProxyUrl);
    }
    if policy.require_allowlist && policy.allowlist.is_empty() && project.allow.is_empty() {
        return Err(ApiError::InvalidProxyUrl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use cardvault_core::destination::DestinationRules;
    use proptest::prelude::*;

    use super::{json_mode, raw_mode};

    proptest! {
        /// The fuzz target of the request parsers, run on every test pass: whatever a caller
        /// sends, parsing answers Ok or a 4xx, never a panic.
        #[test]
        fn request_parsers_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            json_text in "\\{(\"[a-z_]{1,14}\": ?(\"[^\"]{0,30}\"|[0-9]{1,3}|\\{\\}|null), ?){0,6}\"x\": 1\\}",
            content_type in "(application/json|application/x-www-form-urlencoded|text/xml|text/plain)",
            header_values in proptest::collection::vec("[ -~]{0,40}", 4),
            query in "[ -~]{0,60}",
        ) {
            let rules = DestinationRules { allow_private: true, ..DestinationRules::default() };
            let _ = json_mode::parse(&body, &rules);
            let _ = json_mode::parse(json_text.as_bytes(), &rules);
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_str(&content_type).unwrap());
            for (name, value) in ["x-token", "x-proxy-url", "x-cvc-session-id", "x-proxy-method"].iter().zip(&header_values) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            let _ = raw_mode::applies(&headers, Some(&query), &body);
            let _ = raw_mode::parse(&headers, Some(&query), &body, &rules);
            let _ = raw_mode::parse(&headers, None, json_text.as_bytes(), &rules);
        }
    }
}
