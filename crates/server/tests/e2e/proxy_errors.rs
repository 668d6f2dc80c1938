use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn bad_proxy_inputs_get_exact_messages_and_keep_the_cvc_session() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let url = stub.url("/charge");
    let data = json!({"n": "${cardNumber}", "c": "${cvv}"});
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"proxy_url": url, "request_data": data, "cvc_session_id": session}),
            400,
            "Missing required field: token",
            "missing_field",
        ),
        (
            json!({"token": 5, "proxy_url": url, "request_data": data}),
            400,
            "Invalid value for token",
            "invalid_field",
        ),
        (
            json!({"token": token, "request_data": data}),
            400,
            "Missing required field: proxy_url",
            "missing_field",
        ),
        (
            json!({"token": token, "proxy_url": url}),
            400,
            "Missing required field: request_data",
            "missing_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": 42, "cvc_session_id": session}),
            400,
            "Invalid value for request_data",
            "invalid_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": session, "http_method": "TRACE"}),
            400,
            "Invalid value for http_method",
            "invalid_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": session, "http_headers": "x"}),
            400,
            "Invalid value for http_headers",
            "invalid_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": session, "http_headers": {"X-A": 1}}),
            400,
            "Invalid value for http_headers",
            "invalid_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": session, "http_headers": {"X-A": "a\r\nX-B: b"}}),
            400,
            "Invalid value for http_headers",
            "invalid_field",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": {"n": "${cardnumber}"}}),
            400,
            "Invalid value for request_data",
            "invalid_template",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": {"n": "${accountNumber}"}}),
            400,
            "Invalid value for request_data",
            "invalid_template",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": {"n": "${lastName}"}}),
            400,
            "Invalid value for request_data",
            "invalid_template",
        ),
        (
            json!({"token": token, "proxy_url": format!("{url}?n=${{cardNumber}}"), "request_data": {}}),
            400,
            "Invalid value for request_data",
            "invalid_template",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": {}, "http_headers": {"X-Card": "${cardNumber}"}}),
            400,
            "Invalid value for request_data",
            "invalid_template",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data}),
            400,
            "Missing required field: cvc_session_id",
            "missing_field",
        ),
        (
            json!({"token": token, "proxy_url": "not a url", "request_data": data, "cvc_session_id": session}),
            400,
            "Invalid proxy URL",
            "invalid_proxy_url",
        ),
        (
            json!({"token": token, "proxy_url": "ftp://localhost/x", "request_data": data, "cvc_session_id": session}),
            400,
            "Invalid proxy URL",
            "invalid_proxy_url",
        ),
        (
            json!({"token": token, "proxy_url": 7, "request_data": data, "cvc_session_id": session}),
            400,
            "Invalid proxy URL",
            "invalid_proxy_url",
        ),
        (
            json!({"token": token, "proxy_url": format!("{url}?pad={}", "a".repeat(70_000)), "request_data": data, "cvc_session_id": session}),
            400,
            "Invalid proxy URL",
            "invalid_proxy_url",
        ),
        (
            json!({"token": "tok_doesnotexist", "proxy_url": url, "request_data": data, "cvc_session_id": session}),
            404,
            "Token not found",
            "token_not_found",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": "not-a-uuid"}),
            404,
            "CVC session expired or not found",
            "cvc_session_not_found",
        ),
        (
            json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": uuid::Uuid::new_v4().to_string()}),
            404,
            "CVC session expired or not found",
            "cvc_session_not_found",
        ),
    ];
    for (body, status, message, code) in cases {
        let (got, mut answer) = vault.proxy(&body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        // The extension `detail` says why; the compatible envelope is exact.
        if let Some(detail) = answer.as_object_mut().and_then(|a| a.remove("detail")) {
            assert!(detail.is_string(), "{detail}");
            assert!(!detail.to_string().contains(VISA), "{detail}");
        }
        assert_eq!(
            answer,
            json!({"success": false, "message": message, "data": null, "code": code}),
            "{body}"
        );
    }
    assert_eq!(
        stub.count("/charge"),
        0,
        "a refused call reached the processor"
    );
    // None of those consumed the session.
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": url, "request_data": data, "cvc_session_id": session}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().json()["c"], CVC);
}

#[tokio::test]
async fn unreachable_and_slow_processors() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_UPSTREAM_TIMEOUT_MS", "700")]).await;
    let (token, _) = vault.visa().await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": format!("https://localhost:{port}/x"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body,
        json!({"success": false, "message": "Failed to proxy request", "data": null, "code": "upstream_error", "request_sent": false})
    );

    let started = std::time::Instant::now();
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/slow?ms=3000"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body,
        json!({"success": false, "message": "Request timeout", "data": null, "code": "upstream_timeout", "request_sent": true})
    );
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the timeout did not cut the call short"
    );
}

#[tokio::test]
async fn untrusted_processor_certificates_are_refused() {
    let stub = Stub::start().await;
    // No CA file: the stub's certificate is not trusted.
    let vault = Vault::start_env(&[("CARDVAULT_ALLOW_PRIVATE_DESTINATIONS", "true")]).await;
    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("upstream_error"))
    );
    assert_eq!(stub.count("/charge"), 0);
}

#[tokio::test]
async fn secure_defaults_refuse_http_ip_literals_and_internal_names() {
    let stub = Stub::start().await;
    let vault =
        Vault::start_env(&[("CARDVAULT_UPSTREAM_CA_FILE", stub.ca_file.to_str().unwrap())]).await;
    let (token, session) = vault.visa().await;
    let port = stub.addr.port();
    for url in [
        "http://api.example.com/charge".to_owned(),
        format!("https://127.0.0.1:{port}/charge"),
        "https://127.0.0.1/charge".to_owned(),
        "https://[::1]/charge".to_owned(),
        "https://localhost/charge".to_owned(),
        format!("https://localhost:{port}/charge"),
        "https://0x7f000001/charge".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://user:pw@api.example.com/".to_owned(),
        "https://api.example.com:8443/".to_owned(),
    ] {
        let (status, body) = vault
            .proxy(&json!({"token": token, "cvc_session_id": session, "proxy_url": url, "request_data": {"n": "${cardNumber}", "c": "${cvv}"}}))
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["message"], "Invalid proxy URL", "{url}");
    }
    assert!(
        stub.requests().is_empty(),
        "a refused destination was contacted"
    );
}

/// A port on this machine that nothing listens on.
fn closed_port() -> u16 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_call_that_sent_nothing_gives_the_cvc_session_back() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(
        &stub,
        &[
            ("CARDVAULT_UPSTREAM_TIMEOUT_MS", "700"),
            ("CARDVAULT_CVC_TTL_SECONDS", "4"),
        ],
    )
    .await;
    let (token, session) = vault.visa().await;
    let data = json!({"c": "${cvv}"});
    let call = |url: String| json!({"token": token, "cvc_session_id": session, "proxy_url": url, "request_data": data});

    // Connection refused, twice: nothing was sent, the session stays usable.
    for _ in 0..2 {
        let (status, body) = vault
            .proxy(&call(format!("https://localhost:{}/x", closed_port())))
            .await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["request_sent"], false, "{body}");
    }
    let (status, body) = vault.proxy(&call(stub.url("/charge"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().json()["c"], CVC);
    // That call reached the processor: the session is used up.
    let (status, body) = vault.proxy(&call(stub.url("/charge"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("cvc_session_not_found"))
    );

    // A call that may have reached the processor (it timed out after sending) uses it up too.
    let (token, session) = vault.visa().await;
    let slow = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/slow?ms=3000"), "request_data": data});
    let (status, body) = vault.proxy(&slow).await;
    assert_eq!(
        (status, &body["request_sent"]),
        (504, &json!(true)),
        "{body}"
    );
    let charge = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": data});
    assert_eq!(vault.proxy(&charge).await.0, 404);

    // Given back, a session keeps the expiry it had: it does not live longer for being retried.
    let (token, session) = vault.visa().await;
    let created = std::time::Instant::now();
    let refused = json!({"token": token, "cvc_session_id": session, "proxy_url": format!("https://localhost:{}/x", closed_port()), "request_data": data});
    assert_eq!(vault.proxy(&refused).await.0, 502);
    tokio::time::sleep(
        Duration::from_secs(4).saturating_sub(created.elapsed()) + Duration::from_millis(300),
    )
    .await;
    let charge = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": data});
    let (status, body) = vault.proxy(&charge).await;
    assert_eq!(status, 404, "the session outlived its TTL: {body}");
}

#[tokio::test]
async fn each_destination_rule_says_why_in_detail() {
    let vault =
        Vault::start_env(&[("CARDVAULT_DESTINATION_ALLOWLIST", "*.processor.example")]).await;
    let (token, _) = vault.visa().await;
    let long = format!("https://api.processor.example/?pad={}", "a".repeat(9000));
    for (url, detail) in [
        ("not a url", "proxy_url is not a valid absolute URL"),
        (long.as_str(), "proxy_url is longer than the limit"),
        ("http://api.processor.example/x", "proxy_url must use https"),
        (
            "https://u:p@api.processor.example/x",
            "proxy_url must not carry credentials",
        ),
        (
            "https://api.processor.example:8443/x",
            "the port is not allowed (443 and allowed_ports)",
        ),
        (
            "https://93.184.216.34/x",
            "the host must be a name, not an IP address",
        ),
        ("https://localhost/x", "the host is an internal name"),
        (
            "https://api.elsewhere.example/x",
            "the host is not in the server-wide allowlist",
        ),
    ] {
        let (status, body) = vault
            .proxy(
                &json!({"token": token, "proxy_url": url, "request_data": {"n": "${cardNumber}"}}),
            )
            .await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(body["message"], "Invalid proxy URL", "{url}");
        assert_eq!(body["detail"], detail, "{url}");
    }
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": "https://api.processor.example/x", "request_data": {"n": "${nope}"}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_template"))
    );
    assert_eq!(body["detail"], "the template names an unknown placeholder");

    let required = Vault::start_env(&[("CARDVAULT_REQUIRE_DESTINATION_ALLOWLIST", "true")]).await;
    let (token, _) = required.visa().await;
    let (status, body) = required
        .proxy(&json!({"token": token, "proxy_url": "https://api.processor.example/x", "request_data": {}}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "an allowlist is required and none is set");
}
