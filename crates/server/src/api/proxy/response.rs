//! The processor's answer, wrapped for the caller with every injected secret masked.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cardvault_core::mask;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use cardvault_core::template::{Placeholder, Substitutions};

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

const UPSTREAM_STATUS: HeaderName = HeaderName::from_static("x-upstream-status");

pub fn wrap(upstream: UpstreamResponse, values: &Substitutions) -> Response {
    let status = upstream.status.as_u16();
    let mut response = match answer(&upstream, &echoes(values)) {
        Ok(answer) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            answer,
        )
            .into_response(),
        Err(e) => crate::api::ApiError::Internal(Box::new(e)).into_response(),
    };
    response
        .headers_mut()
        .insert(UPSTREAM_STATUS, HeaderValue::from(status));
    response
}

/// `{"success":true,"proxy_response":{"status_code":…,"headers":{…},"body":…}}`, the caller's
/// answer, written as `serde_json` would write it from a `Serialize` of that shape (compact,
/// its fields in that order), without building one: a JSON body is copied in as the text it
/// is once checked, not read a second time into a value that writes it back.
///
/// # Errors
/// Writing a string into memory (none is expected).
fn answer(upstream: &UpstreamResponse, echoes: &[Echo<'_>]) -> Result<Vec<u8>, serde_json::Error> {
    let text = scrubbed(&upstream.body, echoes);
    let mut out = Vec::with_capacity(text.len() + 64 * upstream.headers.keys_len() + 96);
    out.extend_from_slice(br#"{"success":true,"proxy_response":{"status_code":"#);
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(upstream.status.as_u16())
            .as_bytes(),
    );
    out.extend_from_slice(br#","headers":{"#);
    let mut first = true;
    for name in upstream.headers.keys() {
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, name.as_str())?;
        out.push(b':');
        // Each value is scrubbed on its own, so a value that is exactly a CVC is a whole value.
        let mut header_values = upstream.headers.get_all(name).iter();
        let mut value = header_values
            .next()
            .map(|v| scrubbed(v.as_bytes(), echoes))
            .unwrap_or_default();
        for more in header_values {
            let joined = value.to_mut();
            joined.push_str(", ");
            joined.push_str(&scrubbed(more.as_bytes(), echoes));
        }
        serde_json::to_writer(&mut out, value.as_ref())?;
    }
    out.extend_from_slice(br#"},"body":"#);
    // A JSON answer is passed on as the (scrubbed) text it came as, once checked to be one JSON
    // value as strictly as a `Value` would read it: rebuilt as a tree and written out again it
    // cost ~5 µs a call at saturation, a tenth of the vault's own work (docs/benchmarks.md).
    // Its keys stay as the processor sent them; the whitespace around it goes, as a
    // `RawValue` would leave it.
    if MediaType::of(&upstream.headers) == Some(MediaType::Json)
        && crate::api::body::is_one_json_value(&text)
    {
        out.extend_from_slice(text.trim_matches(JSON_WHITESPACE).as_bytes());
    } else {
        serde_json::to_writer(&mut out, text.as_ref())?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// What JSON allows around a value (RFC 8259, section 2).
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The body or a header's value as text, the injected secrets in it masked.
fn scrubbed<'a>(bytes: &'a [u8], echoes: &[Echo<'_>]) -> Cow<'a, str> {
    // `from_utf8` first: it checks ASCII a word at a time, `from_utf8_lossy` a byte at a time.
    let text =
        std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed);
    scrub_text(&text, echoes).map_or(text, Cow::Owned)
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

    /// The answer's shape as a `Serialize`, as the vault wrote it before writing it by hand.
    #[derive(serde::Serialize)]
    struct Wrapped<'a> {
        success: bool,
        proxy_response: ProxyResponse<'a>,
    }

    #[derive(serde::Serialize)]
    struct ProxyResponse<'a> {
        status_code: u16,
        headers: Headers<'a>,
        body: &'a serde_json::value::RawValue,
    }

    struct Headers<'a>(&'a [(&'a str, &'a str)]);

    impl serde::Serialize for Headers<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
        }
    }

    #[tokio::test]
    async fn the_answer_is_byte_for_byte_what_serde_json_writes_for_its_shape() {
        for body in [
            r#"{"id":"ch_1","card":{"number":"4242424242424242"}}"#,
            " \t\r\n[1, 2.50, {\"a\": \"\\u00e9\\\"\"}] \n",
            r#""a string""#,
            "12345678901234567890.10",
        ] {
            let (_, _, text) = wrapped("application/json", body).await;
            let scrubbed = body.replace(CARD, "424242******4242");
            let raw = serde_json::from_str::<&serde_json::value::RawValue>(&scrubbed).unwrap();
            let expected = serde_json::to_string(&Wrapped {
                success: true,
                proxy_response: ProxyResponse {
                    status_code: 402,
                    headers: Headers(&[("content-type", "application/json"), ("x-trace", "a, b")]),
                    body: raw,
                },
            })
            .unwrap();
            assert_eq!(text, expected, "{body:?}");
        }
    }

    #[tokio::test]
    async fn header_values_are_escaped_and_scrubbed_one_by_one() {
        let mut headers = HeaderMap::new();
        headers.insert("x-quote", HeaderValue::from_static("say \"hi\" \\ bye"));
        headers.append("x-card", HeaderValue::from_static("4242424242424242"));
        headers.append(
            "x-card",
            HeaderValue::from_static("card 4242424242424242 ok"),
        );
        headers.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let mut values = Substitutions::default();
        values.set(Placeholder::CardNumber, SecretString::new(CARD.to_owned()));
        let response = wrap(
            UpstreamResponse {
                status: StatusCode::OK,
                headers,
                body: Bytes::from_static(b"ok"),
            },
            &values,
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        let headers = &answer["proxy_response"]["headers"];
        assert_eq!(headers["x-quote"], r#"say "hi" \ bye"#);
        assert_eq!(
            headers["x-card"],
            "424242******4242, card 424242******4242 ok"
        );
        assert_eq!(headers["x-latin"], "caf\u{fffd}");
        assert_eq!(answer["proxy_response"]["body"], "ok");
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
