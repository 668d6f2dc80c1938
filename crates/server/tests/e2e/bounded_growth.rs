//! Nothing grows without bound: the embedded database's write-ahead log shrinks back after a
//! burst, and test-mode CVC sessions (a year long, reusable) are capped per project.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn the_write_ahead_log_shrinks_back_after_a_burst() {
    let stub = Stub::start().await;
    if Backend::from_env().is_scaled() {
        return;
    }
    let vault = Vault::start(&stub).await;
    let wal = vault.data_dir().join("cardvault.db-wal");
    let wal_bytes = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    const LIMIT: u64 = 16 * 1024 * 1024;

    // A reader that keeps its snapshot open stops checkpoints from finishing, so a burst of
    // writes grows the log past its bound, as a burst under steady reads does.
    let mut reader = vault.database().await;
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("SELECT count(*) FROM tokens")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}});
    let mut calls = 0;
    while wal_bytes() <= LIMIT + 4 * 1024 * 1024 {
        let (status, body) = vault.post("/tokenize", &vault.keys, &card).await;
        assert_eq!(status, 201, "{body}");
        calls += 1;
        assert!(calls < 50_000, "the log never grew: {} bytes", wal_bytes());
    }
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    drop(reader);

    let shrunk = eventually(Duration::from_secs(15), || wal_bytes() <= LIMIT).await;
    assert!(shrunk, "the log stayed at {} bytes", wal_bytes());
    // Everything written is still there.
    assert_eq!(vault.token_count().await, calls);
}

#[tokio::test]
async fn test_mode_cvc_sessions_are_capped_per_project_oldest_first() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_TEST_CVC_SESSIONS_PER_PROJECT", "3")]).await;
    let card =
        json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033", "cvc": CVC});
    let mut made = Vec::new();
    for _ in 0..5 {
        let (status, body) = vault.post("/test-tokens", &vault.keys, &card).await;
        assert_eq!(status, 201, "{body}");
        made.push((
            body["token"].as_str().unwrap().to_owned(),
            body["cvc_session_id"].as_str().unwrap().to_owned(),
        ));
    }
    let call = |(token, session): &(String, String)| json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": {"c": "${cvv}"}});
    for (i, made) in made.iter().enumerate() {
        let (status, body) = vault.proxy(&call(made)).await;
        let expected = if i < 2 { 404 } else { 200 };
        assert_eq!(status, expected, "session {i}: {body}");
    }
    // Reusable sessions stay usable, and a deleted one frees its place.
    assert_eq!(vault.proxy(&call(&made[4])).await.0, 200);
    let req = vault
        .http
        .delete(vault.url(&format!("/proxy/delete-cvc-session/{}", made[2].1)))
        .header("X-API-Key", &vault.keys.api_key);
    assert_eq!(send_with(req, &[]).await.0, 200);
    let (status, body) = vault.post("/test-tokens", &vault.keys, &card).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        vault.proxy(&call(&made[3])).await.0,
        200,
        "still within the cap"
    );
}
