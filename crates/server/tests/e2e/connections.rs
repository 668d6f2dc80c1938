//! Connections are bounded: idle ones are closed on both protocols, both protocols take the same
//! headers, a connection over the cap is refused with the API's 503, and the vault raises its
//! open-file limit at start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::harness::*;

/// Reads until the server closes the connection; how long that took (None: still open at `limit`).
fn wait_for_close(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn idle_connections_are_closed_on_http1_and_http2() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_IDLE_TIMEOUT_MS", "600")]).await;
    let addr = vault.addr;

    // HTTP/1.1 keep-alive: one request answered, then nothing; the server closes.
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        wait_for_close(&mut conn, Duration::from_secs(8))
    })
    .await
    .unwrap();
    assert!(
        closed_after.is_some(),
        "an idle HTTP/1.1 connection stayed open"
    );

    // HTTP/2 (prior knowledge): the same, the server says GOAWAY and closes.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/healthz")
        .header("host", "v")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let ended = tokio::time::timeout(Duration::from_secs(8), connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");

    // A connection with a request in flight is not idle: a 2 s processor call outlives the
    // 0.6 s idle timeout.
    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/slow?ms=2000"), "request_data": {}}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `count` extra headers over HTTP/1.1 (reqwest) or HTTP/2 (hyper, prior knowledge).
async fn with_headers(vault: &Vault, count: usize, http2: bool) -> (u16, Value) {
    if !http2 {
        let mut req = vault.http.get(vault.url("/healthz"));
        for i in 0..count {
            req = req.header(format!("x-h{i}"), "v");
        }
        return send_with(req, &[]).await;
    }
    let tcp = tokio::net::TcpStream::connect(vault.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::get(format!("http://{}/healthz", vault.addr));
    for i in 0..count {
        request = request.header(format!("x-h{i}"), "v");
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn both_protocols_take_the_same_headers_and_refuse_more_in_the_envelope() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let too_large = json!({"success": false, "message": "Request headers too large", "data": null, "code": "headers_too_large"});
    for http2 in [false, true] {
        let (status, body) = with_headers(&vault, 40, http2).await;
        assert_eq!(status, 200, "http2={http2}: {body}");
        for count in [65, 90] {
            let (status, body) = with_headers(&vault, count, http2).await;
            assert_eq!(
                (status, &body),
                (431, &too_large),
                "http2={http2}, {count} headers"
            );
        }
        // Past HTTP/1's hard limit (hyper's 100 headers) the answer is hyper's bare 431.
        let (status, body) = with_headers(&vault, 200, http2).await;
        assert_eq!(status, 431, "http2={http2}, 200 headers: {body}");
    }
    // A request target over the limit: the API's 414.
    let long = vault.url(&format!("/healthz?pad={}", "a".repeat(20_000)));
    let (status, body) = send_with(vault.http.get(long), &[]).await;
    assert_eq!(status, 414);
    assert_eq!(
        body,
        json!({"success": false, "message": "Request URI too long", "data": null, "code": "uri_too_long"})
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_MAX_CONNECTIONS", "4")]).await;
    let addr = vault.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Give the server time to accept the four before the fifth arrives.
        std::thread::sleep(Duration::from_millis(300));
        let mut fifth = TcpStream::connect(addr).unwrap();
        fifth
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = fifth.read_to_string(&mut answer);
        drop(held);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("retry-after: 1"), "{answer:?}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"success": false, "message": "Service unavailable", "data": null, "code": "unavailable"})
    );
    // Once those connections are gone, everyone is served again.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(resp) = vault.http.get(vault.url("/healthz")).send().await
            && resp.status() == 200
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the vault did not recover after the connections closed"
    );
}

/// The soft and hard open-file limits of a process, from `/proc`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test]
async fn the_open_file_limit_is_raised_at_start() {
    let stub = Stub::start().await;
    let (_, hard) = open_file_limits(std::process::id());
    let soft = "512";
    assert_ne!(
        hard, soft,
        "this machine's hard limit leaves nothing to raise"
    );
    let vault = Vault::start_under(
        &stub,
        &["prlimit", &format!("--nofile={soft}:{hard}"), "--"],
    );
    let (now_soft, now_hard) = open_file_limits(vault.pid());
    assert_eq!((now_soft, now_hard), (hard.clone(), hard));
    // And it serves (so it has also logged its start for the log scan at the end).
    let resp = vault.http.get(vault.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_shed_with_503() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_MAX_IN_FLIGHT_REQUESTS", "2")]).await;
    let (token, _) = vault.visa().await;
    let slow = json!({"token": token, "proxy_url": stub.url("/slow?ms=1500"), "request_data": {}});
    let (first, second) = (vault.proxy(&slow), vault.proxy(&slow));
    let third = async {
        // Once both slow calls are in flight, one more is shed (a queued one would get its 200
        // once they finish).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = vault.http.get(vault.url("/healthz")).send().await.unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, retry_after, body)
    };
    let ((s1, _), (s2, _), (status, retry_after, body)) = tokio::join!(first, second, third);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({"success": false, "message": "Service unavailable", "data": null, "code": "overloaded"})
    );
    // With the slow calls done, the vault serves again.
    assert_eq!(
        vault
            .http
            .get(vault.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
