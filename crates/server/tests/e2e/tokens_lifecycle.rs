//! Token lifecycle: metadata, deletion by crypto-shredding, expiry and the sweeper, retention.

use std::time::Duration;

use cardvault_server::clock::{now_unix, parse_rfc3339};
use cardvault_testkit::cardvault::run_json;
use serde_json::{Value, json};

use crate::harness::*;

pub fn not_found() -> Value {
    json!({"success": false, "message": "Token not found", "data": null, "code": "token_not_found"})
}

pub async fn get_token(vault: &Vault, api_key: &str, token: &str) -> (u16, Value) {
    let url = vault.url(&format!("/tokens/{token}"));
    send_with(vault.http.get(url), &[("X-API-Key", api_key)]).await
}

pub async fn delete_token(vault: &Vault, api_key: &str, token: &str) -> (u16, Value) {
    let url = vault.url(&format!("/tokens/{token}"));
    send_with(vault.http.delete(url), &[("X-API-Key", api_key)]).await
}

pub async fn detokenize(vault: &Vault, api_key: &str, body: &Value) -> (u16, Value) {
    let request = vault.http.post(vault.url("/detokenize")).json(body);
    send_with(request, &[("X-API-Key", api_key)]).await
}

/// An application with `permissions` in the project `project_id` (the harness's `create_app`
/// makes them in the default project only).
pub fn app_in(vault: &Vault, project_id: &str, permissions: &str) -> String {
    let dir = vault.data_dir();
    let created = run_json(vault.cli().args([
        "app",
        "create",
        "--data-dir",
        dir.to_str().unwrap(),
        "--project",
        project_id,
        "--name",
        "lifecycle",
        "--permissions",
        permissions,
        "--json",
    ]));
    created["api_key"].as_str().unwrap().to_owned()
}

/// A card tokenize body with `extra` top-level fields (`expires_at`, `ttl_seconds`).
fn card_with(number: &str, extra: Value) -> Value {
    let mut body = json!({"type": "card", "data": {"cardNumber": number, "expirationMonth": "12", "expirationYear": "2034"}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// A charge of `token` through the proxy with the key of `keys`' project.
async fn charge(vault: &Vault, stub: &Stub, keys: &Keys, token: &str) -> (u16, Value) {
    let call = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"number": "${cardNumber}"}});
    vault.post("/proxy/transaction", keys, &call).await
}

/// A token's row as stored.
#[derive(Debug)]
struct StoredRow {
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    fingerprint: Option<Vec<u8>>,
    deleted_at: Option<i64>,
    last4: String,
}

impl StoredRow {
    async fn read(vault: &Vault, token: &str) -> Self {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT nonce, ciphertext, fingerprint, deleted_at, last4 FROM tokens WHERE id = $1",
        )
        .bind(token)
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap();
        Self {
            nonce: row.get("nonce"),
            ciphertext: row.get("ciphertext"),
            fingerprint: row.get("fingerprint"),
            deleted_at: row.get("deleted_at"),
            last4: row.get("last4"),
        }
    }

    /// Nothing left that could open: the sealed data and fingerprint are erased, the row kept
    /// as a tombstone with its clear metadata.
    fn is_shredded(&self) -> bool {
        self.nonce.is_empty()
            && self.ciphertext.is_empty()
            && self.fingerprint.is_none()
            && self.deleted_at.is_some()
    }
}

/// Waits (up to `limit`) for the sweeper to shred `token`.
async fn swept(vault: &Vault, token: &str, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if StoredRow::read(vault, token).await.is_shredded() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339_near(value: &Value, expected: i64) {
    let at = value
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"));
    assert!(
        value.as_str().unwrap().ends_with('Z'),
        "not in UTC: {value}"
    );
    assert!((at - expected).abs() <= 5, "{value} is not near {expected}");
}

#[tokio::test]
async fn token_metadata_describes_the_token_never_the_number() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let api_key = vault.keys.api_key.clone();

    let (status, body) = get_token(&vault, &api_key, &token).await;
    assert_eq!(status, 200, "{body}");
    rfc3339_near(&body["data"]["created_at"], now_unix());
    let mut data = body["data"].clone();
    data.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        data,
        json!({"token": token, "type": "card", "brand": "visa", "last4": "4242", "bin": "424242",
               "expiration_month": "07", "expiration_year": "2031", "expires_at": null})
    );
    assert_eq!(body["success"], true);
    let text = body.to_string();
    assert!(
        !text.contains(VISA) && !text.contains(HOLDER_FIRST),
        "{text}"
    );

    let (status, bank) = vault
        .post(
            "/tokenize",
            &vault.keys,
            &json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000"}}),
        )
        .await;
    assert_eq!(status, 201, "{bank}");
    let (status, body) = get_token(&vault, &api_key, bank["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["type"], "bank");
    assert_eq!(body["data"]["last4"], "6789");
    assert_eq!(body["data"]["routing_number"], "110000000");
    for field in ["brand", "bin", "expiration_month", "expiration_year"] {
        assert_eq!(body["data"][field], Value::Null, "{field}");
    }
    assert!(!body.to_string().contains(ACCOUNT));

    // Another project's token, an unknown one and a path that names none are all 404.
    let other = vault.create_project(&[]);
    let theirs = vault.token_in(&other, MASTERCARD).await;
    for token in [
        theirs.as_str(),
        "tok_0123456789abcdef0123456789abcdef",
        &"t".repeat(300),
    ] {
        assert_eq!(
            get_token(&vault, &api_key, token).await,
            (404, not_found()),
            "{token}"
        );
    }
    assert_eq!(
        get_token(&vault, &other.api_key, &token).await,
        (404, not_found())
    );

    // Metadata needs the tokenization permission.
    let reveal_only = vault.create_app("reveal");
    let (status, body) = get_token(&vault, &reveal_only, &token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "permission_denied");
    let (status, _) = get_token(&vault, "key_nope", &token).await;
    assert_eq!(status, 401);

    // With deduplication on, the fingerprint is shown (the same one tokenize answered with).
    let dedup = vault.create_project(&["--deduplicate"]);
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "1", "expirationYear": "2033"}});
    let (status, tokenized) = vault.post("/tokenize", &dedup, &card).await;
    assert_eq!(status, 201, "{tokenized}");
    let (status, body) =
        get_token(&vault, &dedup.api_key, tokenized["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["fingerprint"], tokenized["fingerprint"]);
    assert_eq!(body["data"]["fingerprint"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_deleted_token_is_shredded_and_gone_everywhere() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let keys = vault.create_project(&["--deduplicate"]);
    let revealer = app_in(&vault, &keys.project_id, "tokenization,reveal");
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "1", "expirationYear": "2033"}});
    let (status, first) = vault.post("/tokenize", &keys, &card).await;
    assert_eq!(status, 201, "{first}");
    let token = first["token"].as_str().unwrap().to_owned();
    assert_eq!(charge(&vault, &stub, &keys, &token).await.0, 200);
    let before = StoredRow::read(&vault, &token).await;
    assert!(!before.ciphertext.is_empty() && before.fingerprint.is_some());

    let (status, body) = delete_token(&vault, &keys.api_key, &token).await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "message": "Token deleted"}))
    );

    // The sealed data and the fingerprint are erased, not flagged; the row stays as a
    // tombstone holding only clear metadata.
    let after = StoredRow::read(&vault, &token).await;
    assert!(after.is_shredded(), "{after:?}");
    assert_eq!(after.last4, "4242");
    if !vault.backend.is_scaled() {
        // Not even the files keep the old ciphertext once the log is checkpointed.
        assert_files_lack(&vault, &before.ciphertext).await;
    }

    assert_eq!(
        get_token(&vault, &keys.api_key, &token).await,
        (404, not_found())
    );
    assert_eq!(
        delete_token(&vault, &keys.api_key, &token).await,
        (404, not_found())
    );
    assert_eq!(
        charge(&vault, &stub, &keys, &token).await,
        (404, not_found())
    );
    assert_eq!(stub.count("/charge"), 1);
    assert_eq!(
        detokenize(&vault, &revealer, &json!({"token": token})).await,
        (404, not_found())
    );

    // Deduplication does not bring it back: the same card gets a new token, which then
    // deduplicates as usual.
    let (status, second) = vault.post("/tokenize", &keys, &card).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["token"], first["token"]);
    assert_eq!(second["deduplicated"], false);
    assert_eq!(second["fingerprint"], first["fingerprint"]);
    let (_, third) = vault.post("/tokenize", &keys, &card).await;
    assert_eq!(third["token"], second["token"]);
    assert_eq!(third["deduplicated"], true);
    assert_eq!(
        charge(&vault, &stub, &keys, second["token"].as_str().unwrap())
            .await
            .0,
        200
    );

    // Another project cannot delete it.
    let (status, _) = delete_token(
        &vault,
        &vault.keys.api_key,
        second["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        !StoredRow::read(&vault, second["token"].as_str().unwrap())
            .await
            .is_shredded()
    );
}

/// The SQLite files (database and log, after a checkpoint) do not hold `bytes` anywhere.
async fn assert_files_lack(vault: &Vault, bytes: &[u8]) {
    use sqlx::Row;
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 0, "the checkpoint did not complete");
    let needle = &bytes[..24];
    for file in ["cardvault.db", "cardvault.db-wal"] {
        let content = std::fs::read(vault.data_dir().join(file)).unwrap_or_default();
        assert!(
            !content.windows(needle.len()).any(|w| w == needle),
            "{file} still holds the deleted ciphertext"
        );
    }
}

#[tokio::test]
async fn expired_tokens_are_gone_everywhere_and_swept() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_TOKEN_SWEEP_INTERVAL_SECONDS", "1")]).await;
    let revealer = vault.create_app("tokenization,reveal");
    let api_key = vault.keys.api_key.clone();
    let expiring = |ttl: Value| card_with(VISA, json!({"ttl_seconds": ttl}));

    let (status, short) = vault
        .post("/tokenize", &vault.keys, &expiring(json!(1)))
        .await;
    assert_eq!(status, 201, "{short}");
    rfc3339_near(&short["expires_at"], now_unix() + 1);
    let short = short["token"].as_str().unwrap().to_owned();
    let (status, long) = vault
        .post("/tokenize", &vault.keys, &expiring(json!(3600)))
        .await;
    assert_eq!(status, 201, "{long}");
    let long = long["token"].as_str().unwrap().to_owned();
    let (status, body) = get_token(&vault, &api_key, &long).await;
    assert_eq!(status, 200, "{body}");
    rfc3339_near(&body["data"]["expires_at"], now_unix() + 3600);

    // The sweeper (every second here) erases the expired token by itself.
    assert!(
        swept(&vault, &short, Duration::from_secs(10)).await,
        "the sweeper did not erase the expired token"
    );
    assert_eq!(
        get_token(&vault, &api_key, &short).await,
        (404, not_found())
    );
    assert_eq!(
        charge(&vault, &stub, &vault.keys, &short).await,
        (404, not_found())
    );
    assert_eq!(
        detokenize(&vault, &revealer, &json!({"token": short})).await,
        (404, not_found())
    );
    assert_eq!(
        delete_token(&vault, &api_key, &short).await,
        (404, not_found())
    );
    assert_eq!(stub.count("/charge"), 0);

    // The token that has not expired is untouched.
    assert!(!StoredRow::read(&vault, &long).await.is_shredded());
    assert_eq!(charge(&vault, &stub, &vault.keys, &long).await.0, 200);
}

#[tokio::test]
async fn an_expired_token_is_not_found_before_the_sweeper_runs() {
    let stub = Stub::start().await;
    // The default interval: the sweeper runs at start, then not again within this test.
    let vault = Vault::start(&stub).await;
    let keys = vault.create_project(&["--deduplicate"]);
    let revealer = app_in(&vault, &keys.project_id, "tokenization,reveal");
    let card = |extra: Value| card_with(MASTERCARD, extra);
    let (status, first) = vault
        .post("/tokenize", &keys, &card(json!({"ttl_seconds": 1})))
        .await;
    assert_eq!(status, 201, "{first}");
    let first = first["token"].as_str().unwrap().to_owned();
    let (status, deleted_later) = vault
        .post(
            "/tokenize",
            &vault.keys,
            &card_with(VISA, json!({"ttl_seconds": 1})),
        )
        .await;
    assert_eq!(status, 201, "{deleted_later}");
    let deleted_later = deleted_later["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    assert_eq!(
        get_token(&vault, &keys.api_key, &first).await,
        (404, not_found())
    );
    assert_eq!(
        charge(&vault, &stub, &keys, &first).await,
        (404, not_found())
    );
    assert_eq!(
        detokenize(&vault, &revealer, &json!({"token": first})).await,
        (404, not_found())
    );
    assert!(!StoredRow::read(&vault, &first).await.is_shredded());

    // Deduplication does not find it: the card gets a new token, and the expired one is
    // erased on the way.
    let (status, second) = vault.post("/tokenize", &keys, &card(json!({}))).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["token"], json!(first));
    assert_eq!(second["deduplicated"], false);
    assert!(StoredRow::read(&vault, &first).await.is_shredded());

    // Deleting an expired token answers as for any missing token, and erases it all the same.
    assert_eq!(
        delete_token(&vault, &vault.keys.api_key, &deleted_later).await,
        (404, not_found())
    );
    assert!(StoredRow::read(&vault, &deleted_later).await.is_shredded());
}

#[tokio::test]
async fn a_deduplicated_token_keeps_the_later_expiry() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let keys = vault.create_project(&["--deduplicate"]);
    let card = |extra: Value| card_with(AMEX, extra);
    let (_, first) = vault
        .post("/tokenize", &keys, &card(json!({"ttl_seconds": 3600})))
        .await;
    let (_, shorter) = vault
        .post("/tokenize", &keys, &card(json!({"ttl_seconds": 60})))
        .await;
    assert_eq!(shorter["token"], first["token"]);
    assert_eq!(shorter["deduplicated"], true);
    assert_eq!(shorter["expires_at"], first["expires_at"]);
    let (_, forever) = vault.post("/tokenize", &keys, &card(json!({}))).await;
    assert_eq!(forever["token"], first["token"]);
    assert!(forever.get("expires_at").is_none(), "{forever}");
    let (_, body) = get_token(&vault, &keys.api_key, first["token"].as_str().unwrap()).await;
    assert_eq!(body["data"]["expires_at"], Value::Null);
}

#[tokio::test]
async fn bad_expiries_get_exact_messages_and_store_nothing() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card = |extra: Value| card_with(VISA, extra);
    let refused = |field: &str, detail: &str| {
        json!({"success": false, "message": format!("Invalid value for {field}"), "data": null,
               "code": "invalid_field", "detail": detail})
    };
    let not_timestamp = "expires_at must be an RFC 3339 timestamp such as 2030-01-31T00:00:00Z";
    let cases = [
        (
            json!({"expires_at": "2999-01-01T00:00:00Z", "ttl_seconds": 60}),
            refused("ttl_seconds", "give expires_at or ttl_seconds, not both"),
        ),
        (
            json!({"expires_at": "tomorrow"}),
            refused("expires_at", not_timestamp),
        ),
        (
            json!({"expires_at": "2999-01-01"}),
            refused("expires_at", not_timestamp),
        ),
        (
            json!({"expires_at": 32_503_680_000u64}),
            refused("expires_at", not_timestamp),
        ),
        (
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
            refused("expires_at", "expires_at must be in the future"),
        ),
        (
            json!({"ttl_seconds": 0}),
            refused("ttl_seconds", "ttl_seconds must be a positive integer"),
        ),
        (
            json!({"ttl_seconds": -60}),
            refused("ttl_seconds", "ttl_seconds must be a positive integer"),
        ),
        (
            json!({"ttl_seconds": 1.5}),
            refused("ttl_seconds", "ttl_seconds must be a positive integer"),
        ),
        (
            json!({"ttl_seconds": "60"}),
            refused("ttl_seconds", "ttl_seconds must be a positive integer"),
        ),
    ];
    for (extra, answer) in cases {
        let body = card(extra);
        assert_eq!(
            vault.post("/tokenize", &vault.keys, &body).await,
            (400, answer),
            "{body}"
        );
    }
    // /test-tokens takes the same fields.
    let (status, body) = vault
        .post(
            "/test-tokens",
            &vault.keys,
            &json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2034", "cvc": CVC, "ttl_seconds": 0}),
        )
        .await;
    assert_eq!(
        (status, &body["message"]),
        (400, &json!("Invalid value for ttl_seconds"))
    );
    assert_eq!(vault.token_count().await, 0);
}

#[tokio::test]
async fn retention_sets_and_bounds_expiries() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_TOKEN_RETENTION_SECONDS", "3600")]).await;
    let card = |extra: Value| card_with(VISA, extra);
    let beyond = "the expiry is later than the vault's retention period";
    for (extra, field) in [
        (json!({"ttl_seconds": 3700}), "ttl_seconds"),
        (json!({"expires_at": "2999-01-01T00:00:00Z"}), "expires_at"),
    ] {
        assert_eq!(
            vault.post("/tokenize", &vault.keys, &card(extra)).await,
            (
                400,
                json!({"success": false, "message": format!("Invalid value for {field}"),
                       "data": null, "code": "invalid_field", "detail": beyond})
            )
        );
    }
    assert_eq!(vault.token_count().await, 0);

    // Without an expiry of its own, a token lives for the retention period; a shorter one is
    // kept as asked.
    let (status, kept) = vault.post("/tokenize", &vault.keys, &card(json!({}))).await;
    assert_eq!(status, 201, "{kept}");
    rfc3339_near(&kept["expires_at"], now_unix() + 3600);
    let (_, body) = get_token(&vault, &vault.keys.api_key, kept["token"].as_str().unwrap()).await;
    assert_eq!(body["data"]["expires_at"], kept["expires_at"]);
    let (status, short) = vault
        .post("/tokenize", &vault.keys, &card(json!({"ttl_seconds": 60})))
        .await;
    assert_eq!(status, 201, "{short}");
    rfc3339_near(&short["expires_at"], now_unix() + 60);
    let (status, test_token) = vault
        .post(
            "/test-tokens",
            &vault.keys,
            &json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2034", "cvc": CVC}),
        )
        .await;
    assert_eq!(status, 201, "{test_token}");
    rfc3339_near(&test_token["expires_at"], now_unix() + 3600);
}
