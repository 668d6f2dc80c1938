use serde_json::{Value, json};

use crate::harness::*;

async fn call(
    vault: &Vault,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    send_with(
        vault.http.request(method, vault.url(path)).json(body),
        headers,
    )
    .await
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}});
    let invalid = json!({"success": false, "message": "Invalid API key", "data": null, "code": "invalid_api_key"});
    let k = &vault.keys;
    let post = reqwest::Method::POST;
    for headers in [
        vec![],
        vec![("X-Pub-Key", k.publishable_key.as_str())],
        vec![("X-API-Key", k.api_key.as_str())],
        vec![
            ("X-API-Key", "key_default_test_pvt_00"),
            ("X-Pub-Key", k.publishable_key.as_str()),
        ],
        vec![
            ("X-API-Key", k.api_key.as_str()),
            ("X-Pub-Key", "pk_test_nope"),
        ],
    ] {
        let (status, mut body) = call(&vault, post.clone(), "/tokenize", &headers, &card).await;
        // A missing header is named in the extension `detail`; a wrong key is not told apart.
        let detail = body.as_object_mut().and_then(|b| b.remove("detail"));
        let missing = ["X-API-Key", "X-Pub-Key"]
            .into_iter()
            .find(|name| !headers.iter().any(|(h, _)| h == name));
        match missing {
            Some(name) => assert_eq!(
                detail,
                Some(json!(format!("the {name} header is missing"))),
                "{headers:?}"
            ),
            None => assert_eq!(detail, None, "{headers:?}"),
        }
        assert_eq!((status, &body), (401, &invalid), "{headers:?}");
    }
    // A publishable key of another project does not go with this API key.
    let other = vault.create_project(&[]);
    let (status, _) = call(
        &vault,
        post.clone(),
        "/tokenize",
        &[
            ("X-API-Key", &k.api_key),
            ("X-Pub-Key", &other.publishable_key),
        ],
        &card,
    )
    .await;
    assert_eq!(status, 401);
    let (status, mut body) =
        call(&vault, post.clone(), "/proxy/transaction", &[], &json!({})).await;
    let detail = body.as_object_mut().and_then(|b| b.remove("detail"));
    assert_eq!(detail, Some(json!("the X-API-Key header is missing")));
    assert_eq!((status, body), (401, invalid.clone()));
    let (status, _) = call(
        &vault,
        reqwest::Method::GET,
        "/api/applications/key",
        &[("X-API-Key", "nope")],
        &json!({}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(vault.token_count().await, 0);
}

#[tokio::test]
async fn permissions_are_enforced() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let provisioning_only = vault.create_app("provisioning");
    assert!(
        provisioning_only.starts_with("key_limited"),
        "{provisioning_only}"
    );
    let denied = json!({"success": false, "message": "This API key does not have permission for this operation", "data": null, "code": "permission_denied"});
    let card = json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}});
    let headers = [
        ("X-API-Key", provisioning_only.as_str()),
        ("X-Pub-Key", vault.keys.publishable_key.as_str()),
    ];
    let (status, body) = call(&vault, reqwest::Method::POST, "/tokenize", &headers, &card).await;
    assert_eq!((status, body), (403, denied.clone()));
    let (token, _) = vault.visa().await;
    let proxy = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {}});
    let (status, body) = call(
        &vault,
        reqwest::Method::POST,
        "/proxy/transaction",
        &headers,
        &proxy,
    )
    .await;
    assert_eq!((status, body), (403, denied));
    assert_eq!(stub.count("/charge"), 0);

    let (status, body) = call(
        &vault,
        reqwest::Method::GET,
        "/api/applications/key",
        &headers[..1],
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "API key is valid");
    assert_eq!(body["data"]["project_id"], vault.keys.project_id);
    assert_eq!(
        body["data"]["permissions"]["tokenization"]["allowed"],
        false
    );
    assert_eq!(body["data"]["permissions"]["provisioning"]["allowed"], true);
}

#[tokio::test]
async fn another_projects_token_is_not_found() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let other = vault.create_project(&[]);
    let (status, body) = vault
        .post("/proxy/transaction", &other, &json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"success": false, "message": "Token not found", "data": null, "code": "token_not_found"})
    );
    assert_eq!(stub.count("/charge"), 0);
}

#[tokio::test]
async fn request_ids_health_and_unknown_routes() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let resp = vault
        .http
        .get(vault.url("/healthz"))
        .header("X-Request-Id", "req-abc-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-1");
    // An id that could be a card number is replaced, never echoed or logged.
    let resp = vault
        .http
        .get(vault.url("/healthz"))
        .header("X-Request-Id", VISA)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], VISA);
    let resp = vault.http.get(vault.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["data"]["database"],
        "ok"
    );
    let resp = vault
        .http
        .get(vault.url(&format!("/{VISA}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "not_found");
    let resp = vault.http.get(vault.url("/tokenize")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}
