//! Browser collection over HTTP: minting and revoking wax keys, tokenizing with one (as the
//! tokenizer frame does), every way a wax key is refused, the count across instances, and the
//! headers the frames are served with. (The frames themselves run in a real browser: see the
//! `browser` test suite.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

pub const SHOP: &str = "http://127.0.0.1:4000";

/// Allows `origins` to embed the project's fields.
pub fn allow_origins(vault: &Vault, project: &str, origins: &[&str]) -> String {
    let dir = vault.data_dir();
    let out = vault
        .cli()
        .args([
            "project",
            "origins",
            "--data-dir",
            dir.to_str().unwrap(),
            "--project",
            project,
        ])
        .args(origins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn mint(vault: &Vault, keys: &Keys, body: Value) -> (u16, Value) {
    send_with(
        vault
            .http
            .post(vault.url("/collect/sessions"))
            .header("X-API-Key", &keys.api_key)
            .json(&body),
        &[],
    )
    .await
}

pub async fn wax_key(vault: &Vault, keys: &Keys, session: &str, calls: u32) -> String {
    let (status, body) = mint(
        vault,
        keys,
        json!({"tokenization_session_id": session, "max_tokenize_calls": calls}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["wax_key"].as_str().unwrap().to_owned()
}

/// A tokenize call as the tokenizer frame makes it: publishable key and wax key, no API key.
pub async fn browser_tokenize(
    vault: &Vault,
    pub_key: &str,
    wax: &str,
    session: &str,
    origin: &str,
    card: &Value,
) -> (u16, Value) {
    send_with(
        vault.http.post(vault.url("/tokenize")).json(card),
        &[
            ("X-Pub-Key", pub_key),
            ("X-Wax-Key", wax),
            ("X-Tokenization-Session-Id", session),
            ("X-Collect-Origin", origin),
        ],
    )
    .await
}

pub fn card() -> Value {
    json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12",
        "expirationYear": "2031", "cvv": CVC}})
}

fn assert_session_refused((status, body): (u16, Value)) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["message"], "Client session expired or not found");
    assert_eq!(body["code"], "client_session_not_found");
}

#[tokio::test]
async fn a_wax_key_is_minted_for_one_checkout_and_shown_once() {
    let vault = Vault::start_env(&[]).await;
    let (status, body) = mint(
        &vault,
        &vault.keys,
        json!({"tokenization_session_id": "checkout-1"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["wax_key"].as_str().unwrap().starts_with("wax_test_"));
    assert_eq!(body["max_tokenize_calls"], 3, "the default, as the SDK's");
    assert_eq!(body["tokenization_session_id"], "checkout-1");
    let expires = body["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");

    // Only the keyed hash is stored.
    use sqlx::Row;
    let row = sqlx::query("SELECT key_hash FROM collect_sessions")
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap();
    let hash: Vec<u8> = row.get("key_hash");
    assert_eq!(hash.len(), 32);
    assert!(!vault.logs().contains(body["wax_key"].as_str().unwrap()));

    for (bad, message) in [
        (json!({}), "Missing required field: tokenization_session_id"),
        (
            json!({"tokenization_session_id": ""}),
            "Invalid value for tokenization_session_id",
        ),
        (
            json!({"tokenization_session_id": "a b"}),
            "Invalid value for tokenization_session_id",
        ),
        (
            json!({"tokenization_session_id": 7}),
            "Invalid value for tokenization_session_id",
        ),
        (
            json!({"tokenization_session_id": "c", "max_tokenize_calls": 0}),
            "Invalid value for max_tokenize_calls",
        ),
        (
            json!({"tokenization_session_id": "c", "max_tokenize_calls": 101}),
            "Invalid value for max_tokenize_calls",
        ),
        (
            json!({"tokenization_session_id": "c", "max_tokenize_calls": "3"}),
            "Invalid value for max_tokenize_calls",
        ),
    ] {
        let (status, body) = mint(&vault, &vault.keys, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["message"], message, "{bad}");
    }
    let stranger = Keys {
        api_key: "key_nobody_test_pvt_0".into(),
        ..vault.keys.clone()
    };
    let (status, _) = mint(&vault, &stranger, json!({"tokenization_session_id": "c"})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_browser_tokenizes_with_a_wax_key_as_many_times_as_it_allows() {
    let vault = Vault::start_env(&[]).await;
    allow_origins(&vault, &vault.keys.project_id, &[SHOP]);
    let pk = vault.keys.publishable_key.clone();
    let wax = wax_key(&vault, &vault.keys, "checkout-2", 2).await;

    // A malformed card does not use a call.
    let bad = json!({"type": "card", "data": {"cardNumber": "4242424242424241",
        "expirationMonth": "12", "expirationYear": "2031"}});
    let (status, body) = browser_tokenize(&vault, &pk, &wax, "checkout-2", SHOP, &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Invalid card number");

    for _ in 0..2 {
        let (status, body) = browser_tokenize(&vault, &pk, &wax, "checkout-2", SHOP, &card()).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["token"].as_str().unwrap().starts_with("tok_"));
        assert!(body["cvc_session_id"].is_string());
    }
    assert_session_refused(browser_tokenize(&vault, &pk, &wax, "checkout-2", SHOP, &card()).await);
    assert_eq!(vault.token_count().await, 2);
}

#[tokio::test]
async fn every_wrong_wax_key_is_refused_with_the_same_answer() {
    let vault = Vault::start_env(&[("CARDVAULT_COLLECT_SESSION_TTL_SECONDS", "2")]).await;
    allow_origins(&vault, &vault.keys.project_id, &[SHOP]);
    let pk = vault.keys.publishable_key.clone();

    // Bound to another checkout.
    let wax = wax_key(&vault, &vault.keys, "checkout-a", 3).await;
    assert_session_refused(browser_tokenize(&vault, &pk, &wax, "checkout-b", SHOP, &card()).await);
    // Unknown.
    assert_session_refused(
        browser_tokenize(&vault, &pk, "wax_test_0000", "checkout-a", SHOP, &card()).await,
    );
    // Another project's key, with this project's publishable key.
    let other = vault.create_project(&[]);
    allow_origins(&vault, &other.project_id, &[SHOP]);
    let foreign = wax_key(&vault, &other, "checkout-a", 3).await;
    assert_session_refused(
        browser_tokenize(&vault, &pk, &foreign, "checkout-a", SHOP, &card()).await,
    );
    // Revoked.
    let revoked = wax_key(&vault, &vault.keys, "checkout-r", 3).await;
    let (status, body) = send_with(
        vault
            .http
            .delete(vault.url("/collect/sessions/checkout-r"))
            .header("X-API-Key", &vault.keys.api_key),
        &[],
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Client session revoked"))
    );
    assert_session_refused(
        browser_tokenize(&vault, &pk, &revoked, "checkout-r", SHOP, &card()).await,
    );
    let (status, body) = send_with(
        vault
            .http
            .delete(vault.url("/collect/sessions/checkout-r"))
            .header("X-API-Key", &vault.keys.api_key),
        &[],
    )
    .await;
    assert_session_refused((status, body));
    // Another project cannot revoke this one's checkout.
    let kept = wax_key(&vault, &vault.keys, "checkout-k", 3).await;
    let (status, _) = send_with(
        vault
            .http
            .delete(vault.url("/collect/sessions/checkout-k"))
            .header("X-API-Key", &other.api_key),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    // A page on an origin the project does not allow.
    let (status, body) = browser_tokenize(
        &vault,
        &pk,
        &kept,
        "checkout-k",
        "https://evil.example",
        &card(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("allowed origins"));
    // Expired.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_session_refused(browser_tokenize(&vault, &pk, &kept, "checkout-k", SHOP, &card()).await);
    // No publishable key: the same answer as for any call without it.
    let (status, body) = send_with(
        vault.http.post(vault.url("/tokenize")).json(&card()),
        &[
            ("X-Wax-Key", &kept),
            ("X-Tokenization-Session-Id", "checkout-k"),
        ],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "the X-Pub-Key header is missing");
    assert_eq!(vault.token_count().await, 0);
}

#[tokio::test]
async fn the_count_holds_when_many_calls_race_on_two_instances() {
    // On the embedded backend (one SQLite file serves one machine) the race runs on one
    // instance; with CARDVAULT_TEST_BACKEND=postgres on two.
    let a = Vault::start_env(&[]).await;
    allow_origins(&a, &a.keys.project_id, &[SHOP]);
    let b = if a.backend.is_scaled() {
        Some(a.another_instance())
    } else {
        None
    };
    let pk = a.keys.publishable_key.clone();
    let wax = wax_key(&a, &a.keys, "checkout-race", 3).await;
    let card = card();
    let mut calls = Vec::new();
    for i in 0..24 {
        let vault = match (&b, i % 2) {
            (Some(b), 1) => b,
            _ => &a,
        };
        calls.push(browser_tokenize(
            vault,
            &pk,
            &wax,
            "checkout-race",
            SHOP,
            &card,
        ));
    }
    let results = futures_join_all(calls.into_iter()).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let refused = results.iter().filter(|(s, _)| *s == 404).count();
    assert_eq!((created, refused), (3, 21), "{results:?}");
}

#[tokio::test]
async fn frames_are_framed_only_by_the_projects_origins() {
    let vault = Vault::start_env(&[]).await;
    let listed = allow_origins(
        &vault,
        &vault.keys.project_id,
        &[SHOP, "https://*.shop.example"],
    );
    assert!(listed.contains("https://*.shop.example"), "{listed}");
    let pk = &vault.keys.publishable_key;
    let frame = |origin: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("pk", pk)
            .append_pair("origin", origin)
            .append_pair("vault", "v1")
            .finish();
        vault.url(&format!("/collect/v1/card-number.html?{query}"))
    };

    let allowed = vault.http.get(frame(SHOP)).send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    let csp = allowed.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors http://127.0.0.1:4000 https://*.shop.example"),
        "{csp}"
    );
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(allowed.headers()["x-content-type-options"], "nosniff");
    assert_eq!(allowed.headers()["referrer-policy"], "no-referrer");
    assert!(
        allowed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    for refused in [
        frame("https://evil.example"),
        frame("https://shop.example"),
        vault.url("/collect/v1/card-number.html"),
        vault.url("/collect/v1/card-number.html?pk=pk_test_unknown&origin=http://127.0.0.1:4000"),
    ] {
        let response = vault.http.get(&refused).send().await.unwrap();
        assert_eq!(response.status(), 403, "{refused}");
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{refused}"
        );
    }

    let sdk = vault
        .http
        .get(vault.url("/collect/v1/cardvault.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(sdk.status(), 200);
    assert_eq!(sdk.headers()["access-control-allow-origin"], "*");
    assert!(
        sdk.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let missing = vault
        .http
        .get(vault.url("/collect/v1/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The list is the project's settings, shown with them.
    let dir = vault.data_dir();
    let shown = run_json_cli(
        &vault,
        &[
            "project",
            "show",
            "--data-dir",
            dir.to_str().unwrap(),
            "--project",
            &vault.keys.project_id,
            "--json",
        ],
    );
    assert_eq!(
        shown["allowed_origins"],
        json!(["http://127.0.0.1:4000", "https://*.shop.example"])
    );
}

fn run_json_cli(vault: &Vault, args: &[&str]) -> Value {
    cardvault_testkit::cardvault::run_json(vault.cli().args(args))
}

#[test]
fn origins_are_checked_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = Keys::from_json(&cli_json(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]));
    for (bad, says) in [
        ("http://shop.example", "must use https"),
        ("shop.example", "is not an origin"),
        ("https://shop.example/pay", "is not an origin"),
        ("https://*", "wildcard"),
    ] {
        let out = std::process::Command::new(bin())
            .args(["project", "origins", "--data-dir", data.to_str().unwrap()])
            .args(["--project", &keys.project_id, bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
}

#[tokio::test]
async fn the_readme_publishes_the_integrity_hash_of_the_sdk_the_vault_serves() {
    use base64::Engine;
    let vault = Vault::start_env(&[]).await;
    let served = vault
        .http
        .get(vault.url("/collect/v1/cardvault.js"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &served);
    let integrity = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    );
    assert_eq!(integrity, cardvault_testkit::checkout::sdk_integrity());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(&format!("integrity=\"{integrity}\"")),
        "README.md must publish the SDK's hash: integrity=\"{integrity}\""
    );
}
