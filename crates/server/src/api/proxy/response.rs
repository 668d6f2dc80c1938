//! The processor's answer, wrapped for the caller with every injected secret masked.

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use cardvault_core::mask;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use cardvault_core::template::{Placeholder, Substitutions};
use serde_json::{Map, Value, json};

use super::media_type::MediaType;
use crate::upstream::UpstreamResponse;

/// Response headers that describe the processor's connection or session, not the answer.
/// `content-encoding` goes too: the upstream client has already decompressed the body.
const DROPPED_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "set-cookie",
    "content-length",
    "content-encoding",
];

/// Account numbers this long are specific enough to mask wherever their digits appear; shorter
/// ones are masked where they are a whole value (templates may only place them there).
const LONG_ACCOUNT_DIGITS: usize = 8;

pub fn wrap(upstream: UpstreamResponse, values: &Substitutions) -> Response {
    let echoes = echoes(values);
    let mut headers = Map::new();
    for name in upstream.headers.keys() {
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        // Each value is scrubbed on its own, so a value that is exactly a CVC is a whole value.
        let scrubbed = upstream
            .headers
            .get_all(name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                scrub_text(&text, &echoes).unwrap_or_else(|| text.into_owned())
            })
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), Value::String(scrubbed));
    }
    let text = String::from_utf8_lossy(&upstream.body);
    let text = scrub_text(&text, &echoes).unwrap_or_else(|| text.into_owned());
    let body = if MediaType::of(&upstream.headers) == Some(MediaType::Json) {
        serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
    } else {
        Value::String(text)
    };
    let status = upstream.status.as_u16();
    let wrapped = json!({
        "success": true,
        "proxy_response": {"status_code": status, "headers": headers, "body": body},
    });
    let mut response = Json(wrapped).into_response();
    if let Ok(value) = HeaderValue::from_str(&status.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-upstream-status"), value);
    }
    response
}

/// The injected secrets to look for in the answer. Routing numbers are public bank
/// identifiers, not secrets, and are left alone.
pub(super) fn echoes(values: &Substitutions) -> Vec<Echo<'_>> {
    let mut echoes = Vec::new();
    if let Some(pan) = values.get(Placeholder::CardNumber) {
        let mask = mask::card_number(pan);
        echoes.push(Echo {
            secret: pan,
            mask,
            kind: EchoKind::Number,
        });
    }
    if let Some(account) = values.get(Placeholder::AccountNumber) {
        let kind = if account.len() >= LONG_ACCOUNT_DIGITS {
            EchoKind::Number
        } else {
            EchoKind::Code
        };
        echoes.push(Echo {
            secret: account,
            mask: mask::account_number(account),
            kind,
        });
    }
    if let Some(cvc) = values.get(Placeholder::Cvc) {
        let mask = mask::CVC.to_owned();
        echoes.push(Echo {
            secret: cvc,
            mask,
            kind: EchoKind::Code,
        });
    }
    echoes
}
