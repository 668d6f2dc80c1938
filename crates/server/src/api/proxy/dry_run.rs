//! A dry run's answer: the request the vault would have sent, card data masked.
//!
//! The outgoing body is rendered with the real values (so every encoding and escape is exactly
//! what the processor would get) and then masked by the same scrubber, with the same echoes, as
//! a processor's answer: a masked request reads exactly like a masked echo of it. Credential
//! headers are masked whole, since the caller's own secrets need not come back either.

use axum::Json;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use cardvault_core::scrub::{Echo, scrub_text};
use cardvault_core::template::Substitutions;
use serde_json::{Map, Value, json};
use url::Url;

use super::response::echoes;

/// What a credential header's value is shown as.
const MASKED_CREDENTIAL: &str = "***";

/// What the processor would have received, masked.
pub fn answer(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    values: &Substitutions,
) -> Response {
    let echoes = echoes(values);
    let mut shown = Map::new();
    for name in headers.keys() {
        let value = if is_credential(name.as_str()) {
            MASKED_CREDENTIAL.to_owned()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| masked(&String::from_utf8_lossy(v.as_bytes()), &echoes))
                .collect::<Vec<_>>()
                .join(", ")
        };
        shown.insert(name.as_str().to_owned(), Value::String(value));
    }
    let request = json!({
        "method": method.as_str(),
        "url": masked(url.as_str(), &echoes),
        "headers": shown,
        "body": masked(&String::from_utf8_lossy(body), &echoes),
    });
    Json(json!({"success": true, "dry_run": true, "request": request})).into_response()
}

fn masked(text: &str, echoes: &[Echo<'_>]) -> String {
    scrub_text(text, echoes).unwrap_or_else(|| text.to_owned())
}

/// Headers that carry the caller's credentials with the processor (header names are lower case).
fn is_credential(name: &str) -> bool {
    name == "authorization"
        || ["-key", "-token", "-secret"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::is_credential;

    #[test]
    fn credential_headers_are_told_by_name() {
        for name in [
            "authorization",
            "x-api-key",
            "stripe-key",
            "x-auth-token",
            "x-client-secret",
        ] {
            assert!(is_credential(name), "{name}");
        }
        for name in ["content-type", "idempotency-key-id", "x-merchant", "keyed"] {
            assert!(!is_credential(name), "{name}");
        }
    }
}
