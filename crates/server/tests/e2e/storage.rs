use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn tokens_survive_a_restart() {
    let stub = Stub::start().await;
    let mut vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    vault.restart();
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}", "m": "${expirationMonth}"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().json(), json!({"n": VISA, "m": "07"}));
}

#[tokio::test]
async fn init_refuses_an_existing_vault() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    // With the master key in a token there is no key file (and none may appear).
    let key_file = vault.data_dir().join("master.key");
    let key_before = std::fs::read(&key_file).ok();
    assert_eq!(key_before.is_none(), vault.backend.hsm.is_some());
    let out = vault
        .cli()
        .args(["init", "--data-dir", vault.data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a vault"));
    assert_eq!(std::fs::read(&key_file).ok(), key_before);
    #[cfg(unix)]
    if key_before.is_some() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(vault.data_dir().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The vault still works with its original keys.
    vault.visa().await;
}

#[tokio::test]
async fn tampered_or_moved_ciphertexts_fail_closed() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (tampered, _) = vault.visa().await;
    let (moved_to, _) = vault.visa().await;
    let mut conn = vault.database().await;
    // The nonce's 12 bytes in place of the ciphertext: same row, wrong bytes.
    sqlx::query("UPDATE tokens SET ciphertext = nonce WHERE id = $1")
        .bind(&tampered)
        .execute(&mut conn)
        .await
        .unwrap();
    let (victim, _) = vault.visa().await;
    sqlx::query(
        "UPDATE tokens SET nonce = (SELECT nonce FROM tokens WHERE id = $1), ciphertext = (SELECT ciphertext FROM tokens WHERE id = $1) WHERE id = $2",
    )
    .bind(&victim)
    .bind(&moved_to)
    .execute(&mut conn)
    .await
    .unwrap();
    for token in [&tampered, &moved_to] {
        let (status, body) = vault
            .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
            .await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(
            body,
            json!({"success": false, "message": "Internal server error", "data": null, "code": "internal"})
        );
    }
    assert_eq!(stub.count("/charge"), 0);
    let logs = vault.logs();
    assert!(
        logs.contains("ciphertext failed authentication"),
        "the cause is logged once"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let stub = Stub::start().await;
    let mut vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let call = {
        let (http, url) = (vault.http.clone(), vault.url("/proxy/transaction"));
        let body = json!({"token": token, "proxy_url": stub.url("/slow?ms=1500"), "request_data": {"n": "${cardNumber}"}});
        let key = vault.keys.api_key.clone();
        tokio::spawn(async move {
            http.post(url)
                .header("X-API-Key", key)
                .json(&body)
                .send()
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let exited_cleanly = tokio::task::spawn_blocking(move || {
        let ok = vault.terminate();
        (ok, vault)
    })
    .await
    .unwrap();
    let resp = call
        .await
        .unwrap()
        .expect("the in-flight call was answered");
    assert_eq!(resp.status(), 200);
    assert!(
        exited_cleanly.0,
        "the server exited with an error; its log:\n{}",
        exited_cleanly.1.logs()
    );
    assert!(exited_cleanly.1.logs().contains("cardvault stopped"));
}
