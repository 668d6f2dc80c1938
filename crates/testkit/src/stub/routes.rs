//! What the stub answers, by path. Every route, in both modes:
//!
//! | route | answer |
//! |---|---|
//! | `/charge` | 200, a small charge as JSON |
//! | `/decline` | 402, a card-declined error as JSON |
//! | `/v1/charges` | 200, a Stripe-like charge as JSON (~120 bytes), after the stub's charge delay |
//! | `/echo` | 200, the request body with its content type |
//! | `/echo-in-json` | 200, the request body as a JSON string value |
//! | `/echo-in-header` | 200, the request body in an `x-echo` header |
//! | `/echo-compressed?coding=C` | 200, the request body with its content type, compressed in `C` (`gzip`, `deflate` or `br`; under any other name, as it came) |
//! | `/slow?ms=N` | JSON after N ms (2000 if not given) |
//! | `/text` | 200, plain text |
//! | `/big?bytes=N` | 200, N bytes of plain text (1024 if not given) |
//! | `/redirect?to=URL` | 302 to URL (an internal address if not given) |
//! | anything else | 404 as JSON |
//!
//! The JSON answers of `/charge`, `/decline`, `/echo-in-json`, `/slow` and the 404 carry an
//! `x-stub` header and a `set-cookie` (which a proxy must not pass on); `/v1/charges` carries
//! only its content type, so the benchmark's answer stays as small as a processor's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;

/// The `/v1/charges` answer.
const CHARGE: &[u8] = br#"{"id":"ch_3PqK2xLkdIwHu7ix0abc","object":"charge","amount":2000,"currency":"usd","status":"succeeded","paid":true}"#;

/// The answer to the request `parts` with `body`.
pub(super) async fn answer(
    parts: &Parts,
    body: Bytes,
    charge_delay: Duration,
) -> Response<Full<Bytes>> {
    let query = parts.uri.query().unwrap_or("");
    match parts.uri.path() {
        "/charge" => json(
            200,
            r#"{"id":"ch_123","object":"charge","status":"succeeded"}"#,
        ),
        "/decline" => json(402, r#"{"error":{"code":"card_declined"}}"#),
        "/v1/charges" => {
            if !charge_delay.is_zero() {
                tokio::time::sleep(charge_delay).await;
            }
            Response::builder()
                .status(200)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(CHARGE)))
                .unwrap()
        }
        "/echo" => {
            let mut builder = Response::builder().status(200);
            if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            builder.body(Full::new(body)).unwrap()
        }
        "/echo-compressed" => {
            let coding = query_param(query, "coding").unwrap_or_else(|| "gzip".to_owned());
            let mut builder = Response::builder()
                .status(200)
                .header("content-encoding", coding.as_str());
            if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            builder
                .body(Full::new(super::compressed(&coding, &body).into()))
                .unwrap()
        }
        "/echo-in-json" => {
            let text = String::from_utf8_lossy(&body);
            json(200, &serde_json::json!({"received": text}).to_string())
        }
        "/echo-in-header" => {
            let mut builder = Response::builder().status(200);
            if let Ok(value) = HeaderValue::from_bytes(&body) {
                builder = builder.header("x-echo", value);
            }
            builder.body(Full::new(Bytes::from_static(b"ok"))).unwrap()
        }
        "/slow" => {
            let ms = query
                .split("ms=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(200, r#"{"slow":true}"#)
        }
        "/big" => {
            let size: usize = query_param(query, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024);
            Response::builder()
                .status(200)
                .header(CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from(vec![b'x'; size])))
                .unwrap()
        }
        "/text" => Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(b"plain ok")))
            .unwrap(),
        "/redirect" => Response::builder()
            .status(302)
            .header(
                "location",
                query_param(query, "to")
                    .unwrap_or_else(|| "http://127.0.0.1:9/internal".to_owned()),
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => json(404, r#"{"error":"no such route"}"#),
    }
}

fn json(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header("x-stub", "yes")
        .header("set-cookie", "session=secret")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
