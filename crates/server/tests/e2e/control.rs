//! Control over what a proxy call does: dry runs (every check, nothing sent, the masked request
//! shown) and a token's own `allowed_destinations` (sealed with the card, on top of the
//! server's and the project's lists).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use cardvault_server::config::{Redacted, Settings};
use cardvault_server::destinations::NameLookup;
use serde_json::{Value, json};

use crate::harness::*;

const MASKED_VISA: &str = "424242******4242";

/// The scrubber's own masking of what the processor received: a dry run must show exactly this.
fn masked_echo(received: &[u8]) -> String {
    let text = String::from_utf8(received.to_vec()).unwrap();
    let echoes = [
        Echo {
            secret: VISA,
            mask: MASKED_VISA.into(),
            kind: EchoKind::Number,
        },
        Echo {
            secret: CVC,
            mask: "***".into(),
            kind: EchoKind::Code,
        },
    ];
    scrub_text(&text, &echoes).unwrap_or(text)
}

async fn raw(vault: &Vault, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let req = vault
        .http
        .post(vault.url("/proxy/transaction"))
        .header("X-API-Key", &vault.keys.api_key)
        .body(body.to_owned());
    send_with(req, headers).await
}

async fn get(vault: &Vault, path: &str, key: &str) -> (u16, Value) {
    send_with(
        vault.http.get(vault.url(path)).header("X-API-Key", key),
        &[],
    )
    .await
}

/// The proxy records of the vault's audit log, newest last.
async fn proxy_records(vault: &Vault) -> Vec<Value> {
    let auditor = vault.create_app("audit");
    let (status, body) = get(vault, "/audit-logs?action=proxy&limit=1000", &auditor).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

// ----- dry runs ----------------------------------------------------------------------------

#[tokio::test]
async fn a_dry_run_sends_nothing_and_leaves_the_cvc_session_usable() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let mut call = json!({
        "token": token, "cvc_session_id": session, "proxy_url": stub.url("/echo?order=A-1"),
        "http_headers": {"Authorization": "Bearer sk_test_1", "Stripe-Key": "sk_live_9", "X-Merchant": "m-1"},
        "request_data": {"amount": 2000, "source": {"number": "${cardNumber}", "cvc": "${cvv}", "exp": "${expirationMonth}/${expirationYear}", "name": "${firstName}"}},
        "dry_run": true,
    });
    let (status, body) = vault.proxy(&call).await;
    assert_eq!(status, 200, "{body}");
    assert!(stub.requests().is_empty(), "the processor saw a dry run");
    let expected_body = format!(
        r#"{{"amount":2000,"source":{{"number":"{MASKED_VISA}","cvc":"***","exp":"07/2031","name":"{HOLDER_FIRST}"}}}}"#
    );
    assert_eq!(
        body,
        json!({
            "success": true,
            "dry_run": true,
            "request": {
                "method": "POST",
                "url": stub.url("/echo?order=A-1"),
                "headers": {
                    "authorization": "***",
                    "stripe-key": "***",
                    "x-merchant": "m-1",
                    "content-type": "application/json",
                },
                "body": expected_body,
            }
        })
    );

    // The same call for real, with the same CVC session: it is still there.
    call["dry_run"] = json!(false);
    let (status, real) = vault.proxy(&call).await;
    assert_eq!(status, 200, "{real}");
    let received = stub.last();
    assert_eq!(received.json()["source"]["cvc"], CVC);
    assert_eq!(body["request"]["body"], masked_echo(&received.body));
    // ... and used up now.
    let (status, _) = vault.proxy(&call).await;
    assert_eq!(status, 404);

    let records = proxy_records(&vault).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["outcome"], "dry_run");
    assert_eq!(records[0]["token"], token);
    assert_eq!(records[0]["detail"]["dry_run"], true);
    assert_eq!(records[0]["detail"]["request_sent"], false);
    assert_eq!(records[0]["detail"]["host"], "localhost");
    assert!(records[0]["detail"].get("upstream_status").is_none());
    assert_eq!(records[1]["outcome"], "ok");
    assert!(records[1]["detail"].get("dry_run").is_none());
}

#[tokio::test]
async fn a_dry_run_shows_form_and_xml_bodies_byte_for_byte_masked() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;

    // JSON mode, encoded as a Stripe-style form.
    let (token, session) = vault.visa().await;
    let mut call = json!({
        "token": token, "cvc_session_id": session, "proxy_url": stub.url("/echo"),
        "http_headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "request_data": {"amount": 2000, "card": {"number": "${cardNumber}", "cvc": "${cvv}", "exp_year": "${expirationYear2}"}, "note": "a&b"},
        "dry_run": true,
    });
    let (status, dry) = vault.proxy(&call).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        dry["request"]["body"],
        format!(
            "amount=2000&card[number]={MASKED_VISA}&card[cvc]=***&card[exp_year]=31&note=a%26b"
        )
    );
    assert_eq!(
        dry["request"]["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    call.as_object_mut().unwrap().remove("dry_run");
    let (status, _) = vault.proxy(&call).await;
    assert_eq!(status, 200);
    assert_eq!(dry["request"]["body"], masked_echo(&stub.last().body));

    // Raw mode, XML, with `X-Dry-Run`; the vault's own headers are not shown (nor forwarded).
    let (token, session) = vault.visa().await;
    let xml = r#"<?xml version="1.0"?><Payment><Card number="${cardNumber}"><Cvc>${cvv}</Cvc><Holder>${firstName}</Holder></Card></Payment>"#;
    let url = stub.url("/echo");
    let headers = [
        ("Content-Type", "application/xml"),
        ("X-Token", token.as_str()),
        ("X-Proxy-URL", url.as_str()),
        ("X-CVC-Session-ID", session.as_str()),
        ("X-Proxy-Method", "PUT"),
        ("X-Auth-Token", "t0k3n"),
        ("X-Client-Secret", "s3cr3t"),
        ("X-Merchant", "m-1"),
    ];
    let (status, dry) = raw(
        &vault,
        &[&headers[..], &[("X-Dry-Run", "TRUE")]].concat(),
        xml,
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        stub.count("/echo"),
        1,
        "only the real form call reached the stub"
    );
    let shown = &dry["request"];
    assert_eq!(
        (shown["method"].as_str(), shown["url"].as_str()),
        (Some("PUT"), Some(url.as_str()))
    );
    assert_eq!(
        shown["body"],
        format!(
            r#"<?xml version="1.0"?><Payment><Card number="{MASKED_VISA}"><Cvc>***</Cvc><Holder>{HOLDER_FIRST}</Holder></Card></Payment>"#
        )
    );
    let shown_headers = &shown["headers"];
    assert_eq!(shown_headers["content-type"], "application/xml");
    assert_eq!(shown_headers["x-auth-token"], "***");
    assert_eq!(shown_headers["x-client-secret"], "***");
    assert_eq!(shown_headers["x-merchant"], "m-1");
    for own in [
        "x-api-key",
        "x-token",
        "x-proxy-url",
        "x-cvc-session-id",
        "x-proxy-method",
        "x-dry-run",
        "host",
        "content-length",
    ] {
        assert!(
            shown_headers.get(own).is_none(),
            "{own} shown: {shown_headers}"
        );
    }
    let (status, _) = raw(
        &vault,
        &[&headers[..], &[("X-Dry-Run", "false")]].concat(),
        xml,
    )
    .await;
    assert_eq!(status, 200);
    let received = stub.last();
    assert_eq!(received.method, "PUT");
    assert!(received.header("x-dry-run").is_none());
    assert_eq!(dry["request"]["body"], masked_echo(&received.body));
}

#[tokio::test]
async fn a_dry_run_is_refused_wherever_a_real_call_would_be() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let call = |url: String, token: &str, session: &str| {
        json!({"token": token, "cvc_session_id": session, "proxy_url": url,
            "request_data": {"n": "${cardNumber}", "c": "${cvv}"}, "dry_run": true})
    };
    let refusals = [
        (
            call("http://localhost/x".into(), &token, &session),
            400,
            "Invalid proxy URL",
        ),
        (
            call(stub.url("/charge"), "tok_0000", &session),
            404,
            "Token not found",
        ),
        (
            call(
                stub.url("/charge"),
                &token,
                "00000000-0000-4000-8000-000000000000",
            ),
            404,
            "CVC session expired or not found",
        ),
        (
            json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${routingNumber}"}, "dry_run": true}),
            400,
            "Invalid value for request_data",
        ),
        (
            json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {}, "dry_run": "yes"}),
            400,
            "Invalid value for dry_run",
        ),
    ];
    for (body, status, message) in refusals {
        let (got, answer) = vault.proxy(&body).await;
        assert_eq!(
            (got, answer["message"].as_str()),
            (status, Some(message)),
            "{body}"
        );
    }
    let (status, answer) = raw(
        &vault,
        &[
            ("Content-Type", "application/xml"),
            ("X-Token", &token),
            ("X-Proxy-URL", &stub.url("/charge")),
            ("X-Dry-Run", "maybe"),
        ],
        "<a/>",
    )
    .await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Invalid value for dry_run"))
    );
    assert!(stub.requests().is_empty());
    // The session survived every refused dry run.
    let (status, body) = vault
        .proxy(&json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": {"c": "${cvv}"}}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A hostile resolver: whatever the name, the answer is a private address.
struct EverythingIsPrivate(AtomicUsize);

#[async_trait]
impl NameLookup for EverythingIsPrivate {
    async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))])
    }
}

#[tokio::test]
async fn a_dry_run_resolves_the_destination_and_refuses_a_private_address() {
    // The secure defaults, on the suite's backend, with a resolver that answers 10.0.0.5. The
    // server runs in this process, whose environment names no PKCS#11 token: a key file.
    let mut backend = Backend::from_env();
    backend.hsm = None;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let keys =
        cardvault_testkit::cardvault::run_json(Command::new(bin()).envs(backend.env()).args([
            "init",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--json",
        ]));
    let settings = Settings {
        data_dir,
        database_url: backend.database_url.clone().map(Redacted::new),
        redis_url: backend.redis_url.clone().map(Redacted::new),
        redis_key_prefix: backend.redis_prefix.clone(),
        ..Settings::default()
    };
    let lookup = Arc::new(EverythingIsPrivate(AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = cardvault_server::serve_with_lookup(
        listener,
        settings,
        lookup.clone(),
        |_| {},
        async move {
            let _ = stopped.await;
        },
    );
    let server = tokio::spawn(server);

    let http = reqwest::Client::new();
    let api_key = keys["api_key"].as_str().unwrap();
    let tokenized: Value = http
        .post(format!("http://{addr}/tokenize"))
        .header("X-API-Key", api_key)
        .header("X-Pub-Key", keys["publishable_key"].as_str().unwrap())
        .json(&json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .post(format!("http://{addr}/proxy/transaction"))
        .header("X-API-Key", api_key)
        .json(&json!({"token": tokenized["token"], "proxy_url": "https://api.processor-example.com/v1/charges",
            "request_data": {"n": "${cardNumber}"}, "dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Invalid proxy URL");
    assert_eq!(body["detail"], "the host resolves to a non-public address");
    assert!(
        lookup.0.load(Ordering::SeqCst) >= 1,
        "the name was resolved"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

// ----- a token's own allowed destinations --------------------------------------------------

/// Tokenizes a Visa (with a CVC) in the default project with `allowed_destinations`.
async fn ruled_visa(vault: &Vault, allowed: Value) -> (u16, Value) {
    let card = json!({"type": "card", "allowed_destinations": allowed,
        "data": {"cardNumber": VISA, "expirationMonth": "7", "expirationYear": "2031", "cvv": CVC}});
    vault.post("/tokenize", &vault.keys, &card).await
}

async fn charge(vault: &Vault, token: &str, url: &str) -> (u16, Value) {
    vault
        .proxy(&json!({"token": token, "proxy_url": url, "request_data": {"n": "${cardNumber}"}}))
        .await
}

const NOT_IN_TOKEN_RULE: &str = "the destination is not in the token's allowed_destinations";

#[tokio::test]
async fn a_token_goes_only_where_its_own_rule_allows() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (status, body) = ruled_visa(&vault, json!(["LOCALHOST/charge/", "*.adyen.com/pal"])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["allowed_destinations"],
        json!(["localhost/charge", "*.adyen.com/pal"])
    );
    let token = body["token"].as_str().unwrap().to_owned();

    let (status, answer) = charge(&vault, &token, &stub.url("/charge")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = charge(&vault, &token, &stub.url("/charge/refund")).await;
    assert_eq!(status, 200, "{answer}");
    for refused in [stub.url("/echo"), stub.url("/chargeback")] {
        let (status, answer) = charge(&vault, &token, &refused).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["message"], "Invalid proxy URL");
        assert_eq!(answer["code"], "invalid_proxy_url");
        assert_eq!(answer["detail"], NOT_IN_TOKEN_RULE);
    }
    // A dry run is refused the same way.
    let (status, answer) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}, "dry_run": true}))
        .await;
    assert_eq!(
        (status, answer["detail"].as_str()),
        (400, Some(NOT_IN_TOKEN_RULE))
    );
    assert_eq!(stub.count("/echo"), 0);
    assert_eq!(stub.count("/charge"), 2);

    // Shown by the token's metadata; a token without a rule shows none.
    let (status, meta) = get(&vault, &format!("/tokens/{token}"), &vault.keys.api_key).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(
        meta["data"]["allowed_destinations"],
        json!(["localhost/charge", "*.adyen.com/pal"])
    );
    let (free, _) = vault.visa().await;
    let (_, meta) = get(&vault, &format!("/tokens/{free}"), &vault.keys.api_key).await;
    assert!(meta["data"].get("allowed_destinations").is_none(), "{meta}");
    let (status, _) = charge(&vault, &free, &stub.url("/echo")).await;
    assert_eq!(status, 200);

    // Refusals are audited with the token.
    let records = proxy_records(&vault).await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "invalid_proxy_url")
        .collect();
    assert_eq!(refused.len(), 3, "{records:?}");
    assert!(refused.iter().all(|r| r["token"] == token.as_str()));

    // Bank tokens and test tokens carry rules too.
    let bank = json!({"type": "bank", "allowed_destinations": ["api.stripe.com"],
        "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000"}});
    let (status, banked) = vault.post("/tokenize", &vault.keys, &bank).await;
    assert_eq!(status, 201, "{banked}");
    assert_eq!(banked["allowed_destinations"], json!(["api.stripe.com"]));
    let (status, answer) = vault
        .proxy(&json!({"token": banked["token"], "proxy_url": stub.url("/charge"), "request_data": {"a": "${accountNumber}"}}))
        .await;
    assert_eq!(
        (status, answer["detail"].as_str()),
        (400, Some(NOT_IN_TOKEN_RULE))
    );
    let test_card = json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2031", "cvc": CVC, "allowed_destinations": ["localhost/echo"]});
    let (status, tested) = vault.post("/test-tokens", &vault.keys, &test_card).await;
    assert_eq!(status, 201, "{tested}");
    assert_eq!(tested["allowed_destinations"], json!(["localhost/echo"]));
    let test_token = tested["token"].as_str().unwrap();
    assert_eq!(charge(&vault, test_token, &stub.url("/echo")).await.0, 200);
    assert_eq!(
        charge(&vault, test_token, &stub.url("/charge")).await.0,
        400
    );
}

#[tokio::test]
async fn a_token_rule_narrows_the_project_list_and_never_widens_it() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let out = vault
        .cli()
        .args([
            "project",
            "allow",
            "--data-dir",
            vault.data_dir().to_str().unwrap(),
        ])
        .args(["--project", &vault.keys.project_id, "localhost/charge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = ruled_visa(&vault, json!(["localhost"])).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(charge(&vault, token, &stub.url("/charge")).await.0, 200);
    let (status, answer) = charge(&vault, token, &stub.url("/echo")).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["detail"],
        "the host is not in the project's allowlist"
    );
    assert_eq!(stub.count("/echo"), 0);
}

#[tokio::test]
async fn malformed_rules_are_refused_and_nothing_is_stored() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let before = vault.token_count().await;
    let not_a_list = "allowed_destinations must be a list of destination patterns (strings)";
    let bad_pattern = "each allowed destination must be HOST or *.DOMAIN, optionally followed by /PATH (no scheme or port)";
    let too_many: Vec<String> = (0..33).map(|n| format!("h{n}.example.com")).collect();
    for (allowed, detail) in [
        (json!("api.stripe.com"), not_a_list),
        (json!({"host": "api.stripe.com"}), not_a_list),
        (json!(["api.stripe.com", 7]), not_a_list),
        (json!([null]), not_a_list),
        (
            json!([]),
            "allowed_destinations must name at least one destination",
        ),
        (json!(["https://api.stripe.com/v1"]), bad_pattern),
        (json!(["api.stripe.com:443"]), bad_pattern),
        (json!(["*"]), bad_pattern),
        (json!(["*.com"]), bad_pattern),
        (json!(["api.*.com"]), bad_pattern),
        (json!([""]), bad_pattern),
        (
            json!(too_many),
            "allowed_destinations names at most 32 destinations of at most 512 characters",
        ),
    ] {
        let (status, body) = ruled_visa(&vault, allowed.clone()).await;
        assert_eq!(status, 400, "{allowed}: {body}");
        assert_eq!(
            body,
            json!({"success": false, "message": "Invalid value for allowed_destinations",
                "data": null, "code": "invalid_field", "detail": detail}),
            "{allowed}"
        );
    }
    let (status, body) = vault
        .post("/test-tokens", &vault.keys, &json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2031", "cvc": CVC, "allowed_destinations": "x"}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Invalid value for allowed_destinations"))
    );
    assert_eq!(vault.token_count().await, before);
    // null is no rule.
    let (status, body) = ruled_visa(&vault, Value::Null).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.get("allowed_destinations").is_none());
}

#[tokio::test]
async fn editing_the_stored_rule_makes_the_token_unusable_not_wider() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (_, ruled) = ruled_visa(&vault, json!(["localhost/charge"])).await;
    let ruled = ruled["token"].as_str().unwrap().to_owned();
    let (_, also_ruled) = ruled_visa(&vault, json!(["localhost/charge"])).await;
    let also_ruled = also_ruled["token"].as_str().unwrap().to_owned();
    let (free, _) = vault.visa().await;
    let mut conn = vault.database().await;
    // The rule lives only inside the sealed data: the edits that could lift it are a rule-free
    // neighbour's sealed data moved in ...
    sqlx::query(
        "UPDATE tokens SET nonce = (SELECT nonce FROM tokens WHERE id = $1), ciphertext = (SELECT ciphertext FROM tokens WHERE id = $1) WHERE id = $2",
    )
    .bind(&free)
    .bind(&ruled)
    .execute(&mut conn)
    .await
    .unwrap();
    // ... or its own ciphertext cut short (the sealed rule is at its end).
    let cut = if vault.backend.is_scaled() {
        "UPDATE tokens SET ciphertext = substring(ciphertext from 1 for length(ciphertext) - 20) WHERE id = $1"
    } else {
        "UPDATE tokens SET ciphertext = substr(ciphertext, 1, length(ciphertext) - 20) WHERE id = $1"
    };
    sqlx::query(cut)
        .bind(&also_ruled)
        .execute(&mut conn)
        .await
        .unwrap();
    for token in [&ruled, &also_ruled] {
        for url in [stub.url("/echo"), stub.url("/charge")] {
            let (status, body) = charge(&vault, token, &url).await;
            assert_eq!(status, 500, "{token} {url}: {body}");
            assert_eq!(body["code"], "internal");
        }
        let (status, _) = get(&vault, &format!("/tokens/{token}"), &vault.keys.api_key).await;
        assert_eq!(status, 500);
    }
    assert!(stub.requests().is_empty(), "nothing was sent");
    assert_eq!(charge(&vault, &free, &stub.url("/echo")).await.0, 200);
    assert!(vault.logs().contains("ciphertext failed authentication"));
}

#[tokio::test]
async fn the_rule_survives_a_key_rotation_and_a_repeat_tokenize() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (_, ruled) = ruled_visa(&vault, json!(["localhost/charge"])).await;
    let token = ruled["token"].as_str().unwrap().to_owned();
    let out = vault
        .cli()
        .args(["keys", "rotate", "--json", "--cache-ttl-ms", "0"])
        .args(["--data-dir", vault.data_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use sqlx::Row;
    let version: i64 = sqlx::query("SELECT key_version FROM tokens WHERE id = $1")
        .bind(&token)
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap()
        .get("key_version");
    assert_eq!(version, 2, "the token was resealed");
    assert_eq!(charge(&vault, &token, &stub.url("/charge")).await.0, 200);
    let (status, answer) = charge(&vault, &token, &stub.url("/echo")).await;
    assert_eq!(
        (status, answer["detail"].as_str()),
        (400, Some(NOT_IN_TOKEN_RULE))
    );

    // With deduplication, the same card tokenized again without a rule keeps the rule it had;
    // with one, the new rule is the token's.
    let dedup = vault.create_project(&["--deduplicate"]);
    let card = |allowed: Value| {
        json!({"type": "card", "allowed_destinations": allowed,
            "data": {"cardNumber": VISA, "expirationMonth": "7", "expirationYear": "2031"}})
    };
    let (status, first) = vault
        .post("/tokenize", &dedup, &card(json!(["localhost/charge"])))
        .await;
    assert_eq!(status, 201, "{first}");
    let (_, again) = vault.post("/tokenize", &dedup, &card(Value::Null)).await;
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["token"], first["token"]);
    assert_eq!(again["allowed_destinations"], json!(["localhost/charge"]));
    let (_, meta) = get(
        &vault,
        &format!("/tokens/{}", first["token"].as_str().unwrap()),
        &dedup.api_key,
    )
    .await;
    assert_eq!(
        meta["data"]["allowed_destinations"],
        json!(["localhost/charge"])
    );
    let (_, replaced) = vault
        .post("/tokenize", &dedup, &card(json!(["localhost/echo"])))
        .await;
    assert_eq!(replaced["allowed_destinations"], json!(["localhost/echo"]));
}
