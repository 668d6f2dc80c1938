//! Running a vault through its API: applications (create, list, read, change, delete, roll a
//! key with overlap), sub-projects, project settings, and least privilege between permissions.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// A call with `key` as `X-API-Key`.
async fn call(
    vault: &Vault,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = vault
        .http
        .request(method, vault.url(path))
        .header("X-API-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send_with(request, &[]).await
}

/// Tokenizes a card with `key` in the vault's default project; returns the status.
async fn tokenize_with(vault: &Vault, key: &str) -> u16 {
    let keys = Keys {
        api_key: key.to_owned(),
        ..vault.keys.clone()
    };
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2031"}});
    vault.post("/tokenize", &keys, &card).await.0
}

fn tokenization_only() -> Value {
    json!({"tokenization": {"allowed": true}, "provisioning": {"allowed": false}})
}

#[tokio::test]
async fn the_whole_application_lifecycle_runs_over_http() {
    let vault = Vault::start_env(&[]).await;
    let admin = vault.create_app("provisioning");

    let (status, created) = call(
        &vault,
        "POST",
        "/api/applications",
        &admin,
        Some(json!({"name": "checkout web", "permissions": tokenization_only()})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let data = &created["data"];
    let id = data["id"].as_str().unwrap().to_owned();
    let key = data["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("key_checkoutweb_test_pvt_"), "{key}");
    assert_eq!(data["permissions"]["tokenization"]["allowed"], true);
    assert_eq!(data["permissions"]["reveal"]["allowed"], false);
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(tokenize_with(&vault, &key).await, 201);

    // Listed and read without any key.
    let (status, listed) = call(&vault, "GET", "/api/applications", &admin, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"checkout web") && names.contains(&"default"),
        "{names:?}"
    );
    assert!(!listed.to_string().contains("_pvt_"), "a key in a listing");
    let (status, read) = call(
        &vault,
        "GET",
        &format!("/api/applications/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["data"]["name"], "checkout web");
    assert!(read["data"].get("api_key").is_none());

    // Renamed and narrowed: the key loses tokenization at once on this instance.
    let (status, changed) = call(
        &vault,
        "PUT",
        &format!("/api/applications/{id}"),
        &admin,
        Some(json!({"name": "checkout web v2", "permissions": {"audit": {"allowed": true}}})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["data"]["name"], "checkout web v2");
    assert_eq!(changed["data"]["permissions"]["audit"]["allowed"], true);
    assert_eq!(tokenize_with(&vault, &key).await, 403);

    // A name already used in the project.
    let (status, body) = call(
        &vault,
        "POST",
        "/api/applications",
        &admin,
        Some(json!({"name": "checkout web v2"})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(body["message"], "Application name already exists");
    assert_eq!(body["code"], "application_name_taken");

    // Deleted: the key stops working; deleting again, or the caller's own, is refused.
    let (status, body) = call(
        &vault,
        "DELETE",
        &format!("/api/applications/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Application deleted"))
    );
    assert_eq!(tokenize_with(&vault, &key).await, 401);
    let (status, body) = call(
        &vault,
        "DELETE",
        &format!("/api/applications/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (404, &json!("Application not found"))
    );
    let (_, me) = call(&vault, "GET", "/api/applications/key", &admin, None).await;
    let own = me["data"]["application_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &vault,
        "DELETE",
        &format!("/api/applications/{own}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        call(&vault, "GET", "/api/applications", &admin, None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn bad_input_gets_the_apis_exact_messages_and_changes_nothing() {
    let vault = Vault::start_env(&[]).await;
    let admin = vault.create_app("provisioning");
    for (body, message) in [
        (json!({}), "Missing required field: name"),
        (json!({"name": "ab"}), "Invalid value for name"),
        (json!({"name": "x".repeat(51)}), "Invalid value for name"),
        (json!({"name": 7}), "Invalid value for name"),
        (
            json!({"name": "ok app", "permissions": {"admin": {"allowed": true}}}),
            "Invalid value for permissions",
        ),
        (
            json!({"name": "ok app", "permissions": {"tokenization": true}}),
            "Invalid value for permissions",
        ),
        (
            json!({"name": "ok app", "permissions": ["tokenization"]}),
            "Invalid value for permissions",
        ),
    ] {
        let (status, answer) = call(
            &vault,
            "POST",
            "/api/applications",
            &admin,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["message"], message, "{body}");
    }
    let (_, listed) = call(&vault, "GET", "/api/applications", &admin, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    for path in [
        "/api/applications/app_nope",
        "/api/applications/app_nope/roll-key",
    ] {
        let method = if path.ends_with("roll-key") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = call(&vault, method, path, &admin, None).await;
        assert_eq!(
            (status, &body["message"]),
            (404, &json!("Application not found")),
            "{path}"
        );
    }
    let (status, body) = call(
        &vault,
        "POST",
        &format!("/api/applications/{}/roll-key", "app_nope"),
        &admin,
        Some(json!({"expire_old_in_seconds": -1})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn each_permission_opens_only_its_own_calls_and_only_in_its_project() {
    let vault = Vault::start_env(&[]).await;
    let tokenizer = vault.keys.api_key.clone();
    let admin = vault.create_app("provisioning");
    for path in [
        "/api/applications",
        &format!("/api/projects/{}", vault.keys.project_id),
    ] {
        let (status, body) = call(&vault, "GET", path, &tokenizer, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(
            body["message"],
            "This API key does not have permission for this operation"
        );
    }
    assert_eq!(tokenize_with(&vault, &admin).await, 403);

    // Another project's application and settings do not exist for this key.
    let other = vault.create_project(&[]);
    let (_, theirs) = call(&vault, "GET", "/api/applications/key", &other.api_key, None).await;
    let their_app = theirs["data"]["application_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path) in [
        ("GET", format!("/api/applications/{their_app}")),
        ("PUT", format!("/api/applications/{their_app}")),
        ("DELETE", format!("/api/applications/{their_app}")),
        ("POST", format!("/api/applications/{their_app}/roll-key")),
    ] {
        let (status, body) = call(
            &vault,
            method,
            &path,
            &admin,
            Some(json!({"name": "mine now"})),
        )
        .await;
        assert_eq!(
            (status, &body["message"]),
            (404, &json!("Application not found")),
            "{method} {path}"
        );
    }
    let (status, body) = call(
        &vault,
        "GET",
        &format!("/api/projects/{}", other.project_id),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (404, &json!("Project not found"))
    );
    assert_eq!(
        tokenize_with(&vault, &vault.keys.api_key).await,
        201,
        "nothing else changed"
    );
}

#[tokio::test]
async fn a_rolled_key_overlaps_then_stops_on_every_instance() {
    let a = Vault::start_env(&[]).await;
    // A second process on the same data: a second key cache (on PostgreSQL a true second
    // instance; on the embedded file, one machine's second process).
    let b = a.another_instance();
    let admin = a.create_app("provisioning");
    let (_, me) = call(&a, "GET", "/api/applications/key", &a.keys.api_key, None).await;
    let id = me["data"]["application_id"].as_str().unwrap().to_owned();
    let old = a.keys.api_key.clone();
    // Both instances have the old key cached.
    assert_eq!(tokenize_with(&a, &old).await, 201);
    assert_eq!(tokenize_with(&b, &old).await, 201);

    let (status, rolled) = call(
        &a,
        "POST",
        &format!("/api/applications/{id}/roll-key"),
        &admin,
        Some(json!({"expire_old_in_seconds": 2})),
    )
    .await;
    assert_eq!(status, 200, "{rolled}");
    let new = rolled["data"]["api_key"].as_str().unwrap().to_owned();
    assert!(
        rolled["data"]["old_keys_expire_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    for vault in [&a, &b] {
        assert_eq!(tokenize_with(vault, &new).await, 201);
        assert_eq!(tokenize_with(vault, &old).await, 201, "the overlap");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Where it was rolled, the old key ends with the overlap; elsewhere within the key cache
    // period after that (5 s here).
    assert_eq!(tokenize_with(&a, &old).await, 401, "after the overlap");
    assert!(
        stops_within(&b, &old, Duration::from_secs(7)).await,
        "after the overlap"
    );
    assert_eq!(tokenize_with(&b, &new).await, 201);

    // Revoked through one instance: the other stops within the key cache period (5 s).
    let (status, _) = call(
        &a,
        "DELETE",
        &format!("/api/applications/{id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        tokenize_with(&a, &new).await,
        401,
        "at once where it was revoked"
    );
    assert!(
        stops_within(&b, &new, Duration::from_secs(7)).await,
        "the other instance still takes the revoked key"
    );
}

/// Whether `key` is refused by `vault` within `limit`.
async fn stops_within(vault: &Vault, key: &str, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if tokenize_with(vault, key).await == 401 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn sub_projects_and_project_settings_are_managed_over_http() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let admin = vault.create_app("provisioning");

    let (status, provisioned) = call(
        &vault,
        "POST",
        "/internal/provision",
        &admin,
        Some(json!({"name": "marketplace seller 42"})),
    )
    .await;
    assert_eq!(status, 201, "{provisioned}");
    let sub = &provisioned["data"];
    assert_eq!(sub["mode"], "test");
    let sub_keys = Keys {
        project_id: sub["project_id"].as_str().unwrap().to_owned(),
        application_id: sub["application_id"].as_str().unwrap().to_owned(),
        publishable_key: sub["publishable_key"].as_str().unwrap().to_owned(),
        api_key: sub["api_key"].as_str().unwrap().to_owned(),
    };
    assert_ne!(sub_keys.project_id, vault.keys.project_id);
    assert!(!vault.token_in(&sub_keys, VISA).await.is_empty());
    let (status, body) = call(
        &vault,
        "POST",
        "/internal/provision",
        &admin,
        Some(json!({"name": "live one", "mode": "live"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    let project = format!("/api/projects/{}", vault.keys.project_id);
    let (status, settings) = call(
        &vault,
        "PATCH",
        &project,
        &admin,
        Some(json!({
            "deduplicate": true,
            "allowed_origins": ["https://shop.example"],
            "destination_allowlist": ["api.processor.example"],
        })),
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["data"]["deduplicate"], true);
    assert_eq!(
        settings["data"]["allowed_origins"],
        json!(["https://shop.example"])
    );
    assert_eq!(
        settings["data"]["destination_allowlist"],
        json!(["api.processor.example"])
    );
    let (_, read) = call(&vault, "GET", &project, &admin, None).await;
    assert_eq!(read["data"], settings["data"]);
    // The allowlist is in force at once: the stub is no longer a permitted destination.
    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(
        (status, &body["message"]),
        (400, &json!("Invalid proxy URL")),
        "{body}"
    );

    for (bad, message) in [
        (
            json!({"allowed_origins": ["http://shop.example"]}),
            "Invalid value for allowed_origins",
        ),
        (
            json!({"allowed_origins": "https://shop.example"}),
            "Invalid value for allowed_origins",
        ),
        (
            json!({"destination_allowlist": ["https://x.example/"]}),
            "Invalid value for destination_allowlist",
        ),
        (
            json!({"deduplicate": "yes"}),
            "Invalid value for deduplicate",
        ),
        (
            json!({"processor_tls": {"gateway.example": {"ca_pem": "nope"}}}),
            "Invalid value for processor_tls",
        ),
    ] {
        let (status, body) = call(&vault, "PATCH", &project, &admin, Some(bad.clone())).await;
        assert_eq!(
            (status, &body["message"]),
            (400, &json!(message)),
            "{bad}: {body}"
        );
    }
    let (_, after) = call(&vault, "GET", &project, &admin, None).await;
    assert_eq!(
        after["data"], settings["data"],
        "a refused change changed something"
    );

    // Processor TLS settings over HTTP: a CA for one host, then removed.
    let ca = std::fs::read_to_string(&stub.ca_file).unwrap();
    let (status, body) = call(
        &vault,
        "PATCH",
        &project,
        &admin,
        Some(json!({"processor_tls": {"gateway.acquirer.example": {"ca_pem": ca}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["processor_tls"],
        json!([{"host": "gateway.acquirer.example", "ca": true, "client_certificate": false}])
    );
    let (_, body) = call(
        &vault,
        "PATCH",
        &project,
        &admin,
        Some(json!({"processor_tls": {"gateway.acquirer.example": null}})),
    )
    .await;
    assert_eq!(body["data"]["processor_tls"], json!([]));
}
