//! The processor's answer, wrapped for the caller with every injected secret masked.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use cardvault_core::mask;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use cardvault_core::template::{Placeholder, Substitutions};
use serde::Serialize;
use serde_json::value::RawValue;

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
    let mut headers = Vec::with_capacity(upstream.headers.keys_len());
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
        headers.push((name.as_str(), scrubbed));
    }
    let text = String::from_utf8_lossy(&upstream.body);
    let text = scrub_text(&text, &echoes).map_or(text, Cow::Owned);
    // A JSON answer is passed on as the (scrubbed) text it came as, once checked to be one JSON
    // value as strictly as a `Value` would read it: rebuilt as a tree and written out again it
    // cost ~5 µs a call at saturation, a tenth of the vault's own work (docs/benchmarks.md).
    // Its keys stay as the processor sent them.
    let json = MediaType::of(&upstream.headers) == Some(MediaType::Json)
        && crate::api::body::is_one_json_value(&text);
    let body = match json.then(|| serde_json::from_str::<&RawValue>(&text)) {
        Some(Ok(raw)) => Body::Json(raw),
        _ => Body::Text(&text),
    };
    let status = upstream.status.as_u16();
    let wrapped = Wrapped {
        success: true,
        proxy_response: ProxyResponse {
            status_code: status,
            headers: Headers(&headers),
            body,
        },
    };
    let mut response = Json(wrapped).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-upstream-status"),
        HeaderValue::from(status),
    );
    response
}

/// `{"success": true, "proxy_response": {…}}`, the caller's answer.
#[derive(Serialize)]
struct Wrapped<'a> {
    success: bool,
    proxy_response: ProxyResponse<'a>,
}

#[derive(Serialize)]
struct ProxyResponse<'a> {
    status_code: u16,
    headers: Headers<'a>,
    body: Body<'a>,
}

/// The processor's headers as a JSON object, in the order it sent them.
struct Headers<'a>(&'a [(&'a str, String)]);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

/// A JSON answer as the JSON value it is, anything else as a string.
#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Json(&'a RawValue),
    Text(&'a str),
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use bytes::Bytes;
    use cardvault_core::secret::SecretString;
    use cardvault_core::template::{Placeholder, Substitutions};
    use serde_json::{Value, json};

    use super::wrap;
    use crate::upstream::UpstreamResponse;

    const CARD: &str = "4242424242424242";

    async fn wrapped(content_type: &str, body: &str) -> (StatusCode, HeaderMap, String) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        headers.append("x-trace", HeaderValue::from_static("a"));
        headers.append("x-trace", HeaderValue::from_static("b"));
        headers.insert("set-cookie", HeaderValue::from_static("session=1"));
        let mut values = Substitutions::default();
        values.set(Placeholder::CardNumber, SecretString::new(CARD.to_owned()));
        let upstream = UpstreamResponse {
            status: StatusCode::PAYMENT_REQUIRED,
            headers,
            body: Bytes::from(body.to_owned()),
        };
        let response = wrap(upstream, &values);
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_json_answer_is_passed_on_as_the_json_value_it_was_with_echoes_masked() {
        let body = r#"{"id": "ch_1", "amount": 12345678901234567890.10, "card": {"number": "4242424242424242"}, "note": "caf\u00e9"}"#;
        let (status, headers, text) = wrapped("application/json; charset=utf-8", body).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-upstream-status"], "402");
        assert_eq!(headers["content-type"], "application/json");
        assert!(!text.contains(CARD), "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["success"], true);
        let proxied = &answer["proxy_response"];
        assert_eq!(proxied["status_code"], 402);
        assert_eq!(proxied["headers"]["x-trace"], "a, b");
        assert!(proxied["headers"].get("set-cookie").is_none());
        assert_eq!(proxied["body"]["id"], "ch_1");
        assert_eq!(proxied["body"]["note"], "café");
        assert_eq!(proxied["body"]["card"]["number"], "424242******4242");
        // A number the processor sent is passed on digit for digit.
        assert!(text.contains("12345678901234567890.10"), "{text}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_json_is_passed_on_as_a_string() {
        for (content_type, body) in [
            ("application/json", r#"{"id": "ch_1", "#),
            ("application/json", r#"{"id": "ch_1"} {"id": "ch_2"}"#),
            ("application/json", r#"{"id": "\ud800"}"#),
            (
                "application/json",
                &format!("{}{}", "[".repeat(300), "]".repeat(300)),
            ),
            ("text/plain", r#"{"id": "ch_1"}"#),
            ("text/html", "<p>4242424242424242</p>"),
        ] {
            let (_, _, text) = wrapped(content_type, body).await;
            let answer: Value = serde_json::from_str(&text).unwrap();
            let expected = body.replace(CARD, "424242******4242");
            assert_eq!(
                answer["proxy_response"]["body"],
                json!(expected),
                "{content_type}: {body}"
            );
        }
    }
}
