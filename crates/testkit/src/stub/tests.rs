//! The stub's two modes, seen by an HTTPS client that trusts only the stub's own CA.

use std::time::{Duration, Instant};

use super::Stub;

/// A client that trusts the stub's CA (and nothing else it needs here).
fn client(stub: &Stub, http2: bool) -> reqwest::Client {
    let pem = std::fs::read(&stub.ca_file).unwrap();
    let builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    let builder = if http2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}

#[tokio::test]
async fn a_recording_stub_keeps_every_request_and_answers_by_route() {
    let stub = Stub::start().await;
    let http = client(&stub, false);

    let echo = http
        .post(stub.url("/echo?x=1"))
        .header("content-type", "application/xml")
        .header("x-probe", "one")
        .body("<a>1</a>")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.headers()["content-type"], "application/xml");
    assert_eq!(echo.text().await.unwrap(), "<a>1</a>");

    let charge = http
        .post(stub.url("/v1/charges"))
        .body(r#"{"amount":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(charge.status(), 200);
    assert!(charge.headers().get("x-stub").is_none());
    assert!(
        charge
            .text()
            .await
            .unwrap()
            .contains(r#""object":"charge""#)
    );

    let missing = http.get(stub.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-stub"], "yes");

    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/echo?x=1");
    assert_eq!(requests[0].header("X-Probe"), Some("one"));
    assert_eq!(requests[0].body, b"<a>1</a>");
    assert_eq!(stub.count("/echo"), 1);
    assert_eq!(stub.count("/v1/charges"), 1);
    assert_eq!(requests[1].json()["amount"], 1);
    assert_eq!(stub.last().path, "/nowhere");
}

#[tokio::test]
async fn a_lean_stub_answers_charges_on_both_protocols_after_its_delay_and_records_nothing() {
    let delay = Duration::from_millis(200);
    let stub = Stub::start_lean(delay);
    for http2 in [false, true] {
        let started = Instant::now();
        let resp = client(&stub, http2)
            .post(stub.url("/v1/charges"))
            .body(r#"{"amount":2000}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.version(),
            if http2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.text().await.unwrap();
        assert!(started.elapsed() >= delay, "answered before the delay");
        assert!(body.contains(r#""status":"succeeded""#), "{body}");
    }
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn a_dropped_lean_stub_stops_listening() {
    let stub = Stub::start_lean(Duration::ZERO);
    let port = stub.addr.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(stub);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stub still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
