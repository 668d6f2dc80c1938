//! Rate limits: each application key has a budget per kind of call, and each browser checkout
//! one of its own; over it, a call is answered `429` with API.md's body and `Retry-After`, and
//! does nothing. The budgets here refill once an hour, so the counts are exact however slow the
//! machine.

use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::collect::{SHOP, allow_origins, card, wax_key};
use crate::harness::*;
use crate::tokens_lifecycle::detokenize;

/// A status, the JSON body and the `Retry-After` header.
type Outcome = (u16, Value, Option<String>);

async fn call(request: reqwest::RequestBuilder) -> Outcome {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

/// A tokenize call (no CVC) with `api_key` in the vault's default project.
async fn tokenize_as(vault: &Vault, api_key: &str) -> Outcome {
    call(
        vault
            .http
            .post(vault.url("/tokenize"))
            .header("X-API-Key", api_key)
            .header("X-Pub-Key", &vault.keys.publishable_key)
            .json(&json!({"type": "card", "data": {"cardNumber": MASTERCARD, "expirationMonth": "1", "expirationYear": "2033"}})),
    )
    .await
}

/// A tokenize call as the tokenizer frame makes it, for the checkout `session`.
async fn browser_tokenize(vault: &Vault, wax: &str, session: &str) -> Outcome {
    call(
        vault
            .http
            .post(vault.url("/tokenize"))
            .header("X-Pub-Key", &vault.keys.publishable_key)
            .header("X-Wax-Key", wax)
            .header("X-Tokenization-Session-Id", session)
            .header("X-Collect-Origin", SHOP)
            .json(&card()),
    )
    .await
}

/// The 429 of API.md, exactly, with a wait that agrees with the header and reflects a bucket
/// refilling once an hour.
fn assert_limited((status, body, retry_after): &Outcome) {
    assert_eq!(*status, 429, "{body}");
    let seconds = body["retry_after_seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_seconds is not a whole number: {body}"));
    assert_eq!(
        body,
        &json!({"success": false, "message": "Rate limit exceeded", "data": null,
                "code": "rate_limited", "retry_after_seconds": seconds})
    );
    assert!((3000..=3600).contains(&seconds), "{body}");
    assert_eq!(retry_after.as_deref(), Some(seconds.to_string().as_str()));
}

fn assert_status(outcome: &Outcome, status: u16) {
    assert_eq!(outcome.0, status, "{}", outcome.1);
}

#[tokio::test]
async fn each_key_has_a_budget_per_kind_of_call_and_a_refused_call_does_nothing() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(
        &stub,
        &[
            ("CARDVAULT_RATE_LIMIT_TOKENIZE", "1/h"),
            ("CARDVAULT_RATE_LIMIT_TOKENIZE_BURST", "3"),
            ("CARDVAULT_RATE_LIMIT_PROXY", "1/h"),
            ("CARDVAULT_RATE_LIMIT_PROXY_BURST", "2"),
            ("CARDVAULT_RATE_LIMIT_REVEAL", "1/h"),
            ("CARDVAULT_RATE_LIMIT_REVEAL_BURST", "1"),
        ],
    )
    .await;
    let key = vault.keys.api_key.clone();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let created = tokenize_as(&vault, &key).await;
        assert_status(&created, 201);
        tokens.push(created.1["token"].as_str().unwrap().to_owned());
    }
    let stored = vault.token_count().await;
    assert_limited(&tokenize_as(&vault, &key).await);
    assert_eq!(
        vault.token_count().await,
        stored,
        "a refused call stores nothing"
    );

    // Another application of the same project has a budget of its own.
    let other = vault.create_app("tokenization");
    for _ in 0..3 {
        assert_status(&tokenize_as(&vault, &other).await, 201);
    }
    assert_limited(&tokenize_as(&vault, &other).await);

    // The spent key still has its proxy budget: another kind of call, another bucket.
    let charge = json!({"token": tokens[0], "proxy_url": stub.url("/charge"),
                        "request_data": {"n": "${cardNumber}"}});
    let proxy = || {
        call(
            vault
                .http
                .post(vault.url("/proxy/transaction"))
                .header("X-API-Key", &key)
                .json(&charge),
        )
    };
    for _ in 0..2 {
        assert_status(&proxy().await, 200);
    }
    assert_limited(&proxy().await);
    assert_eq!(
        stub.count("/charge"),
        2,
        "a refused proxy call never reaches the processor"
    );

    // Reveal's budget is its own too.
    let revealer = vault.create_app("reveal");
    let reveal = json!({"token": tokens[0]});
    assert_eq!(detokenize(&vault, &revealer, &reveal).await.0, 200);
    let refused = call(
        vault
            .http
            .post(vault.url("/detokenize"))
            .header("X-API-Key", &revealer)
            .json(&reveal),
    )
    .await;
    assert_limited(&refused);
}

#[tokio::test]
async fn a_browser_checkout_has_a_budget_of_its_own() {
    let vault = Vault::start_env(&[
        ("CARDVAULT_RATE_LIMIT_BROWSER", "1/h"),
        ("CARDVAULT_RATE_LIMIT_BROWSER_BURST", "2"),
    ])
    .await;
    allow_origins(&vault, &vault.keys.project_id, &[SHOP]);
    let first = wax_key(&vault, &vault.keys, "checkout-a", 10).await;
    for _ in 0..2 {
        assert_status(&browser_tokenize(&vault, &first, "checkout-a").await, 201);
    }
    // The wax key has calls left; the checkout's budget is what is spent.
    assert_limited(&browser_tokenize(&vault, &first, "checkout-a").await);

    let second = wax_key(&vault, &vault.keys, "checkout-b", 10).await;
    assert_status(&browser_tokenize(&vault, &second, "checkout-b").await, 201);
    // The merchant's backend key is not drawn on by its shoppers.
    assert_status(&tokenize_as(&vault, &vault.keys.api_key).await, 201);
}

#[tokio::test]
async fn instances_sharing_redis_share_one_budget() {
    let env: Vec<(String, String)> = [
        ("CARDVAULT_RATE_LIMIT_TOKENIZE", "1/h"),
        ("CARDVAULT_RATE_LIMIT_TOKENIZE_BURST", "5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let a = Vault::start_on(Arc::new(Backend::scaled()), &env);
    let b = a.another_instance();
    let key = a.keys.api_key.clone();
    let calls = (0..10).map(|i| tokenize_as(if i % 2 == 0 { &a } else { &b }, &key));
    let outcomes = futures_join_all(calls).await;
    let created = outcomes.iter().filter(|o| o.0 == 201).count();
    let limited: Vec<_> = outcomes.iter().filter(|o| o.0 != 201).collect();
    assert_eq!((created, limited.len()), (5, 5), "{outcomes:?}");
    for outcome in limited {
        assert_limited(outcome);
    }
}

#[tokio::test]
async fn a_redis_that_is_down_leaves_each_instance_a_budget_of_its_own() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis_url = format!("redis://{}/", closed.local_addr().unwrap());
    drop(closed);
    let vault = Vault::start_env(&[
        ("CARDVAULT_REDIS_URL", &redis_url),
        ("CARDVAULT_RATE_LIMIT_TOKENIZE", "1/h"),
        ("CARDVAULT_RATE_LIMIT_TOKENIZE_BURST", "2"),
    ])
    .await;
    for _ in 0..2 {
        assert_status(&tokenize_as(&vault, &vault.keys.api_key).await, 201);
    }
    assert_limited(&tokenize_as(&vault, &vault.keys.api_key).await);
    assert!(
        vault
            .logs()
            .contains("rate limits: Redis is unreachable; each instance counts its own budgets"),
        "the fallback is not logged"
    );
}

#[tokio::test]
async fn limits_can_be_lifted_altogether_or_per_kind_of_call() {
    let tiny = [
        ("CARDVAULT_RATE_LIMIT_TOKENIZE_BURST", "1"),
        ("CARDVAULT_RATE_LIMIT_PROXY", "1/h"),
        ("CARDVAULT_RATE_LIMIT_PROXY_BURST", "1"),
    ];
    let all_off =
        Vault::start_env(&[&tiny[..], &[("CARDVAULT_RATE_LIMIT_ENABLED", "false")]].concat()).await;
    let tokenize_off =
        Vault::start_env(&[&tiny[..], &[("CARDVAULT_RATE_LIMIT_TOKENIZE", "off")]].concat()).await;
    for vault in [&all_off, &tokenize_off] {
        for _ in 0..3 {
            assert_status(&tokenize_as(vault, &vault.keys.api_key).await, 201);
        }
    }
}

#[test]
fn invalid_limits_are_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value, expected) in [
        ("CARDVAULT_RATE_LIMIT_PROXY", "0", "`100/s`"),
        ("CARDVAULT_RATE_LIMIT_REVEAL", "10/week", "`off`"),
        (
            "CARDVAULT_RATE_LIMIT_TOKENIZE_BURST",
            "0",
            "from 1 to 1000000",
        ),
    ] {
        let out = Command::new(bin())
            .args(["serve", "--init", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env(variable, value)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{variable}={value}: the vault started"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let setting = variable.trim_start_matches("CARDVAULT_").to_lowercase();
        assert!(
            stderr.to_lowercase().contains(&setting) && stderr.contains(expected),
            "{variable}={value}: {stderr}"
        );
    }
}
