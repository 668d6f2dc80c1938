//! The audit log: what is recorded (and what never is), reading it over HTTP, the hash chain
//! verified by `cardvault audit verify` and every kind of tampering named, and calls refused
//! with 503 when their record cannot be written.

use std::process::Command;

use serde_json::{Value, json};
use sqlx::Row;

use crate::harness::*;

async fn get(vault: &Vault, path: &str, key: &str) -> (u16, Value) {
    send_with(
        vault.http.get(vault.url(path)).header("X-API-Key", key),
        &[],
    )
    .await
}

/// A vault that has tokenized, charged and deleted a CVC session: something to audit.
async fn busy_vault(stub: &Stub) -> (Vault, String) {
    let vault = Vault::start(stub).await;
    let (token, session) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({
            "token": token, "cvc_session_id": session,
            "proxy_url": stub.url("/v1/charges?customer=cus_9&secret=s3cr3t"),
            "request_data": {"number": "${cardNumber}", "cvc": "${cvv}"}
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    let (token2, session2) = vault.visa().await;
    let (status, _) = send_with(
        vault
            .http
            .delete(vault.url(&format!("/proxy/delete-cvc-session/{session2}")))
            .header("X-API-Key", &vault.keys.api_key),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let _ = token2;
    (vault, token)
}

#[tokio::test]
async fn calls_are_recorded_with_who_what_and_where_but_never_card_data() {
    let stub = Stub::start().await;
    let (vault, token) = busy_vault(&stub).await;
    let auditor = vault.create_app("audit");

    let (status, body) = get(&vault, "/audit-logs?action=proxy", &auditor).await;
    assert_eq!(status, 200, "{body}");
    let records = body["data"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{body}");
    let proxy = &records[0];
    assert_eq!(proxy["token"], token);
    assert_eq!(proxy["outcome"], "ok");
    assert_eq!(proxy["detail"]["host"], "localhost");
    assert_eq!(proxy["detail"]["upstream_status"], 200);
    assert_eq!(proxy["detail"]["request_sent"], true);
    assert!(proxy["detail"]["latency_ms"].is_u64());
    assert!(!proxy["request_id"].as_str().unwrap().is_empty());
    assert!(
        proxy["application_id"]
            .as_str()
            .unwrap()
            .starts_with("app_")
    );

    // Filters and the cursor.
    let (_, by_token) = get(&vault, &format!("/audit-logs?token={token}"), &auditor).await;
    assert!(
        by_token["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["token"] == token)
    );
    let (_, page) = get(&vault, "/audit-logs?limit=1", &auditor).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = get(
        &vault,
        &format!("/audit-logs?limit=1&cursor={cursor}"),
        &auditor,
    )
    .await;
    assert_ne!(page["data"][0]["id"], next["data"][0]["id"]);
    let (_, later) = get(&vault, "/audit-logs?since=2999-01-01T00:00:00Z", &auditor).await;
    assert_eq!(later["data"], json!([]));
    for bad in ["since=yesterday", "limit=0", "cursor=-1", "colour=red"] {
        let (status, _) = get(&vault, &format!("/audit-logs?{bad}"), &auditor).await;
        assert_eq!(status, 400, "{bad}");
    }
    // Its own permission: a tokenization key cannot read it.
    let (status, _) = get(&vault, "/audit-logs", &vault.keys.api_key).await;
    assert_eq!(status, 403);
    // Another project sees none of these records.
    let other = vault.create_project(&[]);
    let (_, theirs) = get(&vault, "/audit-logs", &other.api_key).await;
    assert_eq!(theirs["success"], false);

    // No card data, CVC, secret key or full URL in any stored record.
    let rows = sqlx::query("SELECT request_id, project_id, application_id, action, outcome, token, detail FROM audit_log")
        .fetch_all(&mut vault.database().await)
        .await
        .unwrap();
    assert!(rows.len() >= 5, "{} records", rows.len());
    for row in &rows {
        let text: String = (0..7)
            .map(|i| row.get::<String, _>(i))
            .collect::<Vec<_>>()
            .join("|");
        // The CVC is three digits: it is looked for as a word of its own, not inside the
        // random hex of an id, where it turns up by chance.
        let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric()).collect();
        assert!(!words.contains(&CVC), "the CVC in an audit record: {text}");
        for secret in [VISA, "s3cr3t", "cus_9", "/v1/charges", &vault.keys.api_key] {
            assert!(
                !text.contains(secret),
                "{secret} in an audit record: {text}"
            );
        }
    }
    let actions: Vec<String> = rows.iter().map(|r| r.get::<String, _>("action")).collect();
    for action in ["chain.start", "tokenize", "proxy", "cvc_session.delete"] {
        assert!(
            actions.iter().any(|a| a == action),
            "no {action} in {actions:?}"
        );
    }
}

/// Runs `cardvault audit verify` on the vault's data; returns (success, output).
fn verify(vault: &Vault, extra: &[&str]) -> (bool, String) {
    let dir = vault.data_dir();
    let out = vault
        .cli()
        .args(["audit", "verify", "--data-dir", dir.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn exec(vault: &Vault, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut vault.database().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_names_every_kind_of_tampering() {
    let stub = Stub::start().await;
    let (mut vault, _) = busy_vault(&stub).await;
    // A second instance writes a chain of its own, concurrently.
    let mut other = vault.another_instance();
    let _ = other.visa().await;
    vault.terminate();
    other.terminate();

    let heads = vault.dir.path().join("heads.txt");
    let (ok, text) = verify(&vault, &["--write-heads", heads.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("audit log intact"), "{text}");

    // A record in the middle of a chain of three or more, for each tampering.
    let row = sqlx::query(
        "SELECT id, chain, seq, outcome FROM audit_log
         WHERE seq = 2 AND chain IN (SELECT chain FROM audit_log WHERE seq = 3) ORDER BY id LIMIT 1",
    )
    .fetch_one(&mut vault.database().await)
    .await
    .unwrap();
    let (id, chain, outcome): (i64, String, String) =
        (row.get("id"), row.get("chain"), row.get("outcome"));
    let named = format!("chain {chain} record 2");

    // Edited.
    exec(
        &vault,
        &format!("UPDATE audit_log SET outcome = 'forged' WHERE id = {id}"),
    )
    .await;
    let (ok, text) = verify(&vault, &[]);
    assert!(
        !ok && text.contains(&named) && text.contains("contents were changed"),
        "{text}"
    );
    exec(
        &vault,
        &format!("UPDATE audit_log SET outcome = '{outcome}' WHERE id = {id}"),
    )
    .await;
    assert!(verify(&vault, &[]).0);

    // Reordered: records 2 and 3 swap places.
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = -2 WHERE chain = '{chain}' AND seq = 2"),
    )
    .await;
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = 2 WHERE chain = '{chain}' AND seq = 3"),
    )
    .await;
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = 3 WHERE chain = '{chain}' AND seq = -2"),
    )
    .await;
    let (ok, text) = verify(&vault, &[]);
    assert!(
        !ok && text.contains(&format!("chain {chain} record 2")),
        "{text}"
    );
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = -2 WHERE chain = '{chain}' AND seq = 2"),
    )
    .await;
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = 2 WHERE chain = '{chain}' AND seq = 3"),
    )
    .await;
    exec(
        &vault,
        &format!("UPDATE audit_log SET seq = 3 WHERE chain = '{chain}' AND seq = -2"),
    )
    .await;
    assert!(verify(&vault, &[]).0);

    // Deleted (kept aside to put back).
    exec(
        &vault,
        &format!("CREATE TABLE kept AS SELECT * FROM audit_log WHERE id = {id}"),
    )
    .await;
    exec(&vault, &format!("DELETE FROM audit_log WHERE id = {id}")).await;
    let (ok, text) = verify(&vault, &[]);
    assert!(!ok && text.contains("records are missing"), "{text}");
    exec(&vault, "INSERT INTO audit_log SELECT * FROM kept").await;
    assert!(verify(&vault, &[]).0);

    // Inserted: a forged record after the chain's last one.
    exec(
        &vault,
        &format!(
            "INSERT INTO audit_log (chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash)
             SELECT chain, seq + 1, at_ms, request_id, project_id, application_id, 'detokenize', 'ok', token, detail, hash, hash
             FROM audit_log WHERE chain = '{chain}' ORDER BY seq DESC LIMIT 1"
        ),
    )
    .await;
    let (ok, text) = verify(&vault, &[]);
    assert!(!ok && text.contains("contents were changed"), "{text}");
    exec(
        &vault,
        &format!("DELETE FROM audit_log WHERE chain = '{chain}' AND action = 'detokenize'"),
    )
    .await;
    assert!(verify(&vault, &[]).0);

    // The tail cut: the chain alone still checks out, the kept heads do not.
    exec(
        &vault,
        &format!("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log WHERE chain = '{chain}')"),
    )
    .await;
    assert!(
        verify(&vault, &[]).0,
        "a cut tail is invisible without the heads"
    );
    let (ok, text) = verify(&vault, &["--heads", heads.to_str().unwrap()]);
    let kept = std::fs::read_to_string(&heads).unwrap();
    assert!(
        !ok && text.contains("kept head is gone"),
        "{text}\nkept:\n{kept}"
    );
}

#[tokio::test]
async fn a_call_whose_record_cannot_be_written_is_refused_with_503() {
    let stub = Stub::start().await;
    let mut vault = Vault::start(&stub).await;
    vault.check_audit = false;
    let (token, _) = vault.visa().await;
    exec(&vault, "DROP TABLE audit_log").await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], "Service unavailable");
    let (status, _) = send_with(
        vault
            .http
            .delete(vault.url(&format!("/proxy/delete-cvc-session/{}", uuid_v4())))
            .header("X-API-Key", &vault.keys.api_key),
        &[],
    )
    .await;
    assert_eq!(status, 503);
    assert!(vault.logs().contains("audit log write failed"));
}

fn uuid_v4() -> String {
    "2f1a9b7e-4c3d-4e5f-8a6b-7c8d9e0f1a2b".to_owned()
}

#[test]
fn export_writes_one_json_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    cli_json(&["init", "--data-dir", data.to_str().unwrap(), "--json"]);
    let out = Command::new(bin())
        .args(["audit", "export", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // init's own chain: its start, and the project it created.
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["chain.start", "project.create"], "{text}");
    for record in &records {
        assert_eq!(record["hash"].as_str().unwrap().len(), 64, "{record}");
    }
}
