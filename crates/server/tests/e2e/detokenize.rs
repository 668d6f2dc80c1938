//! `POST /detokenize`: the data in the clear, only with the `reveal` permission.

use serde_json::json;

use crate::harness::*;
use crate::tokens_lifecycle::{app_in, detokenize, not_found};

#[tokio::test]
async fn detokenize_reveals_card_and_bank_data_to_reveal_keys_only() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (card, _) = vault.visa().await;
    let (status, bank) = vault
        .post(
            "/tokenize",
            &vault.keys,
            &json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000", "lastName": "Doe"}}),
        )
        .await;
    assert_eq!(status, 201, "{bank}");
    let bank = bank["token"].as_str().unwrap().to_owned();
    let revealer = vault.create_app("tokenization,reveal");

    let (status, body) = detokenize(&vault, &revealer, &json!({"token": card})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"type": "card", "cardNumber": VISA, "expirationMonth": "07",
               "expirationYear": "2031", "firstName": HOLDER_FIRST}})
    );
    assert!(
        !body.to_string().contains(CVC),
        "a CVC is never stored, never revealed"
    );
    let (status, body) = detokenize(&vault, &revealer, &json!({"token": bank})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"type": "bank", "accountNumber": ACCOUNT,
               "routingNumber": "110000000", "lastName": "Doe"}})
    );

    // `reveal` alone is enough; `tokenization` (what `init` and `project create` grant) and
    // `provisioning` are not.
    let reveal_only = vault.create_app("reveal");
    assert_eq!(
        detokenize(&vault, &reveal_only, &json!({"token": card}))
            .await
            .0,
        200
    );
    let denied = json!({"success": false, "message": "This API key does not have permission for this operation",
                        "data": null, "code": "permission_denied"});
    for key in [
        vault.keys.api_key.clone(),
        vault.create_app("tokenization,provisioning"),
    ] {
        assert_eq!(
            detokenize(&vault, &key, &json!({"token": card})).await,
            (403, denied.clone())
        );
    }
    let (status, body) = detokenize(&vault, "key_nope", &json!({"token": card})).await;
    assert_eq!((status, &body["code"]), (401, &json!("invalid_api_key")));

    // A revealed answer is never cached.
    let response = vault
        .http
        .post(vault.url("/detokenize"))
        .header("X-API-Key", &revealer)
        .json(&json!({"token": card}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn detokenize_finds_only_the_callers_own_live_tokens() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let other = vault.create_project(&[]);
    let theirs = vault.token_in(&other, MASTERCARD).await;
    let their_revealer = app_in(&vault, &other.project_id, "reveal");
    let revealer = vault.create_app("reveal");
    let (mine, _) = vault.visa().await;

    for token in [
        theirs.as_str(),
        "tok_0123456789abcdef0123456789abcdef",
        "",
        &"t".repeat(300),
    ] {
        assert_eq!(
            detokenize(&vault, &revealer, &json!({"token": token})).await,
            (404, not_found()),
            "{token}"
        );
    }
    assert_eq!(
        detokenize(&vault, &their_revealer, &json!({"token": mine})).await,
        (404, not_found())
    );
    assert_eq!(
        detokenize(&vault, &their_revealer, &json!({"token": theirs}))
            .await
            .1["data"]["cardNumber"],
        MASTERCARD
    );

    // Bad bodies, in the API's envelope.
    for (body, message, code) in [
        (json!({}), "Missing required field: token", "missing_field"),
        (
            json!({"token": null}),
            "Missing required field: token",
            "missing_field",
        ),
        (
            json!({"token": 5}),
            "Invalid value for token",
            "invalid_field",
        ),
        (json!(["tok_x"]), "Invalid JSON", "invalid_body"),
    ] {
        assert_eq!(
            detokenize(&vault, &revealer, &body).await,
            (
                400,
                json!({"success": false, "message": message, "data": null, "code": code})
            ),
            "{body}"
        );
    }
}
