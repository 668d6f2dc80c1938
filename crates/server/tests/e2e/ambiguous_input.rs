//! Input that two parsers could read differently is refused, not guessed at.

use serde_json::{Value, json};

use crate::harness::*;

async fn post_text(vault: &Vault, path: &str, body: &str) -> (u16, Value) {
    let req = vault
        .http
        .post(vault.url(path))
        .header("X-API-Key", &vault.keys.api_key)
        .header("X-Pub-Key", &vault.keys.publishable_key)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    send_with(req, &[]).await
}

fn refusal(message: &str, code: &str) -> Value {
    json!({"success": false, "message": message, "data": null, "code": code})
}

#[tokio::test]
async fn a_key_given_twice_is_invalid_json() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let invalid = refusal("Invalid JSON", "invalid_body");
    let twice = format!(
        r#"{{"type": "card", "data": {{"cardNumber": "{VISA}", "cardNumber": "{MASTERCARD}", "expirationMonth": "12", "expirationYear": "2033"}}}}"#
    );
    assert_eq!(
        post_text(&vault, "/tokenize", &twice).await,
        (400, invalid.clone())
    );
    assert_eq!(vault.token_count().await, 0, "nothing was stored");

    let (token, _) = vault.visa().await;
    let charge = stub.url("/charge");
    let twice = format!(
        r#"{{"token": "{token}", "proxy_url": "{charge}", "proxy_url": "https://elsewhere.example/", "request_data": {{"n": "${{cardNumber}}"}}}}"#
    );
    assert_eq!(
        post_text(&vault, "/proxy/transaction", &twice).await,
        (400, invalid.clone())
    );
    let nested = format!(
        r#"{{"token": "{token}", "proxy_url": "{charge}", "request_data": {{"amount": 1, "amount": 100000}}}}"#
    );
    assert_eq!(
        post_text(&vault, "/proxy/transaction", &nested).await,
        (400, invalid)
    );
    assert_eq!(stub.count("/charge"), 0, "nothing reached the processor");
}

#[tokio::test]
async fn card_numbers_must_be_strings_and_expiry_may_be_a_number() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card = |data: Value| json!({"type": "card", "data": data});
    for (data, field) in [
        (
            json!({"cardNumber": 4242424242424242_u64, "expirationMonth": "12", "expirationYear": "2033"}),
            "cardNumber",
        ),
        (
            json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033", "cvv": 739}),
            "cvv",
        ),
    ] {
        let (status, body) = vault.post("/tokenize", &vault.keys, &card(data)).await;
        assert_eq!(
            (status, body),
            (
                400,
                refusal(&format!("Invalid value for {field}"), "invalid_field")
            )
        );
    }
    let bank = json!({"type": "bank", "data": {"accountNumber": "000123456789", "routingNumber": 11000015}});
    let (status, body) = vault.post("/tokenize", &vault.keys, &bank).await;
    assert_eq!(
        (status, body),
        (
            400,
            refusal("Invalid value for routingNumber", "invalid_field")
        )
    );
    let (status, body) = vault
        .post(
            "/tokenize",
            &vault.keys,
            &card(json!({"cardNumber": VISA, "expirationMonth": 12, "expirationYear": 2033})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["expiration_month"], "12");
}

#[tokio::test]
async fn a_cvc_session_id_of_the_wrong_type_gets_one_answer() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let invalid = refusal("Invalid value for cvc_session_id", "invalid_field");
    for wrong in [
        json!(123),
        json!(1.5),
        json!(true),
        json!([session]),
        json!({"id": session}),
    ] {
        let req = vault
            .http
            .delete(vault.url("/proxy/delete-cvc-session"))
            .header("X-API-Key", &vault.keys.api_key)
            .json(&json!({"cvc_session_id": wrong}));
        assert_eq!(
            send_with(req, &[]).await,
            (400, invalid.clone()),
            "delete with {wrong}"
        );
        let call = json!({"token": token, "cvc_session_id": wrong, "proxy_url": stub.url("/charge"), "request_data": {"c": "${cvv}"}});
        assert_eq!(
            vault.proxy(&call).await,
            (400, invalid.clone()),
            "proxy with {wrong}"
        );
    }
    // The session is untouched by all that.
    let call = json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/charge"), "request_data": {"c": "${cvv}"}});
    assert_eq!(vault.proxy(&call).await.0, 200);
}
