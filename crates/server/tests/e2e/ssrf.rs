//! The SSRF corpus through the real API, with an attacker's DNS: every name resolves to
//! loopback. Every line, as written and with its scheme forced to https, must be refused with
//! `400 Invalid proxy URL`, and nothing may connect to the loopback listeners.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cardvault_server::config::Settings;
use cardvault_server::destinations::NameLookup;
use cardvault_testkit::ssrf_corpus as corpus;
use serde_json::{Value, json};

use crate::harness::*;

/// A hostile resolver: whatever the name, the answer is loopback.
struct EverythingIsLoopback(AtomicUsize);

#[async_trait]
impl NameLookup for EverythingIsLoopback {
    async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

#[tokio::test]
async fn the_corpus_is_refused_before_any_connection() {
    // Listeners on the addresses the corpus aims at (port 443 and 80 need root; CI runs as root).
    let listeners: Vec<TcpListener> = [
        "127.0.0.1:443",
        "127.0.0.1:80",
        "[::1]:443",
        "127.0.0.1:6379",
    ]
    .iter()
    .filter_map(|a| TcpListener::bind(a).ok())
    .collect();
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let keys = cli_json(&["init", "--data-dir", data_dir.to_str().unwrap(), "--json"]);
    let settings = Settings {
        data_dir,
        ..Settings::default()
    };
    let lookup = Arc::new(EverythingIsLoopback(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cardvault_server::serve_with_lookup(
        listener,
        settings,
        lookup.clone(),
        |_| {},
        std::future::pending(),
    );
    tokio::spawn(async move {
        if let Err(e) = server.await {
            panic!("the vault did not start: {e}");
        }
    });

    let http = reqwest::Client::new();
    let api_key = keys["api_key"].as_str().unwrap();
    let tokenized: Value = http
        .post(format!("http://{addr}/tokenize"))
        .header("X-API-Key", api_key)
        .header("X-Pub-Key", keys["publishable_key"].as_str().unwrap())
        .json(&json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokenized["token"].as_str().unwrap();

    let lines = corpus::corpus();
    for line in &lines {
        for url in [line.clone(), corpus::force_https(line)] {
            let resp = http
                .post(format!("http://{addr}/proxy/transaction"))
                .header("X-API-Key", api_key)
                .json(&json!({"token": token, "proxy_url": url, "request_data": {"n": "${cardNumber}"}}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(
                (status, body["message"].as_str()),
                (400, Some("Invalid proxy URL")),
                "{url}"
            );
        }
    }
    // Only the names that need DNS were looked up, and their loopback answer was refused.
    assert!(lookup.0.load(Ordering::SeqCst) <= corpus::NEEDS_DNS.len() * 2);
    for l in &listeners {
        assert!(l.accept().is_err(), "{:?} was contacted", l.local_addr());
    }
}
