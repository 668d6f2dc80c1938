//! The vault's own HTTPS: handshake and HTTP/2 by ALPN, certificates reloaded on a file change
//! and on SIGHUP, a bad file at reload keeping the old certificate, a bad file at start refused
//! before the vault says it listens, and a warning for plain HTTP off loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cardvault_testkit::certs::{Authority, PemIdentity};

use crate::harness::*;

/// Certificate files in a directory of the test's own.
struct CertFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn new(identity: &PemIdentity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        };
        files.write(identity);
        files
    }

    /// Replaces both files, each in one step (written aside, then renamed over), as a
    /// certificate renewal tool does.
    fn write(&self, identity: &PemIdentity) {
        for (path, text) in [
            (&self.key, &identity.key_pem),
            (&self.cert, &identity.cert_pem),
        ] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text).unwrap();
            std::fs::rename(&partial, path).unwrap();
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CARDVAULT_TLS_CERT_FILE", self.cert.display().to_string()),
            ("CARDVAULT_TLS_KEY_FILE", self.key.display().to_string()),
        ]
    }
}

async fn start_https(files: &CertFiles) -> Vault {
    let env = files.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let vault = Vault::start_env(&env).await;
    assert!(vault.https, "the vault did not announce an https:// URL");
    vault
}

/// A client that trusts only `authority`, and opens a new connection for every request (so each
/// request sees the certificate served at that moment).
fn client_trusting(authority: &Authority) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(authority.pem().as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .https_only(true)
        .build()
        .unwrap()
}

async fn healthz_over(client: &reqwest::Client, vault: &Vault) -> Result<reqwest::Version, String> {
    let response = client
        .get(vault.url("/healthz"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(response.status(), 200);
    Ok(response.version())
}

async fn accepted_by(authority: &Authority, vault: &Vault) -> bool {
    healthz_over(&client_trusting(authority), vault)
        .await
        .is_ok()
}

/// Waits up to 10 s for the certificate from `authority` to be served.
async fn eventually_served(authority: &Authority, vault: &Vault) -> bool {
    for _ in 0..100 {
        if accepted_by(authority, vault).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn https_serves_the_api_over_http2_and_http1() {
    let authority = Authority::new("cardvault test CA");
    let files = CertFiles::new(&authority.server_identity_pem());
    let vault = start_https(&files).await;

    let version = healthz_over(&client_trusting(&authority), &vault).await;
    assert_eq!(version, Ok(reqwest::Version::HTTP_2), "h2 by ALPN");
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(authority.pem().as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    assert_eq!(
        healthz_over(&http1, &vault).await,
        Ok(reqwest::Version::HTTP_11)
    );

    // The API itself, not only a probe: a card is tokenized over HTTPS.
    let response = client_trusting(&authority)
        .post(vault.url("/tokenize"))
        .header("X-API-Key", &vault.keys.api_key)
        .header("X-Pub-Key", &vault.keys.publishable_key)
        .json(&serde_json::json!({"type": "card", "data": {
            "cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2030"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", vault.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() != 200),
        "plain HTTP was served on the HTTPS port"
    );
    // A client that trusts another authority is refused by its own verification.
    assert!(!accepted_by(&Authority::new("another CA"), &vault).await);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let first = Authority::new("first CA");
    let files = CertFiles::new(&first.server_identity_pem());
    let vault = start_https(&files).await;
    assert!(accepted_by(&first, &vault).await);

    let renewed = Authority::new("renewed CA");
    files.write(&renewed.server_identity_pem());
    assert!(
        eventually_served(&renewed, &vault).await,
        "the new certificate was not picked up; logs:\n{}",
        vault.logs()
    );
    assert!(
        !accepted_by(&first, &vault).await,
        "the old one is still served"
    );
    assert!(vault.logs().contains("TLS certificate reloaded"));
}

#[tokio::test]
async fn sighup_reloads_even_when_the_files_look_unchanged() {
    let first = Authority::new("first CA");
    let original = first.server_identity_pem();
    let files = CertFiles::new(&original);
    let vault = start_https(&files).await;
    assert!(accepted_by(&first, &vault).await);

    // New contents of the same lengths, written in place and given back their old modification
    // times: nothing the file watch looks at changes, so only the signal can reload them.
    let other = Authority::new("other CA");
    let same_size = (0..200)
        .map(|_| other.server_identity_pem())
        .find(|id| {
            id.cert_pem.len() == original.cert_pem.len()
                && id.key_pem.len() == original.key_pem.len()
        })
        .expect("a certificate of the same length");
    for (path, text) in [
        (&files.key, &same_size.key_pem),
        (&files.cert, &same_size.cert_pem),
    ] {
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        std::io::Write::write_all(&mut &file, text.as_bytes()).unwrap();
        file.set_modified(modified).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        accepted_by(&first, &vault).await,
        "reloaded without a signal: the test cannot tell SIGHUP's effect apart"
    );

    let status = Command::new("kill")
        .args(["-HUP", &vault.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        eventually_served(&other, &vault).await,
        "SIGHUP did not reload; logs:\n{}",
        vault.logs()
    );
    assert!(vault.logs().contains("SIGHUP"));
}

#[tokio::test]
async fn a_bad_file_at_reload_keeps_the_old_certificate_and_says_why() {
    let authority = Authority::new("cardvault test CA");
    let files = CertFiles::new(&authority.server_identity_pem());
    let vault = start_https(&files).await;

    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    let said = eventually(Duration::from_secs(10), || {
        vault.logs().contains("TLS certificate not reloaded")
    })
    .await;
    assert!(said, "no warning; logs:\n{}", vault.logs());
    assert!(vault.logs().contains(&files.cert.display().to_string()));
    assert!(
        accepted_by(&authority, &vault).await,
        "the old certificate is no longer served"
    );

    // A key that belongs to another certificate is refused the same way.
    let stranger = authority.server_identity_pem();
    std::fs::write(&files.cert, &authority.server_identity_pem().cert_pem).unwrap();
    std::fs::write(&files.key, &stranger.key_pem).unwrap();
    let said = eventually(Duration::from_secs(10), || {
        vault.logs().contains("does not belong to the certificate")
    })
    .await;
    assert!(said, "no warning; logs:\n{}", vault.logs());
    assert!(accepted_by(&authority, &vault).await);
}

/// Runs `serve` with these certificate settings; it must exit non-zero before saying it
/// listens. Returns its stderr.
fn refused_start(cert: &Path, key: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--init", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("CARDVAULT_TLS_CERT_FILE", cert)
        .env("CARDVAULT_TLS_KEY_FILE", key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it started; stderr: {stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    stderr
}

#[test]
fn a_bad_certificate_setting_at_start_is_refused_with_the_file_and_the_reason() {
    let authority = Authority::new("cardvault test CA");
    let files = CertFiles::new(&authority.server_identity_pem());
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.pem");
    let stderr = refused_start(&missing, &files.key);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let stderr = refused_start(&garbage, &files.key);
    assert!(
        stderr.contains(&garbage.display().to_string()) && stderr.contains("no certificate"),
        "{stderr}"
    );

    let stranger = dir.path().join("stranger.key");
    std::fs::write(&stranger, cardvault_testkit::certs::unmatched_key_pem()).unwrap();
    let stderr = refused_start(&files.cert, &stranger);
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );

    // One of the pair alone is a configuration error.
    let out = Command::new(bin())
        .args(["serve", "--init", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("CARDVAULT_TLS_CERT_FILE", &files.cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls_cert_file and tls_key_file go together"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plain_http_off_loopback_is_warned_about() {
    let mut vault = Vault::start_env(&[]).await;
    // Served one request, so its start-up lines are surely written before they are read.
    let health = vault.http.get(vault.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        !vault
            .logs()
            .contains("plain HTTP on a non-loopback address")
    );
    vault.terminate();

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--init", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "0.0.0.0:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(stderr_mentions(
        &mut child,
        "serving plain HTTP on a non-loopback address"
    ));
}
