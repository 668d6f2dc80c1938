//! Destination allowlists (per project and server-wide) and redirects.

use serde_json::{Value, json};

use crate::harness::*;

fn charge(token: &str, url: &str) -> Value {
    json!({"token": token, "proxy_url": url, "request_data": {"n": "${cardNumber}"}})
}

fn allow(vault: &Vault, verb: &str, project: &str, rules: &[&str]) -> String {
    let dir = vault.data_dir();
    let mut args = vec![
        "project",
        verb,
        "--data-dir",
        dir.to_str().unwrap(),
        "--project",
        project,
    ];
    args.extend_from_slice(rules);
    let out = vault.cli().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_project_allowlist_permits_only_its_destinations() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (token, _) = vault.visa().await;
    let port = stub.addr.port();
    // No allowlist yet: any destination the server policy permits.
    assert_eq!(
        vault.proxy(&charge(&token, &stub.url("/echo"))).await.0,
        200
    );

    let listed = allow(
        &vault,
        "allow",
        &vault.keys.project_id,
        &["localhost/charge", "*.stripe.com"],
    );
    assert!(
        listed.contains("localhost/charge") && listed.contains("*.stripe.com"),
        "{listed}"
    );
    assert_eq!(
        vault.proxy(&charge(&token, &stub.url("/charge"))).await.0,
        200
    );
    assert_eq!(
        vault
            .proxy(&charge(&token, &stub.url("/charge/ch_1/capture")))
            .await
            .0,
        200
    );
    for refused in [
        stub.url("/echo"),
        stub.url("/chargex"),
        format!("https://localhost.evil.test:{port}/charge"),
        format!("https://evil-localhost:{port}/charge"),
        format!("https://127.0.0.1:{port}/charge"),
        format!("https://stripe.com:{port}/charge"),
    ] {
        let (status, body) = vault.proxy(&charge(&token, &refused)).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some("Invalid proxy URL")),
            "{refused}"
        );
    }
    // Another project is not bound by this project's list.
    let other = vault.create_project(&[]);
    let other_token = vault.token_in(&other, VISA).await;
    let (status, _) = vault
        .post(
            "/proxy/transaction",
            &other,
            &charge(&other_token, &stub.url("/echo")),
        )
        .await;
    assert_eq!(status, 200);
    // Removing the rules restores the default.
    allow(
        &vault,
        "disallow",
        &vault.keys.project_id,
        &["localhost/charge", "*.stripe.com"],
    );
    assert_eq!(
        vault.proxy(&charge(&token, &stub.url("/echo"))).await.0,
        200
    );
    assert_eq!(
        stub.count("/echo"),
        3,
        "only the permitted calls reached the stub"
    );
    // Bad patterns are refused by the CLI.
    let out = vault
        .cli()
        .args([
            "project",
            "allow",
            "--data-dir",
            vault.data_dir().to_str().unwrap(),
            "--project",
            &vault.keys.project_id,
            "*",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_server_wide_allowlist_and_the_required_mode() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(
        &stub,
        &[(
            "CARDVAULT_DESTINATION_ALLOWLIST",
            "api.stripe.com,localhost/charge",
        )],
    )
    .await;
    let (token, _) = vault.visa().await;
    assert_eq!(
        vault.proxy(&charge(&token, &stub.url("/charge"))).await.0,
        200
    );
    let (status, body) = vault.proxy(&charge(&token, &stub.url("/echo"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_proxy_url"))
    );

    let strict = Vault::start_with(
        &stub,
        &[
            ("CARDVAULT_REQUIRE_DESTINATION_ALLOWLIST", "true"),
            ("CARDVAULT_CACHE_TTL_MS", "0"),
        ],
    )
    .await;
    let (token, _) = strict.visa().await;
    let (status, _) = strict.proxy(&charge(&token, &stub.url("/charge"))).await;
    assert_eq!(status, 400, "no allowlist at all: nothing is permitted");
    allow(&strict, "allow", &strict.keys.project_id, &["localhost"]);
    assert_eq!(
        strict.proxy(&charge(&token, &stub.url("/charge"))).await.0,
        200
    );
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_returned_not_followed() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (token, _) = vault.visa().await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let location = format!(
        "http://127.0.0.1:{}/admin",
        target.local_addr().unwrap().port()
    );
    let url = stub.url(&format!(
        "/redirect?to={}",
        form_urlencoded::byte_serialize(location.as_bytes()).collect::<String>()
    ));
    let (status, body) = vault.proxy(&charge(&token, &url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["proxy_response"]["status_code"], 302);
    assert_eq!(
        body["proxy_response"]["headers"]["location"],
        location.as_str()
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        target.accept().is_err(),
        "the redirect target was contacted"
    );
}

#[tokio::test]
async fn mutual_tls_uses_the_projects_client_certificate() {
    let (stub, cert_pem, key_pem) = Stub::start_mutual_tls().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (token, _) = vault.visa().await;
    // Without the project's certificate the processor refuses the handshake. (With TLS 1.3 the
    // client learns it only after writing its request, so the vault cannot promise it was not
    // sent; the processor never processed it.)
    let (status, body) = vault.proxy(&charge(&token, &stub.url("/charge"))).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(stub.count("/charge"), 0);

    let dir = vault.dir.path();
    std::fs::write(dir.join("client.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &key_pem).unwrap();
    let data_dir = vault.data_dir();
    let set = |extra: &[&str]| {
        let mut args = vec![
            "project",
            "tls",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--project",
            &vault.keys.project_id,
            "--host",
            "localhost",
        ];
        args.extend_from_slice(extra);
        vault.cli().args(&args).output().unwrap()
    };
    let out = set(&[
        "--client-cert",
        dir.join("client.pem").to_str().unwrap(),
        "--client-key",
        dir.join("client.key").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key is stored sealed, never in the clear.
    let key_body = key_pem.lines().nth(1).unwrap();
    let stored: Vec<u8> = {
        use sqlx::Row;
        let row = sqlx::query("SELECT key_ciphertext FROM destination_tls")
            .fetch_one(&mut vault.database().await)
            .await
            .unwrap();
        row.get("key_ciphertext")
    };
    assert!(!stored.is_empty());
    assert!(
        !String::from_utf8_lossy(&stored).contains(key_body),
        "the client key is stored in the clear"
    );
    if !vault.backend.is_scaled() {
        let db = std::fs::read(data_dir.join("cardvault.db")).unwrap();
        let wal = std::fs::read(data_dir.join("cardvault.db-wal")).unwrap_or_default();
        for bytes in [&db, &wal] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(key_body),
                "the client key is stored in the clear"
            );
        }
    }

    let (status, body) = vault.proxy(&charge(&token, &stub.url("/charge"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.count("/charge"), 1);

    // Another project has no certificate for that host.
    let other = vault.create_project(&[]);
    let other_token = vault.token_in(&other, VISA).await;
    let (status, _) = vault
        .post(
            "/proxy/transaction",
            &other,
            &charge(&other_token, &stub.url("/charge")),
        )
        .await;
    assert_eq!(status, 502);

    // A key that does not match the certificate is refused at configuration time.
    let wrong_key = cardvault_testkit::certs::unmatched_key_pem();
    std::fs::write(dir.join("wrong.key"), wrong_key).unwrap();
    let out = set(&[
        "--client-cert",
        dir.join("client.pem").to_str().unwrap(),
        "--client-key",
        dir.join("wrong.key").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    // Removing the settings: refused again.
    assert!(set(&["--remove"]).status.success());
    let (status, _) = vault.proxy(&charge(&token, &stub.url("/charge"))).await;
    assert_eq!(status, 502);
}
