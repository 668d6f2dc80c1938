//! Where the master key lives: a key file, or a PKCS#11 token (SoftHSM2 here), and
//! `cardvault keys rewrap` moving it between them.

use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::Row;

use crate::harness::*;
use crate::softhsm::{PIN, SUITE_KEY_LABEL, SoftHsm};

/// Runs `cardvault keys ARGS --data-dir …` with the vault's backend and `env`; returns whether it
/// succeeded, its stdout and its stderr.
fn keys(vault: &Vault, env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = vault
        .cli()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("keys")
        .args(args)
        .args(["--data-dir", vault.data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The processor receives `number` when `token` is proxied.
async fn assert_charges(vault: &Vault, stub: &Stub, token: &str, number: &str) {
    let body = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"number": "${cardNumber}"}});
    let (status, answer) = vault.proxy(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stub.last().json()["number"], number);
}

/// Every token's sealed bytes, by id.
async fn sealed_tokens(vault: &Vault) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut conn = vault.database().await;
    sqlx::query("SELECT id, nonce, ciphertext FROM tokens ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get::<String, _>(0),
                row.get::<Vec<u8>, _>(1),
                row.get::<Vec<u8>, _>(2),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_vault_whose_master_key_never_leaves_a_pkcs11_token() {
    let stub = Stub::start().await;
    let mut backend = Backend::from_env();
    backend.hsm = Some(SoftHsm::new());
    let mut vault = Vault::start_on(Arc::new(backend), &stub_env(&stub, &[]));
    let hsm = vault.backend.hsm.as_ref().unwrap();

    // `init` made the key in the token: secret, not extractable, for encryption only. No key
    // file was written.
    let described = hsm.describe_keys(SUITE_KEY_LABEL);
    assert_eq!(described.len(), 1, "{described:?}");
    assert!(
        described[0].contains("Access:     sensitive, always sensitive, never extractable"),
        "{}",
        described[0]
    );
    assert!(
        described[0].contains("Usage:      encrypt, decrypt\n"),
        "{}",
        described[0]
    );
    assert!(!vault.data_dir().join("master.key").exists());

    let (token, _) = vault.visa().await;
    assert_charges(&vault, &stub, &token, VISA).await;
    vault.restart();
    assert_charges(&vault, &stub, &token, VISA).await;

    // Wrong settings stop a command before it touches anything, and say which one.
    let (ok, _, stderr) = keys(
        &vault,
        &env(&[("CARDVAULT_PKCS11_PIN", "0000")]),
        &["status"],
    );
    assert!(
        !ok && stderr.contains("log in: Login returned PinIncorrect"),
        "{stderr}"
    );
    assert!(!stderr.contains(PIN), "{stderr}");
    let (ok, _, stderr) = keys(
        &vault,
        &env(&[("CARDVAULT_PKCS11_KEY_LABEL", "no-such-key")]),
        &["status"],
    );
    assert!(
        !ok && stderr.contains("holds no key labelled `no-such-key`"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(
        &vault,
        &env(&[
            ("CARDVAULT_KEY_PROVIDER", "file"),
            ("CARDVAULT_MASTER_KEY", &"11".repeat(32)),
        ]),
        &["status"],
    );
    assert!(
        !ok && stderr.contains("does not match this vault"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(
        &vault,
        &env(&[("CARDVAULT_KEY_PROVIDER", "vault")]),
        &["status"],
    );
    assert!(
        !ok && stderr.contains("must be `file` or `pkcs11`"),
        "{stderr}"
    );

    // A data-key rotation wraps its new key in the token too.
    let (ok, _, stderr) = keys(&vault, &[], &["rotate", "--json", "--cache-ttl-ms", "0"]);
    assert!(ok, "{stderr}");
    vault.restart();
    assert_charges(&vault, &stub, &token, VISA).await;
}

#[tokio::test]
async fn rewrap_moves_the_master_key_into_a_token_and_out_again_touching_no_record() {
    let stub = Stub::start().await;
    // A key file first, whatever the suite's provider.
    let mut backend = Backend::from_env();
    backend.hsm = None;
    let mut vault = Vault::start_on(
        Arc::new(backend),
        &stub_env(&stub, &[("CARDVAULT_CACHE_TTL_MS", "200")]),
    );
    let dedup = vault.create_project(&["--deduplicate"]);
    let repeat = vault.token_in(&dedup, VISA).await;
    let (token, _) = vault.visa().await;
    let sealed_before = sealed_tokens(&vault).await;

    let hsm = SoftHsm::new();
    let (ok, stdout, stderr) = keys(
        &vault,
        &hsm.token_env(),
        &[
            "rewrap",
            "--to",
            "pkcs11",
            "--new-pkcs11-key-label",
            "master-2",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let done: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(done["data_keys"], 1, "{done}");
    assert_eq!(done["to"], "pkcs11", "{done}");
    assert_eq!(hsm.describe_keys("master-2").len(), 1);
    // Only the keys moved: every record is byte for byte as it was.
    assert_eq!(sealed_tokens(&vault).await, sealed_before);
    // The running instance keeps serving with the keys it holds.
    assert_charges(&vault, &stub, &token, VISA).await;

    // The key file opens nothing any more; the token's key does.
    let (ok, _, stderr) = keys(&vault, &[], &["status"]);
    assert!(
        !ok && stderr.contains("does not match this vault"),
        "{stderr}"
    );
    let in_token = hsm.master_env("master-2");
    vault.set_env(&in_token);
    vault.restart();
    assert_charges(&vault, &stub, &token, VISA).await;
    // The root secret moved with the keys: fingerprints (and API key hashes, which every call
    // here authenticates with) are what they were.
    assert_eq!(vault.token_in(&dedup, VISA).await, repeat);

    // Rotating the data key under the token's key, then out to a new key file.
    let (ok, _, stderr) = keys(
        &vault,
        &in_token,
        &["rotate", "--json", "--cache-ttl-ms", "200"],
    );
    assert!(ok, "{stderr}");
    let new_file = vault.data_dir().join("master.key.new");
    let (ok, stdout, stderr) = keys(
        &vault,
        &in_token,
        &[
            "rewrap",
            "--to",
            "file",
            "--new-master-key-file",
            new_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 data keys"), "{stdout}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::rename(&new_file, vault.data_dir().join("master.key")).unwrap();
    let (ok, _, stderr) = keys(&vault, &in_token, &["status"]);
    assert!(
        !ok && stderr.contains("does not match this vault"),
        "{stderr}"
    );
    vault.set_env(&env(&[("CARDVAULT_KEY_PROVIDER", "file")]));
    vault.restart();
    assert_charges(&vault, &stub, &token, VISA).await;
    assert_eq!(vault.token_in(&dedup, VISA).await, repeat);
    // Dropping the vault checks the audit log's chain: its key came through both moves.
}

#[tokio::test]
async fn rewrap_with_the_wrong_current_key_changes_nothing() {
    let stub = Stub::start().await;
    let mut backend = Backend::from_env();
    backend.hsm = None;
    let vault = Vault::start_on(Arc::new(backend), &stub_env(&stub, &[]));
    let (token, _) = vault.visa().await;
    let key_file = vault.dir.path().join("other.key");
    let (ok, _, stderr) = keys(
        &vault,
        &env(&[("CARDVAULT_MASTER_KEY", &"22".repeat(32))]),
        &[
            "rewrap",
            "--to",
            "file",
            "--new-master-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && stderr.contains("does not match this vault"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(&vault, &[], &["status"]);
    assert!(ok, "{stderr}");
    assert_charges(&vault, &stub, &token, VISA).await;
}
