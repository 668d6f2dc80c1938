use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn charge(stub: &Stub, token: &str, session: &str) -> Value {
    json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": {"cvc": "${cvv}"}})
}

const GONE: &str = "CVC session expired or not found";

#[tokio::test]
async fn a_production_session_is_used_once() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let (status, _) = vault.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!(status, 200);
    assert_eq!(stub.last().json()["cvc"], CVC);
    let (status, body) = vault.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!((status, body["message"].as_str()), (404, Some(GONE)));
    assert_eq!(body["code"], "cvc_session_not_found");
    assert_eq!(stub.count("/charge"), 1);
    // A call that does not use the CVC does not need or consume a session.
    let (status, _) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sessions_expire() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CVC_TTL_SECONDS", "1")]).await;
    let (token, session) = vault.visa().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = vault.proxy(&charge(&stub, &token, &session)).await;
    assert_eq!((status, body["message"].as_str()), (404, Some(GONE)));
    assert_eq!(stub.count("/charge"), 0);
}

#[tokio::test]
async fn sessions_can_be_deleted_in_every_form() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let del = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let key = vault.keys.api_key.clone();
    for form in ["path", "query", "body"] {
        let (token, session) = vault.visa().await;
        let base = vault.url("/proxy/delete-cvc-session");
        let req = match form {
            "path" => vault.http.delete(format!("{base}/{session}")),
            "query" => vault
                .http
                .delete(format!("{base}?cvc_session_id={session}")),
            _ => vault
                .http
                .delete(&base)
                .json(&json!({"cvc_session_id": session})),
        };
        let (status, body) = del(req.header("X-API-Key", &key)).await;
        assert_eq!(status, 200, "{form}: {body}");
        assert_eq!(
            body,
            json!({"success": true, "message": "CVC session deleted!"})
        );
        let (status, body) = vault.proxy(&charge(&stub, &token, &session)).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (404, Some(GONE)),
            "{form}"
        );
        // Deleting again: gone.
        let (status, body) = del(vault
            .http
            .delete(format!("{base}/{session}"))
            .header("X-API-Key", &key))
        .await;
        assert_eq!((status, body["message"].as_str()), (404, Some(GONE)));
    }
    let (status, body) = del(vault
        .http
        .delete(vault.url("/proxy/delete-cvc-session"))
        .header("X-API-Key", &key))
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Missing required field: cvc_session_id"))
    );
    let (status, body) = del(vault
        .http
        .delete(vault.url("/proxy/delete-cvc-session/%FF%FE"))
        .header("X-API-Key", &key))
    .await;
    assert_eq!((status, body["message"].as_str()), (404, Some(GONE)));
    let (status, _) = del(vault.http.delete(vault.url(&format!(
        "/proxy/delete-cvc-session/{}",
        uuid::Uuid::new_v4()
    ))))
    .await;
    assert_eq!(status, 401);
    assert_eq!(stub.count("/charge"), 0);
}

#[tokio::test]
async fn another_projects_session_is_not_found() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (_, session) = vault.visa().await;
    let other = vault.create_project(&[]);
    let other_token = vault.token_in(&other, MASTERCARD).await;
    let (status, body) = vault
        .post(
            "/proxy/transaction",
            &other,
            &charge(&stub, &other_token, &session),
        )
        .await;
    assert_eq!((status, body["message"].as_str()), (404, Some(GONE)));
    let resp = vault
        .http
        .delete(vault.url(&format!("/proxy/delete-cvc-session/{session}")))
        .header("X-API-Key", &other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn test_token_sessions_are_reusable() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (_, body) = vault
        .post("/test-tokens", &vault.keys, &json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033", "cvc": CVC}))
        .await;
    let token = body["token"].as_str().unwrap();
    let session = body["cvc_session_id"].as_str().unwrap();
    for _ in 0..3 {
        let (status, body) = vault.proxy(&charge(&stub, token, session)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(stub.last().json()["cvc"], CVC);
    }
}
