//! A processor that carries the body it received inside its answer (as a JSON string, or in a
//! header) must not hand a CVC or short account number back to the caller.

use serde_json::{Value, json};

use crate::harness::*;

const SHORT_ACCOUNT: &str = "38017";

/// Sends a raw-mode request with the API key.
async fn raw(vault: &Vault, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let req = vault
        .http
        .post(vault.url("/proxy/transaction"))
        .header("X-API-Key", &vault.keys.api_key)
        .body(body.to_owned());
    send_with(req, headers).await
}

/// What the processor carried back: the `received` string of `/echo-in-json`, or the `x-echo`
/// header of `/echo-in-header`.
fn carried(body: &Value, route: &str) -> String {
    let answer = &body["proxy_response"];
    let carried = match route {
        "/echo-in-json" => &answer["body"]["received"],
        _ => &answer["headers"]["x-echo"],
    };
    carried
        .as_str()
        .unwrap_or_else(|| panic!("{route}: {body}"))
        .to_owned()
}

#[tokio::test]
async fn codes_carried_inside_the_answer_are_masked() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    for route in ["/echo-in-json", "/echo-in-header"] {
        let url = stub.url(route);

        // JSON mode: the code beside a JSON number with the same digits.
        let (token, session) = vault.visa().await;
        let (status, body) = vault
            .proxy(
                &json!({"token": token, "cvc_session_id": session, "proxy_url": url,
                "request_data": {"c": "${cvv}", "amount": CVC.parse::<u32>().unwrap()}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let echoed = carried(&body, route);
        assert_eq!(
            echoed,
            format!(r#"{{"c":"***","amount":{CVC}}}"#),
            "{route}"
        );

        // The Stripe form encoding of JSON mode.
        let (token, session) = vault.visa().await;
        let (status, body) = vault
            .proxy(
                &json!({"token": token, "cvc_session_id": session, "proxy_url": url,
                "http_headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "request_data": {"card": {"number": "${cardNumber}", "cvc": "${cvv}"}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let echoed = carried(&body, route);
        assert_eq!(
            echoed, "card[number]=424242******4242&card[cvc]=***",
            "{route}"
        );

        // An XML attribute, raw mode.
        let (token, session) = vault.visa().await;
        let headers = [
            ("Content-Type", "text/xml"),
            ("X-Token", token.as_str()),
            ("X-Proxy-URL", url.as_str()),
            ("X-CVC-Session-ID", session.as_str()),
        ];
        let (status, body) = raw(&vault, &headers, r#"<card cvc="${cvv}" n="1"/>"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            carried(&body, route),
            r#"<card cvc="***" n="1"/>"#,
            "{route}"
        );

        // Header mode: any content type, the whole body is the code.
        let (token, session) = vault.visa().await;
        let headers = [
            ("Content-Type", "text/plain"),
            ("X-Token", token.as_str()),
            ("X-Proxy-URL", url.as_str()),
            ("X-CVC-Session-ID", session.as_str()),
        ];
        let (status, body) = raw(&vault, &headers, "${cvv}").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(carried(&body, route), "***", "{route}");

        // A bank token with a five-digit account number.
        let (status, bank) = vault
            .post(
                "/tokenize",
                &vault.keys,
                &json!({"type": "bank", "data": {"accountNumber": SHORT_ACCOUNT, "routingNumber": "110000000"}}),
            )
            .await;
        assert_eq!(status, 201, "{bank}");
        let (status, body) = vault
            .proxy(&json!({"token": bank["token"], "proxy_url": url,
                "request_data": {"account": "${accountNumber}", "routing": "${routingNumber}"}}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            carried(&body, route),
            r#"{"account":"*8017","routing":"110000000"}"#,
            "{route}"
        );
        assert!(!body.to_string().contains(SHORT_ACCOUNT), "{body}");
    }
}
