//! How the vault talks to processors: HTTP/2 on one kept connection per serving thread where
//! the processor offers it, HTTP/1.1 where it does not, and compressed answers undone (so they
//! can be scrubbed) either way — or refused, in a coding the vault cannot undo.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn calls_to_an_http2_processor_share_one_connection_per_serving_thread() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_WORKER_THREADS", "2")]).await;
    let (token, _) = vault.visa().await;
    for call in 0..12 {
        let (status, body) = vault
            .proxy(&json!({"token": token, "proxy_url": stub.url("/echo"),
                "request_data": {"n": "${cardNumber}", "call": call}}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["proxy_response"]["body"]["call"], call);
    }
    let sent = stub.requests();
    assert_eq!(sent.len(), 12);
    // The vault's own HTTP/2 path, not the generic client's, carried them.
    let logs = vault.logs();
    let opened = logs.matches("processor connection opened (HTTP/2)").count();
    assert!(
        (1..=2).contains(&opened),
        "{opened} HTTP/2 connections opened: {logs}"
    );
    assert!(sent.iter().all(|r| r.version == "HTTP/2.0"), "{sent:?}");
    assert!(
        stub.connections() <= 2,
        "{} connections for 12 calls on 2 serving threads",
        stub.connections()
    );
    // The head the generic client sent before, so processors see no change.
    let last = stub.last();
    assert_eq!(last.header("accept"), Some("*/*"));
    assert_eq!(last.header("accept-encoding"), Some("gzip,deflate,br"));
    assert_eq!(
        last.header("content-length"),
        Some(last.body.len().to_string().as_str())
    );
    assert_eq!(last.json()["n"], VISA);

    // Without a body: no content-length where the method defines no payload.
    let (status, body) = vault
        .proxy(
            &json!({"token": token, "proxy_url": stub.url("/text"), "http_method": "DELETE",
            "http_headers": {"Content-Type": "text/plain"}, "request_data": ""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let last = stub.last();
    assert_eq!((last.method.as_str(), last.body.len()), ("DELETE", 0));
    assert_eq!(last.header("content-length"), None);
}

#[tokio::test]
async fn a_processor_offering_only_http1_is_called_over_http1() {
    let stub = Stub::start_http1_only().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_WORKER_THREADS", "1")]).await;
    let (token, session) = vault.visa().await;
    let with_session = json!({"token": token, "cvc_session_id": session,
        "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}});
    let without = json!({"token": token,
        "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}});
    // The second call finds the processor remembered as HTTP/1.1-only.
    for request in [with_session, without] {
        let (status, body) = vault.proxy(&request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["proxy_response"]["body"]["n"], "424242******4242");
        assert_eq!(stub.last().version, "HTTP/1.1");
        assert_eq!(stub.last().json()["n"], VISA);
    }
    // One look at what the processor offers, then the generic client's one kept connection.
    assert_eq!(stub.connections(), 2);
    let logs = vault.logs();
    assert_eq!(logs.matches("offers no HTTP/2").count(), 1, "{logs}");
    assert!(!logs.contains("processor connection opened (HTTP/2)"));
}

#[tokio::test]
async fn compressed_answers_are_undone_and_scrubbed_on_either_protocol() {
    let http2 = Stub::start().await;
    let http1 = Stub::start_http1_only().await;
    for stub in [&http2, &http1] {
        let vault = Vault::start(stub).await;
        let (token, _) = vault.visa().await;
        for coding in ["gzip", "deflate", "br"] {
            let (status, body) = vault
                .proxy(&json!({"token": token,
                    "proxy_url": stub.url(&format!("/echo-compressed?coding={coding}")),
                    "http_headers": {"Content-Type": "application/json"},
                    "request_data": {"number": "${cardNumber}", "coding": coding}}))
                .await;
            let version = &stub.last().version;
            assert_eq!(status, 200, "{coding} over {version}: {body}");
            let answer = &body["proxy_response"];
            assert_eq!(
                answer["body"],
                json!({"number": "424242******4242", "coding": coding}),
                "{coding} over {version}"
            );
            assert!(answer["headers"].get("content-encoding").is_none());
            assert!(!body.to_string().contains(VISA), "{coding} over {version}");
        }
        // A coding the vault cannot undo could hide an echo from the scrub: refused.
        let (status, body) = vault
            .proxy(&json!({"token": token,
                "proxy_url": stub.url("/echo-compressed?coding=zstd"),
                "http_headers": {"Content-Type": "application/json"},
                "request_data": {"number": "${cardNumber}"}}))
            .await;
        assert_eq!(
            (status, &body["request_sent"]),
            (502, &json!(true)),
            "{body}"
        );
        assert!(!body.to_string().contains(VISA));
    }
    assert_eq!(http2.last().version, "HTTP/2.0");
    assert_eq!(http1.last().version, "HTTP/1.1");
}

#[tokio::test]
async fn the_total_timeout_holds_on_the_http1_path_too() {
    let stub = Stub::start_http1_only().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_UPSTREAM_TIMEOUT_MS", "700")]).await;
    let (token, _) = vault.visa().await;
    // The first call also pays for the look at whether the processor speaks HTTP/2.
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let (status, body) = vault
            .proxy(
                &json!({"token": token, "proxy_url": stub.url("/slow?ms=3000"),
                "request_data": {"n": "${cardNumber}"}}),
            )
            .await;
        assert_eq!(
            (status, &body["request_sent"]),
            (504, &json!(true)),
            "{body}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2900),
            "the timeout did not cut the call short"
        );
    }
    assert_eq!(stub.last().version, "HTTP/1.1");
}
