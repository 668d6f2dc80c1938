//! `POST /proxy/transaction`: fill the caller's processor request with card data and send it.
//!
//! The handler is a list of stages, each failing before any later one runs:
//! 1. parse and check the request (no I/O): [`json_mode`] or [`raw_mode`] into a [`ProxyRequest`];
//! 2. the destination gate: the project's allowlists, then the destination's addresses;
//! 3. load and open the token, and check its own `allowed_destinations`;
//! 4. take the CVC session (held, not consumed, while the call runs);
//! 5. render and send;
//! 6. scrub the answer.
//!
//! Everything before stage 4 leaves the session untouched; a call that fails before anything
//! is sent gives it back; everything before "send" guarantees the processor saw nothing.
//! A dry run ([`dry_run`]) runs every stage up to "send", gives the session back, and answers
//! with the masked request instead.
//! Every call, answered or refused, is an audit record (token, destination host, processor
//! status, `request_sent`, latency), committed before the answer.

mod dry_run;
mod json_fields;
mod json_mode;
mod media_type;
mod raw_mode;
mod request;
mod response;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use cardvault_core::template::{Placeholder, Substitutions};

use self::request::{CvcSessionRef, ProxyRequest};
use super::auth::Caller;
use super::body::TargetHeadersBody;
use super::idempotency::Once;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::cvc::CvcLease;
use crate::metrics::{Stage, StageClock, timed};
use crate::tokens::TokenData;

/// `POST /proxy/transaction`.
#[utoipa::path(
    post,
    path = "/proxy/transaction",
    tag = "proxy",
    summary = "Send a processor request with card data filled in",
    operation_id = "proxyTransaction",
    description = "Sends a request to the payment processor with the token's data filled into \
        its placeholders, and answers with the processor's answer, echoed card data masked.\n\n\
        **JSON mode** (`Content-Type: application/json`): the body describes the call \
        (`ProxyJsonRequest`).\n\n\
        **Raw mode** (a form or XML body, or any body when `X-Proxy-URL` is sent): the body is \
        the processor body with placeholders; `token`, `proxy_url` and `cvc_session_id` come from \
        the headers `X-Token`, `X-Proxy-URL`, `X-CVC-Session-ID`, else from the query string, \
        else (forms only) from form fields of those names, which are then removed; the method \
        from `X-Proxy-Method`. The request's own headers are forwarded, less hop-by-hop \
        headers, `Host`, `Content-Length`, `Cookie`, `X-Forwarded-*` and the vault's own.\n\n\
        **Dry run** (`\"dry_run\": true`, or `X-Dry-Run: true` in raw mode): every check of a \
        real call (destination rules and addresses, the token and its `allowed_destinations`, \
        the template, the CVC session, which is not used up), then `200` with the request that \
        would have been sent (`DryRunAnswer`), card data masked as in an echo and credential \
        headers as `***`; nothing is sent.",
    security(("api_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Makes retries safe: the first call with it runs, a retry of the same request gets its answer (with `Idempotent-Replayed: true`); 1 to 255 printable ASCII characters, per project"),
        ("X-Token" = Option<String>, Header, nullable = false, description = "Raw mode: the token"),
        ("X-Proxy-URL" = Option<String>, Header, nullable = false, description = "Raw mode: the processor URL; with it, any body is raw mode"),
        ("X-CVC-Session-ID" = Option<String>, Header, nullable = false, description = "Raw mode: the CVC session, when the body uses `${cvv}`/`${cvc}`"),
        ("X-Proxy-Method" = Option<doc::HttpMethod>, Header, nullable = false, description = "Raw mode: the outgoing method (default `POST`)"),
        ("X-Dry-Run" = Option<bool>, Header, nullable = false, description = "Raw mode: `true` for a dry run (nothing is sent)"),
        ("token" = Option<String>, Query, nullable = false, description = "Raw mode: the token, when not in `X-Token`"),
        ("proxy_url" = Option<String>, Query, nullable = false, description = "Raw mode: the processor URL, when not in `X-Proxy-URL`"),
        ("cvc_session_id" = Option<String>, Query, nullable = false, description = "Raw mode: the CVC session, when not in `X-CVC-Session-ID`"),
    ),
    request_body(content(
        (doc::ProxyJsonRequest = "application/json"),
        (String = "application/x-www-form-urlencoded"),
        (String = "application/xml"),
        (String = "text/xml"),
        (String = "*/*"),
    )),
    responses(
        (status = 200, description = "The processor answered (whatever its status; `X-Upstream-Status` is set), or a dry run passed every check", body = doc::ProxyOrDryRunAnswer,
            headers(
                ("X-Upstream-Status" = u16, description = "The processor's status code (not on a dry run)"),
                ("Idempotent-Replayed" = bool, description = "`true` on an answer replayed for a repeated `Idempotency-Key`"),
            )),
        (status = 400, description = "`invalid_body`, `missing_field`, `invalid_field`, `invalid_proxy_url` (the destination is refused, by the server's, the project's or the token's own rule: `detail` names it), `invalid_template` (`detail` says why)", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`", body = doc::ErrorBody),
        (status = 404, description = "`token_not_found`; `cvc_session_not_found`: unknown, expired, used, or another project's", body = doc::ErrorBody),
        (status = 502, description = "`upstream_error`: the processor could not be reached, the TLS handshake failed, the connection was reset, or the answer is too large; `request_sent` says whether it may have seen the request", body = doc::ErrorBody),
        (status = 504, description = "`upstream_timeout`: the processor did not answer in time; see `request_sent`", body = doc::ErrorBody),
        doc::Idempotent,
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn transaction(
    State(state): State<AppState>,
    ProxyCaller(caller): ProxyCaller,
    TargetHeadersBody { uri, headers, body }: TargetHeadersBody,
) -> Result<Response, ApiError> {
    caller.require_tokenization()?;
    let once = Once::new(
        &state,
        &caller.project.id,
        &Method::POST,
        &uri,
        &headers,
        &body,
        || caller.audit("proxy"),
    )?;
    let call_state = state.clone();
    let call = async move { proxy_and_audit(&call_state, &caller, &uri, &headers, &body).await };
    once.run(&state, call).await
}

/// Stages 1–6, and the call's audit record.
async fn proxy_and_audit(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let mut entry = caller.audit("proxy");
    let result = forward(state, caller, uri, headers, body, &mut entry).await;
    match &result {
        // A dry run that passed every check sent nothing: never an `ok` a reader could count
        // as a charge.
        Ok(_) if entry.detail.get("dry_run") == Some(&true.into()) => {
            entry.outcome = "dry_run".to_owned();
        }
        // An entry's outcome is `ok` until said otherwise.
        Ok(_) => {}
        Err(e) => entry.outcome = e.code().to_owned(),
    }
    let ended = std::time::Instant::now();
    entry
        .detail
        .set("latency_ms", ended.duration_since(started).as_millis());
    let mut clock = StageClock::start_at(ended);
    let recorded = state.audit(entry).await;
    clock.lap(Stage::Audit);
    recorded?;
    result
}

/// The caller, its authentication timed as the proxy's first stage.
pub struct ProxyCaller(Caller);

impl FromRequestParts<AppState> for ProxyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        timed(Stage::Auth, Caller::from_request_parts(parts, state))
            .await
            .map(Self)
    }
}

async fn forward(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    entry: &mut crate::audit::Entry,
) -> Result<Response, ApiError> {
    let request = parse(state, headers, uri, body)?;
    // The host only: a path or query could carry anything the caller put there.
    entry.token.clone_from(&request.token);
    entry
        .detail
        .set("host", request.url.host_str().unwrap_or(""));
    if request.dry_run {
        entry.detail.set("dry_run", true);
    }
    let project_id = caller.project.id.as_str();

    // Each stage ends where the next begins (see `StageClock`); parsing is none of them.
    let mut clock = StageClock::start();
    let destinations = state.destinations.project(project_id).await?;
    let destination = state
        .destinations
        .permit(&destinations, &request.url)
        .map_err(refused)?;
    // The processor's TLS settings, by the same project rules.
    let tls = destinations.tls_for(&request.url);
    clock.lap(Stage::Destination);
    // A stage that fails is timed too, as far as it went.
    let values = token_values(state, project_id, &request).await;
    clock.lap(Stage::TokenLoad);
    let mut values = values?;
    let resolved = state.destinations.check_addresses(&request.url).await;
    clock.lap(Stage::Resolve);
    resolved?;

    let lease = match request.cvc_session {
        Some(session) => {
            let lease = take_cvc(state, project_id, session, &mut values).await;
            clock.lap(Stage::Cvc);
            Some(lease?)
        }
        None => None,
    };
    let rendered = request.body.render(&values);
    clock.lap(Stage::Render);
    let outgoing = match rendered {
        Ok(outgoing) => outgoing,
        Err(e) => {
            finish_lease(lease, false).await;
            return Err(e);
        }
    };
    if request.dry_run {
        // Nothing is sent: the session is given back, as after any call that sent nothing.
        if lease.is_some() {
            finish_lease(lease, false).await;
            clock.restart();
        }
        entry.detail.set("request_sent", false);
        let answer = dry_run::answer(
            &request.method,
            &request.url,
            &request.headers,
            &outgoing,
            &values,
        );
        clock.lap(Stage::Scrub);
        return Ok(answer);
    }
    let sent = state
        .upstream
        .send(
            tls.as_deref(),
            request.method,
            request.url,
            request.headers,
            outgoing,
        )
        .await;
    clock.lap(Stage::Upstream);
    crate::metrics::processor_answer(&destination, &sent);
    let request_sent = sent.as_ref().map_or_else(|e| e.request_sent(), |_| true);
    entry.detail.set("request_sent", request_sent);
    if let Ok(answer) = &sent {
        entry.detail.set("upstream_status", answer.status.as_u16());
    }
    if lease.is_some() {
        finish_lease(lease, request_sent).await;
        clock.restart();
    }
    let answer = sent?;
    let wrapped = response::wrap(answer, &values);
    clock.lap(Stage::Scrub);
    Ok(wrapped)
}

/// Stage 1: the call as the caller described it, checked without I/O.
fn parse(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<ProxyRequest, ApiError> {
    let urls = state.destinations.urls();
    if raw_mode::applies(headers, uri.query(), body) {
        raw_mode::parse(headers, uri.query(), body, urls)
    } else {
        json_mode::parse(body, urls)
    }
}

fn refused(refusal: crate::destinations::Refusal) -> ApiError {
    ApiError::InvalidProxyUrl.because(refusal.reason())
}

/// Stage 3: the token's values, checked against the token's own `allowed_destinations` and
/// against what the template uses (the CVC comes later, from its session).
async fn token_values(
    state: &AppState,
    project_id: &str,
    request: &ProxyRequest,
) -> Result<Substitutions, ApiError> {
    let sealed = crate::api::tokens::live_sealed_token(state, project_id, &request.token).await?;
    // The row was found by exactly this project and id, which are what it was sealed with.
    let (data, allowed) =
        TokenData::open_with_rule(&state.keyring, &sealed, project_id, &request.token)?;
    if let Some(allowed) = allowed
        && !allowed.permits(&request.url)
    {
        return Err(refused(crate::destinations::Refusal::NotInTokenRule));
    }
    let values = data.substitutions();
    let used = request
        .body
        .placeholders()
        .filter(|p| *p != Placeholder::Cvc);
    if values.missing(used).is_some() {
        return Err(
            ApiError::InvalidTemplate.because("the template uses a value this token does not hold")
        );
    }
    Ok(values)
}

/// Stage 4: the CVC, from a session held until the call says whether it was sent.
async fn take_cvc(
    state: &AppState,
    project_id: &str,
    session: CvcSessionRef,
    values: &mut Substitutions,
) -> Result<CvcLease, ApiError> {
    let CvcSessionRef::Id(id) = session else {
        return Err(ApiError::CvcSessionNotFound);
    };
    let lease = state
        .cvc
        .take(id, project_id)
        .await?
        .ok_or(ApiError::CvcSessionNotFound)?;
    if let Some(cvc) = lease.code() {
        values.set_str(Placeholder::Cvc, cvc.expose_secret());
    }
    Ok(lease)
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use std::time::Duration;

    use cardvault_core::destination::DestinationRules;
    use proptest::prelude::*;

    use crate::destinations::UrlChecks;

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
            let rules = UrlChecks::new(rules, Duration::from_secs(60));
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
