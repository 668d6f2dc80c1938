//! `Idempotency-Key` on proxy, tokenize and create calls: a retry gets the first answer and does
//! nothing again.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::Row;

use crate::harness::*;

/// POSTs `body` to `path` with the project's keys and `Idempotency-Key: key`; returns the status,
/// whether the answer says it is a replay, and the body.
async fn post_once(vault: &Vault, path: &str, key: &str, body: &Value) -> (u16, bool, Value) {
    post_once_as(vault, &vault.keys, path, key, body).await
}

async fn post_once_as(
    vault: &Vault,
    keys: &Keys,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, bool, Value) {
    let resp = vault
        .http
        .post(vault.url(path))
        .header("X-API-Key", &keys.api_key)
        .header("X-Pub-Key", &keys.publishable_key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = is_replay(resp.headers());
    (status, replayed, resp.json().await.unwrap_or(Value::Null))
}

fn is_replay(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// A port that refuses connections until [`Relay::open`] forwards it to `target`.
struct Relay {
    port: u16,
}

impl Relay {
    fn closed() -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            port: probe.local_addr().unwrap().port(),
        }
    }

    /// From now on, connections to the port reach `target` (bytes relayed as they are, TLS
    /// included).
    async fn open(&self, target: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

fn stub_port(stub: &Stub) -> u16 {
    url::Url::parse(&stub.url("/")).unwrap().port().unwrap()
}

#[tokio::test]
async fn a_retry_after_a_processor_timeout_replays_the_answer_without_calling_again() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_UPSTREAM_TIMEOUT_MS", "700")]).await;
    let (token, session) = vault.visa().await;
    let call = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/slow?ms=2000"), "request_data": {"n": "${cardNumber}", "c": "${cvv}"}});

    let (status, replayed, first) =
        post_once(&vault, "/proxy/transaction", "order-1001", &call).await;
    assert_eq!((status, replayed), (504, false), "{first}");
    assert_eq!(first["request_sent"], true, "{first}");
    // The processor may have charged: the retry gets the same answer, and nothing is sent.
    let (status, replayed, again) =
        post_once(&vault, "/proxy/transaction", "order-1001", &call).await;
    assert_eq!((status, replayed), (504, true), "{again}");
    assert_eq!(again, first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stub.count("/slow"), 1, "the retry reached the processor");

    // The same key on another request is refused, whatever the answer kept.
    let mut other = call.clone();
    other["request_data"]["amount"] = json!(2000);
    let (status, replayed, body) =
        post_once(&vault, "/proxy/transaction", "order-1001", &other).await;
    assert_eq!((status, replayed), (422, false));
    assert_eq!(
        body,
        json!({"success": false, "message": "Idempotency key reused with a different request", "data": null, "code": "idempotency_key_reused"})
    );
    assert_eq!(stub.count("/slow"), 1);
}

#[tokio::test]
async fn a_retry_after_a_refused_connection_runs_again_with_the_same_cvc_session() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let relay = Relay::closed();
    let call = json!({"token": token, "cvc_session_id": session, "proxy_url": relay.url("/charge"), "request_data": {"n": "${cardNumber}", "c": "${cvv}"}});

    let (status, _, body) = post_once(&vault, "/proxy/transaction", "order-1002", &call).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["request_sent"], false, "{body}");
    // Nothing was sent, so nothing was kept: the retry really runs, and finds the CVC.
    relay.open(stub_port(&stub)).await;
    let (status, replayed, body) =
        post_once(&vault, "/proxy/transaction", "order-1002", &call).await;
    assert_eq!((status, replayed), (200, false), "{body}");
    assert_eq!(stub.last().json(), json!({"n": VISA, "c": CVC}));
    let (status, replayed, again) =
        post_once(&vault, "/proxy/transaction", "order-1002", &call).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, body);
    assert_eq!(stub.count("/charge"), 1);
}

#[tokio::test]
async fn twenty_calls_with_one_key_on_two_instances_reach_the_processor_once() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let other = vault.another_instance();
    let (token, _) = vault.visa().await;
    let call = json!({"token": token, "proxy_url": stub.url("/slow?ms=300"), "request_data": {"n": "${cardNumber}"}});
    let calls = (0..20).map(|i| {
        let instance = if i % 2 == 0 { &vault } else { &other };
        let call = &call;
        async move { post_once(instance, "/proxy/transaction", "order-race", call).await }
    });
    let answers = futures_join_all(calls).await;
    let ran: Vec<_> = answers.iter().filter(|(s, r, _)| *s == 200 && !r).collect();
    assert_eq!(ran.len(), 1, "{answers:?}");
    for (status, replayed, body) in &answers {
        match (status, replayed) {
            (200, _) => assert_eq!(body, &ran[0].2),
            (409, false) => assert_eq!(
                body,
                &json!({"success": false, "message": "Idempotency key in use", "data": null, "code": "idempotency_key_in_use"})
            ),
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(stub.count("/slow"), 1);
    // Once it has answered, either instance replays it.
    let (status, replayed, _) = post_once(&other, "/proxy/transaction", "order-race", &call).await;
    assert_eq!((status, replayed), (200, true));
}

#[tokio::test]
async fn keys_are_per_project_and_kept_answers_expire() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_IDEMPOTENCY_TTL_SECONDS", "1")]).await;
    let (token, _) = vault.visa().await;
    let call = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}});
    let (status, replayed, _) = post_once(&vault, "/proxy/transaction", "same-key", &call).await;
    assert_eq!((status, replayed), (200, false));

    // Another project's call with the same key is its own.
    let other = vault.create_project(&[]);
    let other_token = vault.token_in(&other, VISA).await;
    let other_call = json!({"token": other_token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}});
    let (status, replayed, _) = post_once_as(
        &vault,
        &other,
        "/proxy/transaction",
        "same-key",
        &other_call,
    )
    .await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(stub.count("/charge"), 2);

    // After the key's lifetime, the same call runs again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, replayed, _) = post_once(&vault, "/proxy/transaction", "same-key", &call).await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(stub.count("/charge"), 3);
}

#[tokio::test]
async fn tokenize_and_create_calls_are_kept_sealed_and_replayed() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "7", "expirationYear": "2031", "cvv": CVC}});
    let (status, replayed, first) = post_once(&vault, "/tokenize", "signup-77", &card).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let tokens = vault.token_count().await;
    let (status, replayed, again) = post_once(&vault, "/tokenize", "signup-77", &card).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(
        vault.token_count().await,
        tokens,
        "the retry stored another token"
    );

    let admin = vault.create_app("provisioning");
    let admin_keys = Keys {
        api_key: admin,
        ..vault.keys.clone()
    };
    let app = json!({"name": "checkout web"});
    let (status, _, created) =
        post_once_as(&vault, &admin_keys, "/api/applications", "app-1", &app).await;
    assert_eq!(status, 201, "{created}");
    let api_key = created["data"]["api_key"].as_str().unwrap().to_owned();
    let (status, replayed, again) =
        post_once_as(&vault, &admin_keys, "/api/applications", "app-1", &app).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again["data"]["api_key"], api_key.as_str());

    // Refused calls are not kept: the name is taken, and a retry says so again.
    let (status, _, _) =
        post_once_as(&vault, &admin_keys, "/api/applications", "app-2", &app).await;
    assert_eq!(status, 409);
    let (status, replayed, _) =
        post_once_as(&vault, &admin_keys, "/api/applications", "app-2", &app).await;
    assert_eq!((status, replayed), (409, false));

    // Each replay is audited as one, with the status it replayed; nothing else is.
    let mut conn = vault.database().await;
    let replays: Vec<(String, String)> = sqlx::query(
        "SELECT action, detail FROM audit_log WHERE outcome = 'idempotent_replay' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    assert_eq!(
        replays,
        [
            ("tokenize".to_owned(), r#"{"status":201}"#.to_owned()),
            (
                "application.create".to_owned(),
                r#"{"status":201}"#.to_owned()
            ),
        ]
    );

    // What is kept is sealed: no card number, CVC, API key or idempotency key in the clear.
    let rows = sqlx::query("SELECT key_hash, request_hash, answer FROM idempotency_keys")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(rows.len() >= 2);
    for row in rows {
        let mut stored = row.get::<Vec<u8>, _>(0);
        stored.extend(row.get::<Vec<u8>, _>(1));
        stored.extend(row.get::<Option<Vec<u8>>, _>(2).unwrap_or_default());
        for secret in [
            VISA,
            CVC,
            api_key.as_str(),
            "signup-77",
            "app-1",
            "checkout web",
        ] {
            assert!(
                !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is stored in the clear"
            );
        }
    }
}

#[tokio::test]
async fn keys_that_are_not_keys_are_refused() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let call = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}});
    for key in ["k".repeat(256), String::new(), "caf\u{e9}".to_owned()] {
        let resp = vault
            .http
            .post(vault.url("/proxy/transaction"))
            .header("X-API-Key", &vault.keys.api_key)
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            )
            .json(&call)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"success": false, "message": "Invalid value for Idempotency-Key", "data": null, "code": "invalid_field"})
        );
    }
    assert_eq!(stub.count("/charge"), 0);
    let (status, _, _) = post_once(&vault, "/proxy/transaction", &"k".repeat(255), &call).await;
    assert_eq!(status, 200);
}
