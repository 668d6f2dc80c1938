//! Size and time limits: nothing a client or a processor sends can exhaust the vault.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn oversized_requests_are_refused_with_413() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_MAX_REQUEST_BYTES", "4096")]).await;
    let padding = "x".repeat(5000);
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033", "firstName": padding}});
    let (status, body) = vault.post("/tokenize", &vault.keys, &card).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"success": false, "message": "Request body too large", "data": null, "code": "body_too_large"})
    );
    let (token, _) = vault.visa().await;
    let (status, _) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"pad": padding}}))
        .await;
    assert_eq!(status, 413);
    assert_eq!(stub.count("/charge"), 0);
    assert_eq!(
        vault.token_count().await,
        1,
        "only the valid card was stored"
    );

    // The default limit is 1 MiB.
    let default = Vault::start(&stub).await;
    let big = "y".repeat(1024 * 1024 + 10);
    let (status, _) = default
        .post(
            "/tokenize",
            &default.keys,
            &json!({"type": "card", "data": {"x": big}}),
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn oversized_processor_answers_are_cut_off() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_MAX_RESPONSE_BYTES", "10000")]).await;
    let (token, _) = vault.visa().await;
    let call = |bytes: usize| json!({"token": token, "proxy_url": stub.url(&format!("/big?bytes={bytes}")), "request_data": {}});
    let (status, body) = vault.proxy(&call(9000)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["proxy_response"]["body"].as_str().unwrap().len(), 9000);
    let (status, body) = vault.proxy(&call(20_000)).await;
    assert_eq!(status, 502);
    assert_eq!(body["code"], "upstream_error");
    assert_eq!(body["request_sent"], true);
}

/// Writes `head`, then `dribble` one byte every 300 ms; returns what the server answered (and
/// how long it took) once it answers or closes.
fn slow_client(addr: std::net::SocketAddr, head: &str, dribble: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    for byte in dribble.bytes() {
        if conn.write_all(&[byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(15) {
            panic!("the server let a slow client hold the connection for 15 s");
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CLIENT_READ_TIMEOUT_MS", "1000")]).await;
    let addr = vault.addr;
    let key = vault.keys.api_key.clone();
    // A body sent one byte at a time: 408 once the read timeout passes.
    let (answer, took) = tokio::task::spawn_blocking(move || {
        let head = format!("POST /proxy/transaction HTTP/1.1\r\nHost: v\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n");
        slow_client(addr, &head, &"{".repeat(200))
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Headers sent one byte at a time: the connection is closed once the read timeout passes.
    let (answer, took) = tokio::task::spawn_blocking(move || {
        slow_client(
            addr,
            "GET /healthz HTTP/1.1\r\n",
            &"X-Slow: a\r\n".repeat(30),
        )
    })
    .await
    .unwrap();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The vault still serves everyone else.
    let resp = vault.http.get(vault.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
