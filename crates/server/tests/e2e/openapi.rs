//! `GET /openapi.json`: served, valid for a real OpenAPI validator, complete, and true: every
//! documented route answers, and real answers of every route match the documented schemas.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// The validator run on the served document: `openapi-spec-validator` from PyPI (`.ci/run`
/// installs it), or the command in `CARDVAULT_OPENAPI_VALIDATOR`.
const VALIDATOR: &str = "openapi-spec-validator";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Documented routes that this vault does not serve: `/metrics` may be on its own listener.
const NOT_ON_THIS_LISTENER: [&str; 1] = ["/metrics"];

/// The served document, and checks of answers against it.
struct Spec {
    doc: Value,
}

impl Spec {
    async fn fetch(vault: &Vault) -> Self {
        let response = vault
            .http
            .get(vault.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        Self {
            doc: response.json().await.unwrap(),
        }
    }

    /// `(path, method)` of every operation.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    operations.insert((path.clone(), method.clone()));
                }
            }
        }
        operations
    }

    /// Checks a real answer of `method path` (the documented path, `{…}` and all) against the
    /// schema documented for its status, refusing any field the schema does not declare.
    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let operation = &self.doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which is not documented: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {status}: no JSON schema documented"
        );
        let mut root = strict(schema.clone());
        root["$defs"] = strict(self.doc["components"]["schemas"].clone());
        let root = local_refs(root);
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the answer does not match the document: {errors:?}\n{body}"
        );
    }
}

/// The schema with every object that lists its properties closed to others: an answer field
/// the document does not declare is a difference between the two.
fn strict(mut schema: Value) -> Value {
    match &mut schema {
        Value::Object(map) => {
            for value in map.values_mut() {
                *value = strict(value.take());
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), json!(false));
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = strict(item.take());
            }
        }
        _ => {}
    }
    schema
}

/// `#/components/schemas/X` → `#/$defs/X`, where [`Spec::check`] puts the components.
fn local_refs(schema: Value) -> Value {
    serde_json::from_str(
        &schema
            .to_string()
            .replace("#/components/schemas/", "#/$defs/"),
    )
    .unwrap()
}

/// Sends `method path` with an API key (or none) and a JSON body (or none).
async fn call(
    vault: &Vault,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = vault.http.request(method, vault.url(path));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn openapi_json_documents_every_route_the_vault_serves() {
    let vault = Vault::start_env(&[]).await;
    let spec = Spec::fetch(&vault).await;
    let doc = &spec.doc;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    // The CLI prints the same document (for tools that want it without a running vault).
    let out = vault.cli().arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(&serde_json::from_slice::<Value>(&out.stdout).unwrap(), doc);

    // The error envelope, with its extension fields.
    let error = &doc["components"]["schemas"]["Error"];
    for field in [
        "success",
        "message",
        "data",
        "code",
        "detail",
        "request_sent",
        "retry_after_seconds",
    ] {
        assert!(
            error["properties"][field].is_object(),
            "Error has no {field}"
        );
    }
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap();
    for code in [
        "invalid_api_key",
        "token_not_found",
        "rate_limited",
        "upstream_error",
    ] {
        assert!(codes.contains(&json!(code)), "ErrorCode has no {code}");
    }

    let operations = spec.operations();
    assert!(operations.len() >= 27, "{operations:?}");
    let paths: BTreeSet<&str> = operations.iter().map(|(p, _)| p.as_str()).collect();
    for (path, method) in &operations {
        // Every operation documents its errors with the envelope.
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        assert!(
            responses.iter().any(|(status, r)| status.starts_with('4')
                && r["content"]["application/json"]["schema"]["$ref"]
                    == "#/components/schemas/Error"),
            "{method} {path} documents no error answer"
        );
        if NOT_ON_THIS_LISTENER.contains(&path.as_str()) {
            continue;
        }
        // Served: whatever it answers without credentials, it is not the router's fallback.
        let (status, body) = call(&vault, method, &concrete(path), None, None).await;
        assert!(
            !matches!(
                body["code"].as_str(),
                Some("not_found" | "method_not_allowed")
            ),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    // And no other method is served on a documented path.
    for path in paths {
        if NOT_ON_THIS_LISTENER.contains(&path) {
            continue;
        }
        for method in METHODS {
            if !operations.contains(&(path.to_owned(), method.to_owned())) {
                let (status, body) = call(&vault, method, &concrete(path), None, None).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (405, Some("method_not_allowed")),
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
}

/// A path a request can be sent to: the documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{file}", "cardvault.js")
        .replace("{token}", "tok_probe")
        .replace("{id}", "probe")
}

#[tokio::test]
async fn openapi_json_passes_a_real_openapi_validator() {
    let vault = Vault::start_env(&[]).await;
    let body = vault
        .http
        .get(vault.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let file = vault.dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let validator =
        std::env::var("CARDVAULT_OPENAPI_VALIDATOR").unwrap_or_else(|_| VALIDATOR.to_owned());
    let output = match std::process::Command::new(&validator).arg(&file).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("CARDVAULT_SKIP_OPENAPI_VALIDATOR").as_deref() == Ok("1") {
                eprintln!(
                    "SKIPPED: {validator} is not installed (CARDVAULT_SKIP_OPENAPI_VALIDATOR=1)"
                );
                return;
            }
            panic!(
                "{validator} is not installed: `pip install openapi-spec-validator` (CI does), \
                 or set CARDVAULT_SKIP_OPENAPI_VALIDATOR=1 to skip this check"
            );
        }
        Err(e) => panic!("{validator}: {e}"),
    };
    assert!(
        output.status.success(),
        "{validator} refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let spec = Spec::fetch(&vault).await;
    let key = vault.keys.api_key.as_str();
    let admin = vault.create_app("tokenization,provisioning,reveal,audit");
    let admin = admin.as_str();

    // Tokens: card, bank, test tokens, refusals.
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "7", "expirationYear": "2031", "cvv": CVC}, "ttl_seconds": 3600});
    let (status, tokenized) = vault.post("/tokenize", &vault.keys, &card).await;
    spec.check("post", "/tokenize", status, &tokenized);
    assert_eq!(status, 201);
    let token = tokenized["token"].as_str().unwrap().to_owned();
    let session = tokenized["cvc_session_id"].as_str().unwrap().to_owned();
    let bank =
        json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000"}});
    let (status, banked) = vault.post("/tokenize", &vault.keys, &bank).await;
    spec.check("post", "/tokenize", status, &banked);
    let bank_token = banked["token"].as_str().unwrap().to_owned();
    for (bad, status) in [
        (json!({"type": "card"}), 400),
        (
            json!({"type": "card", "data": {"cardNumber": "4242424242424241", "expirationMonth": "1", "expirationYear": "2031"}}),
            400,
        ),
    ] {
        let (got, body) = vault.post("/tokenize", &vault.keys, &bad).await;
        assert_eq!(got, status, "{body}");
        spec.check("post", "/tokenize", got, &body);
    }
    let (status, body) = call(&vault, "post", "/tokenize", None, Some(&card)).await;
    assert_eq!(status, 401);
    spec.check("post", "/tokenize", status, &body);
    let test_card =
        json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2031", "cvc": CVC});
    let (status, body) = call(&vault, "post", "/test-tokens", Some(key), Some(&test_card)).await;
    assert_eq!(status, 201, "{body}");
    spec.check("post", "/test-tokens", status, &body);

    // A token's own allowed destinations: at tokenize, in test tokens, in its metadata.
    let mut ruled_card = card.clone();
    ruled_card["allowed_destinations"] = json!(["localhost", "*.adyen.com/pal"]);
    let (status, ruled) = vault.post("/tokenize", &vault.keys, &ruled_card).await;
    assert_eq!(status, 201, "{ruled}");
    spec.check("post", "/tokenize", status, &ruled);
    let mut ruled_bank = bank.clone();
    ruled_bank["allowed_destinations"] = json!(["localhost"]);
    let (status, body) = vault.post("/tokenize", &vault.keys, &ruled_bank).await;
    assert_eq!(status, 201, "{body}");
    spec.check("post", "/tokenize", status, &body);
    let mut ruled_test_card = test_card.clone();
    ruled_test_card["allowed_destinations"] = json!(["localhost"]);
    let (status, body) = call(
        &vault,
        "post",
        "/test-tokens",
        Some(key),
        Some(&ruled_test_card),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    spec.check("post", "/test-tokens", status, &body);
    ruled_card["allowed_destinations"] = json!(["https://localhost"]);
    let (status, body) = vault.post("/tokenize", &vault.keys, &ruled_card).await;
    assert_eq!(status, 400, "{body}");
    spec.check("post", "/tokenize", status, &body);
    let ruled_token = ruled["token"].as_str().unwrap();
    let (status, body) = call(
        &vault,
        "get",
        &format!("/tokens/{ruled_token}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    spec.check("get", "/tokens/{token}", status, &body);

    for t in [&token, &bank_token] {
        let (status, body) = call(&vault, "get", &format!("/tokens/{t}"), Some(key), None).await;
        assert_eq!(status, 200, "{body}");
        spec.check("get", "/tokens/{token}", status, &body);
        let (status, body) = call(
            &vault,
            "post",
            "/detokenize",
            Some(admin),
            Some(&json!({"token": t})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        spec.check("post", "/detokenize", status, &body);
    }
    let (status, body) = call(
        &vault,
        "post",
        "/detokenize",
        Some(key),
        Some(&json!({"token": token})),
    )
    .await;
    assert_eq!(status, 403);
    spec.check("post", "/detokenize", status, &body);

    // The proxy: answered, refused, unreachable.
    let proxied = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/echo"),
                         "request_data": {"n": "${cardNumber}", "c": "${cvv}"}});
    let mut dry_run = proxied.clone();
    dry_run["dry_run"] = json!(true);
    dry_run["http_headers"] = json!({"Authorization": "Bearer sk_test_1"});
    let (status, body) = vault.proxy(&dry_run).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    spec.check("post", "/proxy/transaction", status, &body);
    let (status, body) = vault.proxy(&proxied).await;
    assert_eq!(status, 200, "{body}");
    spec.check("post", "/proxy/transaction", status, &body);
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": "ftp://x", "request_data": {}}))
        .await;
    assert_eq!(status, 400);
    spec.check("post", "/proxy/transaction", status, &body);
    let (status, body) = vault
        .proxy(&json!({"token": "tok_nope", "proxy_url": stub.url("/echo"), "request_data": {}}))
        .await;
    assert_eq!(status, 404);
    spec.check("post", "/proxy/transaction", status, &body);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": format!("https://localhost:{port}/x"), "request_data": {}}))
        .await;
    assert_eq!(status, 502, "{body}");
    spec.check("post", "/proxy/transaction", status, &body);

    // CVC sessions.
    let (_, tokenized) = vault.post("/tokenize", &vault.keys, &card).await;
    let session = tokenized["cvc_session_id"].as_str().unwrap().to_owned();
    let path = format!("/proxy/delete-cvc-session/{session}");
    let (status, body) = call(&vault, "delete", &path, Some(key), None).await;
    assert_eq!(status, 200, "{body}");
    spec.check("delete", "/proxy/delete-cvc-session/{id}", status, &body);
    let (status, body) = call(&vault, "delete", &path, Some(key), None).await;
    assert_eq!(status, 404);
    spec.check("delete", "/proxy/delete-cvc-session/{id}", status, &body);
    for path in ["/proxy/delete-cvc-session", "/proxy/delete-cvc-session/"] {
        let (status, body) = call(&vault, "delete", path, Some(key), None).await;
        assert_eq!(status, 400);
        spec.check("delete", path, status, &body);
        let gone = json!({"cvc_session_id": session});
        let (status, body) = call(&vault, "delete", path, Some(key), Some(&gone)).await;
        assert_eq!(status, 404);
        spec.check("delete", path, status, &body);
    }

    // Browser collection.
    let checkout = json!({"tokenization_session_id": "checkout-1", "max_tokenize_calls": 2});
    let (status, body) = call(
        &vault,
        "post",
        "/collect/sessions",
        Some(key),
        Some(&checkout),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    spec.check("post", "/collect/sessions", status, &body);
    for expected in [200, 404] {
        let (status, body) = call(
            &vault,
            "delete",
            "/collect/sessions/checkout-1",
            Some(key),
            None,
        )
        .await;
        assert_eq!(status, expected, "{body}");
        spec.check("delete", "/collect/sessions/{id}", status, &body);
    }
    let (status, body) = call(&vault, "get", "/collect/v1/nope.js", None, None).await;
    assert_eq!(status, 404);
    spec.check("get", "/collect/v1/{file}", status, &body);

    // Applications.
    let (status, body) = call(&vault, "get", "/api/applications/key", Some(key), None).await;
    assert_eq!(status, 200);
    spec.check("get", "/api/applications/key", status, &body);
    let new_app =
        json!({"name": "checkout web", "permissions": {"tokenization": {"allowed": true}}});
    let (status, created) = call(
        &vault,
        "post",
        "/api/applications",
        Some(admin),
        Some(&new_app),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    spec.check("post", "/api/applications", status, &created);
    let (status, body) = call(
        &vault,
        "post",
        "/api/applications",
        Some(admin),
        Some(&new_app),
    )
    .await;
    assert_eq!(status, 409);
    spec.check("post", "/api/applications", status, &body);
    let (status, body) = call(&vault, "get", "/api/applications", Some(admin), None).await;
    assert_eq!(status, 200);
    spec.check("get", "/api/applications", status, &body);
    let (status, body) = call(&vault, "get", "/api/applications", Some(key), None).await;
    assert_eq!(status, 403);
    spec.check("get", "/api/applications", status, &body);
    let app = format!(
        "/api/applications/{}",
        created["data"]["id"].as_str().unwrap()
    );
    let (status, body) = call(&vault, "get", &app, Some(admin), None).await;
    assert_eq!(status, 200);
    spec.check("get", "/api/applications/{id}", status, &body);
    let (status, body) = call(
        &vault,
        "put",
        &app,
        Some(admin),
        Some(&json!({"name": "checkout app"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    spec.check("put", "/api/applications/{id}", status, &body);
    let roll = json!({"expire_old_in_seconds": 60});
    let (status, body) = call(
        &vault,
        "post",
        &format!("{app}/roll-key"),
        Some(admin),
        Some(&roll),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    spec.check("post", "/api/applications/{id}/roll-key", status, &body);
    for expected in [200, 404] {
        let (status, body) = call(&vault, "delete", &app, Some(admin), None).await;
        assert_eq!(status, expected, "{body}");
        spec.check("delete", "/api/applications/{id}", status, &body);
    }

    // Projects.
    let project = format!("/api/projects/{}", vault.keys.project_id);
    let (status, body) = call(&vault, "get", &project, Some(admin), None).await;
    assert_eq!(status, 200, "{body}");
    spec.check("get", "/api/projects/{id}", status, &body);
    let patch = json!({"deduplicate": true, "allowed_origins": ["https://shop.example"]});
    let (status, body) = call(&vault, "patch", &project, Some(admin), Some(&patch)).await;
    assert_eq!(status, 200, "{body}");
    spec.check("patch", "/api/projects/{id}", status, &body);
    let (status, body) = call(&vault, "get", "/api/projects/proj_other", Some(admin), None).await;
    assert_eq!(status, 404);
    spec.check("get", "/api/projects/{id}", status, &body);
    // With deduplication on, tokenize and the metadata carry a fingerprint.
    let (status, body) = vault.post("/tokenize", &vault.keys, &card).await;
    spec.check("post", "/tokenize", status, &body);
    let (status, body) = call(
        &vault,
        "get",
        &format!("/tokens/{}", body["token"].as_str().unwrap()),
        Some(key),
        None,
    )
    .await;
    assert!(body["data"]["fingerprint"].is_string(), "{body}");
    spec.check("get", "/tokens/{token}", status, &body);
    let sub = json!({"name": "marketplace seller", "mode": "test"});
    let (status, body) = call(
        &vault,
        "post",
        "/internal/provision",
        Some(admin),
        Some(&sub),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    spec.check("post", "/internal/provision", status, &body);

    // The audit log, health, this document.
    let (status, body) = call(&vault, "get", "/audit-logs?limit=5", Some(admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["next_cursor"].is_null());
    spec.check("get", "/audit-logs", status, &body);
    let (status, body) = call(&vault, "get", "/audit-logs?limit=0", Some(admin), None).await;
    assert_eq!(status, 400);
    spec.check("get", "/audit-logs", status, &body);
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let (status, body) = call(&vault, "get", path, None, None).await;
        assert_eq!(status, 200);
        spec.check("get", path, status, &body);
    }

    // Tokens, deleted.
    for expected in [200, 404] {
        let (status, body) = call(
            &vault,
            "delete",
            &format!("/tokens/{token}"),
            Some(key),
            None,
        )
        .await;
        assert_eq!(status, expected, "{body}");
        spec.check("delete", "/tokens/{token}", status, &body);
    }
}
