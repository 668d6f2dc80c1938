//! Several stateless instances sharing PostgreSQL and Redis: the same guarantees as one.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cardvault_testkit::process::{Process, wait_for_port};
use serde_json::{Value, json};

use crate::harness::*;

fn scaled_pair(stub: &Stub, backend: Backend) -> (Vault, Vault) {
    let env = vec![
        (
            "CARDVAULT_ALLOW_PRIVATE_DESTINATIONS".to_owned(),
            "true".to_owned(),
        ),
        (
            "CARDVAULT_UPSTREAM_CA_FILE".to_owned(),
            stub.ca_file.to_str().unwrap().to_owned(),
        ),
    ];
    let a = Vault::start_on(Arc::new(backend), &env);
    let b = a.another_instance();
    (a, b)
}

fn charge(stub: &Stub, token: &str, session: &str) -> Value {
    json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}", "c": "${cvv}"}})
}

/// The vault's own PostgreSQL database.
fn database_name(vault: &Vault) -> String {
    let url = vault.backend.database_url.as_ref().unwrap();
    url.rsplit('/').next().unwrap().to_owned()
}

/// Ends every connection to `database` but this one, as a database restart would.
fn drop_connections(database: &str) {
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ));
}

#[tokio::test]
async fn a_card_tokenized_on_one_instance_is_charged_through_another() {
    let stub = Stub::start().await;
    let (a, b) = scaled_pair(&stub, Backend::scaled());
    let (token, session) = a.visa().await;
    let (status, body) = b.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().json(), json!({"n": VISA, "c": CVC}));
    // Consumed on B, so gone on A too.
    let (status, body) = a.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("CVC session expired or not found"))
    );
    let ready: Value = b
        .http
        .get(b.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["data"],
        json!({"database": "ok", "cvc_sessions": "ok"})
    );
}

#[tokio::test]
async fn one_session_fifty_concurrent_calls_two_instances_one_charge() {
    let stub = Stub::start().await;
    let (a, b) = scaled_pair(&stub, Backend::scaled());
    let (token, session) = a.visa().await;
    let calls = (0..50).map(|i| {
        let vault = if i % 2 == 0 { &a } else { &b };
        let body = charge(&stub, &token, &session);
        async move { vault.proxy(&body).await }
    });
    let results = futures_join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let gone = results
        .iter()
        .filter(|(s, b)| *s == 404 && b["message"] == "CVC session expired or not found")
        .count();
    assert_eq!((ok, gone), (1, 49), "{results:?}");
    let with_cvc: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.json()["c"] == CVC)
        .collect();
    assert_eq!(
        with_cvc.len(),
        1,
        "exactly one call reached the processor with the CVC"
    );
}

#[tokio::test]
async fn concurrent_tokenize_of_one_card_with_deduplication_yields_one_token() {
    let stub = Stub::start().await;
    let (a, b) = scaled_pair(&stub, Backend::scaled());
    let dedup = a.create_project(&["--deduplicate"]);
    let card = json!({"type": "card", "data": {"cardNumber": MASTERCARD, "expirationMonth": "5", "expirationYear": "2031"}});
    let calls = (0..24).map(|i| {
        let vault = if i % 2 == 0 { &a } else { &b };
        let (dedup, card) = (dedup.clone(), card.clone());
        async move { vault.post("/tokenize", &dedup, &card).await }
    });
    let results = futures_join_all(calls).await;
    let tokens: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(a.token_count().await, 1);
}

/// A Redis server of the test's own, on its own port, that the test can stop and start; killed
/// when dropped.
struct OwnRedis {
    port: u16,
    process: Option<Process>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn resume(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null());
        self.process = Some(Process::spawn(
            &mut command,
            "redis-server (is it installed?)",
        ));
        assert!(
            wait_for_port(self.port, Duration::from_secs(2)),
            "redis-server did not start"
        );
    }

    fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

#[tokio::test]
async fn redis_down_means_503_for_cvc_calls_only_and_recovery_needs_no_restart() {
    let stub = Stub::start().await;
    let mut redis = OwnRedis::start();
    let (a, _b) = scaled_pair(&stub, Backend::scaled_with_redis(&redis.url()));
    let (token, session) = a.visa().await;
    redis.stop();

    let unavailable = json!({"success": false, "message": "Service unavailable", "data": null, "code": "unavailable"});
    let (status, body) = a.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!((status, &body), (503, &unavailable));
    let card_with_cvc = json!({"type": "card", "data": {"cardNumber": AMEX, "expirationMonth": "1", "expirationYear": "2032", "cvv": AMEX_CVC}});
    let before = a.token_count().await;
    let (status, body) = a.post("/tokenize", &a.keys, &card_with_cvc).await;
    assert_eq!((status, &body), (503, &unavailable));
    assert_eq!(
        a.token_count().await,
        before,
        "a refused tokenize stored nothing"
    );
    // Everything that needs no CVC session keeps working.
    let (status, body) = a
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = a.post("/tokenize", &a.keys, &json!({"type": "card", "data": {"cardNumber": MASTERCARD, "expirationMonth": "1", "expirationYear": "2032"}})).await;
    assert_eq!(status, 201);
    let ready = a.http.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["data"]["cvc_sessions"],
        "unavailable"
    );

    redis.resume();
    let mut recovered = false;
    for _ in 0..50 {
        let (status, body) = a.post("/tokenize", &a.keys, &card_with_cvc).await;
        if status == 201 {
            let token = body["token"].as_str().unwrap();
            let session = body["cvc_session_id"].as_str().unwrap();
            let (status, _) = a.proxy(&charge(&stub, token, session)).await;
            assert_eq!(status, 200);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "new sessions work again once Redis is back");
}

#[tokio::test]
async fn dropped_database_connections_are_replaced() {
    let stub = Stub::start().await;
    let (a, b) = scaled_pair(&stub, Backend::scaled());
    let (token, _) = a.visa().await;
    drop_connections(&database_name(&a));
    for vault in [&a, &b] {
        let (status, body) = vault
            .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
            .await;
        assert_eq!(status, 200, "{body}");
        let ready = vault.http.get(vault.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    }
}

#[tokio::test]
async fn a_database_that_stops_taking_writes_is_not_ready() {
    let stub = Stub::start().await;
    let (a, b) = scaled_pair(&stub, Backend::scaled());
    let name = database_name(&a);
    // As after a failover to a replica by mistake: every new session is read-only.
    let read_only = |on: bool| {
        psql(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {on}"
        ));
        drop_connections(&name);
    };
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}});
    read_only(true);
    for vault in [&a, &b] {
        let ready = send_with(vault.http.get(vault.url("/readyz")), &[]).await;
        assert_eq!(ready.0, 503, "{}", ready.1);
        assert_eq!(ready.1["data"]["database"], "unavailable");
        let (status, body) = vault.post("/tokenize", &vault.keys, &card).await;
        assert_eq!(status, 503, "{body}");
    }
    read_only(false);
    for vault in [&a, &b] {
        let ready = send_with(vault.http.get(vault.url("/readyz")), &[]).await;
        assert_eq!(ready.0, 200, "{}", ready.1);
        assert_eq!(vault.post("/tokenize", &vault.keys, &card).await.0, 201);
    }
}

#[tokio::test]
async fn every_token_answered_201_survives_a_killed_instance() {
    let stub = Stub::start().await;
    let (mut a, b) = scaled_pair(&stub, Backend::scaled());
    let issued = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (http, url, keys, issued) = (a.http.clone(), a.url("/tokenize"), a.keys.clone(), issued.clone());
            tokio::spawn(async move {
                for i in 0..10_000u64 {
                    let number = card_number(w * 100_000 + i);
                    let resp = http
                        .post(&url)
                        .header("X-API-Key", &keys.api_key)
                        .header("X-Pub-Key", &keys.publishable_key)
                        .json(&json!({"type": "card", "data": {"cardNumber": number, "expirationMonth": "9", "expirationYear": "2033"}}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(resp) = resp else { break };
                    if resp.status() != 201 {
                        break;
                    }
                    let Ok(body) = resp.json::<Value>().await else { break };
                    issued.lock().unwrap().push((body["token"].as_str().unwrap().to_owned(), number));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.kill();
    for w in workers {
        w.await.unwrap();
    }
    let issued = issued.lock().unwrap().clone();
    assert!(issued.len() > 10, "the load ran ({} tokens)", issued.len());
    for (token, number) in &issued {
        let (status, body) = b
            .proxy(&json!({"token": token, "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}}))
            .await;
        assert_eq!(status, 200, "{token}: {body}");
        assert_eq!(stub.last().json()["n"], number.as_str());
    }
}
