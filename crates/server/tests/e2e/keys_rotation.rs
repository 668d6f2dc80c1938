//! Data-key rotation while the vault serves: `cardvault keys rotate|status|retire`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use crate::harness::*;

/// Instances reload keys this often in these tests, so the rotation's waits are short.
const CACHE_TTL_MS: &str = "200";

async fn start(stub: &Stub) -> Vault {
    Vault::start_with(stub, &[("CARDVAULT_CACHE_TTL_MS", CACHE_TTL_MS)]).await
}

/// Tokenizes `count` distinct cards, 16 at a time; returns token → card number.
async fn tokenize_many(vault: &Vault, count: u64) -> HashMap<String, String> {
    let mut cards = HashMap::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let calls = chunk.iter().map(|n| {
            let number = card_number(*n);
            async move { (vault.token_in(&vault.keys, &number).await, number) }
        });
        cards.extend(futures_join_all(calls).await);
    }
    cards
}

fn keys_command(vault: &Vault, args: &[&str]) -> Command {
    let mut command = vault.cli();
    command
        .args(["keys"])
        .args(args)
        .args(["--data-dir", vault.data_dir().to_str().unwrap()]);
    command
}

fn status(vault: &Vault) -> Value {
    let out = keys_command(vault, &["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The data key versions `keys status` lists.
fn versions(vault: &Vault) -> Vec<u64> {
    status(vault)["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// Proxies each token; the processor must receive that token's own card.
async fn assert_each_charges_its_card<'a>(
    vault: &Vault,
    stub: &Stub,
    cards: impl Iterator<Item = (&'a String, &'a String)>,
) {
    for (token, number) in cards {
        let body = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"number": "${cardNumber}"}});
        let (status, answer) = vault.post("/proxy/transaction", &vault.keys, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(stub.last().json()["number"], number.as_str());
    }
}

/// Tokens per key version, read from the database.
async fn tokens_by_version(vault: &Vault) -> HashMap<i64, i64> {
    sqlx::query("SELECT key_version, COUNT(*) AS n FROM tokens GROUP BY key_version")
        .fetch_all(&mut vault.database().await)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>("key_version"), r.get::<i64, _>("n")))
        .collect()
}

/// Runs `keys rotate --json`, returning its exit success, its JSON lines and its stderr.
fn rotate(vault: &Vault, extra: &[&str]) -> (bool, Vec<Value>, String) {
    let mut args = vec!["rotate", "--json", "--cache-ttl-ms", CACHE_TTL_MS];
    args.extend_from_slice(extra);
    let out = keys_command(vault, &args).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

/// Proxies `token` with a reference of its own; the stub's record says which card it got.
async fn charge(
    http: &reqwest::Client,
    url: &str,
    api_key: &str,
    stub_url: &str,
    token: &str,
    reference: usize,
) -> u16 {
    let body = json!({"token": token, "proxy_url": stub_url,
        "request_data": {"ref": reference, "number": "${cardNumber}"}});
    let resp = http
        .post(url)
        .header("X-API-Key", api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn a_rotation_under_proxy_load_reseals_every_token_and_no_call_fails() {
    let stub = Stub::start().await;
    let vault = start(&stub).await;
    let cards = tokenize_many(&vault, 400).await;
    let tokens: Arc<Vec<String>> = Arc::new(cards.keys().cloned().collect());
    assert_eq!(tokens_by_version(&vault).await, HashMap::from([(1, 400)]));

    // Proxy calls, back to back on 4 connections, for as long as the rotation runs.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (done, sent, tokens) = (done.clone(), sent.clone(), tokens.clone());
        let (http, url, key, stub_url) = (
            vault.http.clone(),
            vault.url("/proxy/transaction"),
            vault.keys.api_key.clone(),
            stub.url("/charge"),
        );
        load.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut i = worker;
            while !done.load(Ordering::Relaxed) {
                let reference = sent.fetch_add(1, Ordering::Relaxed);
                let token = &tokens[i % tokens.len()];
                let status = charge(&http, &url, &key, &stub_url, token, reference).await;
                if status != 200 {
                    failed.push((reference, status));
                }
                i += 7;
            }
            failed
        }));
    }
    let rotation = {
        let mut command = keys_command(
            &vault,
            &[
                "rotate",
                "--json",
                "--cache-ttl-ms",
                CACHE_TTL_MS,
                "--batch-size",
                "25",
            ],
        );
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let out = rotation.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for worker in load {
        failed.extend(worker.await.unwrap());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failed.is_empty(),
        "proxy calls failed during the rotation: {failed:?}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds = events(&lines);
    assert_eq!(kinds.first(), Some(&"added"), "{stdout}");
    assert!(
        kinds.contains(&"waiting") && kinds.contains(&"activated"),
        "{stdout}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["version"], 2);
    assert_eq!(last["resealed"], 400);
    let progress = lines.iter().rfind(|l| l["event"] == "progress").unwrap();
    assert_eq!(
        (progress["done"].as_u64(), progress["total"].as_u64()),
        (Some(400), Some(400))
    );

    // Every token is sealed with the new key, once.
    assert_eq!(tokens_by_version(&vault).await, HashMap::from([(2, 400)]));
    let shown = status(&vault);
    assert_eq!(shown["sealing_version"], 2);
    assert_eq!(shown["rotation"], Value::Null);

    // Every call during the rotation carried the right card, and every token still does.
    assert!(sent.load(Ordering::Relaxed) > 0);
    for (i, token) in tokens.iter().enumerate() {
        let reference = 1_000_000 + i;
        let status = charge(
            &vault.http,
            &vault.url("/proxy/transaction"),
            &vault.keys.api_key,
            &stub.url("/charge"),
            token,
            reference,
        )
        .await;
        assert_eq!(status, 200);
    }
    let by_reference: HashMap<usize, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, _)| (1_000_000 + i, i))
        .collect();
    let mut checked = 0;
    for request in stub.requests() {
        let body = request.json();
        let reference = body["ref"].as_u64().unwrap() as usize;
        let number = body["number"].as_str().unwrap();
        if let Some(i) = by_reference.get(&reference) {
            assert_eq!(
                number, cards[&tokens[*i]],
                "token {} sent another card",
                tokens[*i]
            );
            checked += 1;
        } else {
            assert!(
                cards.values().any(|c| c == number),
                "a call sent an unknown card"
            );
        }
    }
    assert_eq!(checked, 400);
    // New cards are sealed with the new key.
    vault.token_in(&vault.keys, &card_number(9_999)).await;
    assert_eq!(tokens_by_version(&vault).await.get(&2), Some(&401));
}

#[tokio::test]
async fn a_killed_rotation_resumes_without_losing_or_doubling_a_record() {
    let stub = Stub::start().await;
    let vault = start(&stub).await;
    let cards = tokenize_many(&vault, 1_500).await;

    let mut child = keys_command(
        &vault,
        &[
            "rotate",
            "--json",
            "--cache-ttl-ms",
            CACHE_TTL_MS,
            "--batch-size",
            "1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Killed once the first records are resealed, mid-way.
    let mut moved = 0;
    for _ in 0..2_000 {
        moved = tokens_by_version(&vault)
            .await
            .get(&2)
            .copied()
            .unwrap_or(0);
        if moved > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let split = tokens_by_version(&vault).await;
    assert!(moved > 0, "the rotation never started resealing");
    assert!(
        split.get(&1).copied().unwrap_or(0) > 0,
        "the rotation finished before the kill: {split:?}"
    );
    assert_eq!(split.values().sum::<i64>(), 1_500);
    let shown = status(&vault);
    assert_eq!(shown["rotation"]["target_version"], 2, "{shown}");

    // The killed run's lease does not block the next one (its process is gone), which resumes
    // the same rotation instead of adding a third key.
    let (ok, lines, stderr) = rotate(&vault, &[]);
    assert!(ok, "{stderr}");
    let kinds = events(&lines);
    assert_eq!(kinds.first(), Some(&"resuming"), "{lines:?}");
    assert!(!kinds.contains(&"added"));
    assert_eq!(tokens_by_version(&vault).await, HashMap::from([(2, 1_500)]));
    assert_eq!(versions(&vault), [1, 2]);

    // Every card opens, and opens to itself.
    assert_each_charges_its_card(&vault, &stub, cards.iter().take(50)).await;
}

#[tokio::test]
async fn two_rotations_at_once_are_refused_and_a_stopped_one_resumes() {
    let stub = Stub::start().await;
    let vault = start(&stub).await;
    tokenize_many(&vault, 20).await;

    // The first run waits a long time for instances to load the new key.
    let mut first = keys_command(&vault, &["rotate", "--json", "--cache-ttl-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let added: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(added["event"], "added");

    let (ok, _, stderr) = rotate(&vault, &[]);
    assert!(!ok);
    assert!(stderr.contains("another rotation is running"), "{stderr}");

    // SIGTERM: it stops at once (it was only waiting) and lets go of the lease.
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status_code = first.wait().unwrap();
    assert!(!status_code.success());
    assert!(stderr_mentions(
        &mut first,
        "run the same command again to resume"
    ));

    let (ok, lines, stderr) = rotate(&vault, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(events(&lines).first(), Some(&"resuming"));
    assert_eq!(tokens_by_version(&vault).await, HashMap::from([(2, 20)]));
}

#[tokio::test]
async fn retire_refuses_while_a_record_uses_the_key_then_forgets_it() {
    let stub = Stub::start().await;
    let vault = start(&stub).await;
    let cards = tokenize_many(&vault, 10).await;
    let retire = |version: &str| {
        let out = keys_command(&vault, &["retire", version]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, stderr) = retire("1");
    assert!(!ok);
    assert!(
        stderr.contains("data key version 1 seals new records"),
        "{stderr}"
    );
    let (ok, stderr) = retire("9");
    assert!(!ok);
    assert!(
        stderr.contains("there is no data key version 9"),
        "{stderr}"
    );

    // A record still sealed with version 1 after a rotation (as if a pinned instance wrote it).
    let (ok, _, stderr) = rotate(&vault, &[]);
    assert!(ok, "{stderr}");
    let token = cards.keys().next().unwrap();
    let mut db = vault.database().await;
    let row = sqlx::query("SELECT nonce, ciphertext FROM tokens WHERE id = $1")
        .bind(token)
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (nonce, ciphertext): (Vec<u8>, Vec<u8>) = (row.get("nonce"), row.get("ciphertext"));
    sqlx::query("UPDATE tokens SET key_version = 1, nonce = $1, ciphertext = $2 WHERE id = $3")
        .bind(&nonce[..])
        .bind(&ciphertext[..])
        .bind(token)
        .execute(&mut db)
        .await
        .unwrap();
    let (ok, stderr) = retire("1");
    assert!(!ok);
    assert!(
        stderr.contains("1 records are still sealed with data key version 1"),
        "{stderr}"
    );
    sqlx::query("UPDATE tokens SET key_version = 2 WHERE id = $1")
        .bind(token)
        .execute(&mut db)
        .await
        .unwrap();

    let (ok, stderr) = retire("1");
    assert!(ok, "{stderr}");
    assert_eq!(versions(&vault), [2]);
    // The running instance keeps serving every token.
    assert_each_charges_its_card(&vault, &stub, cards.iter()).await;
    // The audit log has the rotation and the retirement.
    let actions: Vec<String> =
        sqlx::query("SELECT action FROM audit_log WHERE action LIKE 'keys.%' ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("action"))
            .collect();
    assert_eq!(actions, ["keys.rotate", "keys.retire"]);
}

#[tokio::test]
async fn a_processors_client_key_is_resealed_and_still_used() {
    let (stub, cert_pem, key_pem) = Stub::start_mutual_tls().await;
    // No caching: the proxy call after the rotation opens the key as now stored.
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (token, _) = vault.visa().await;
    let dir = vault.dir.path();
    std::fs::write(dir.join("client.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &key_pem).unwrap();
    let out = vault
        .cli()
        .args([
            "project",
            "tls",
            "--data-dir",
            vault.data_dir().to_str().unwrap(),
        ])
        .args(["--project", &vault.keys.project_id, "--host", "localhost"])
        .args(["--client-cert", dir.join("client.pem").to_str().unwrap()])
        .args(["--client-key", dir.join("client.key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = keys_command(&vault, &["rotate", "--json", "--cache-ttl-ms", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: i64 = sqlx::query("SELECT key_version FROM destination_tls")
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap()
        .get("key_version");
    assert_eq!(version, 2);
    let shown = status(&vault);
    let v2 = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap()
        .clone();
    assert_eq!(
        (v2["tokens"].as_u64(), v2["tls_client_keys"].as_u64()),
        (Some(1), Some(1))
    );

    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.count("/charge"), 1);
}
