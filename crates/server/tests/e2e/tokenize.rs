use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn tokenize_card_answers_with_masks_only() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let body = vault
        .tokenize(json!({"cardNumber": VISA_SPACED, "expirationMonth": "7", "expirationYear": "2031", "cvv": CVC}))
        .await;
    assert_eq!(body["success"], true);
    let token = body["token"].as_str().unwrap();
    assert!(
        token.starts_with("tok_") && token.len() >= 4 + 32,
        "{token}"
    );
    assert_eq!(body["bin"], "424242");
    assert_eq!(body["mask"]["card_number"], "424242******4242");
    assert_eq!(
        body["data"],
        json!({"number": "424242******4242", "expiration_month": "07", "expiration_year": "2031", "brand": "visa", "last4": "4242"})
    );
    assert_eq!(body["deduplicated"], false);
    assert!(body.get("fingerprint").is_none());
    assert_eq!(
        uuid::Uuid::parse_str(body["cvc_session_id"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    assert!(
        !body.to_string().contains(VISA),
        "the response holds the full number"
    );

    let amex = vault
        .tokenize(json!({"cardNumber": AMEX, "expirationMonth": "12", "expirationYear": "30", "cvc": AMEX_CVC}))
        .await;
    assert_eq!(amex["data"]["brand"], "amex");
    assert_eq!(amex["data"]["expiration_year"], "30");
    assert_eq!(amex["mask"]["card_number"], "378282*****0005");

    let no_cvc = vault
        .tokenize(
            json!({"cardNumber": MASTERCARD, "expirationMonth": "01", "expirationYear": "2034"}),
        )
        .await;
    assert!(no_cvc.get("cvc_session_id").is_none());
    assert_ne!(no_cvc["token"], body["token"]);
    assert_eq!(vault.token_count().await, 3);
}

#[tokio::test]
async fn tokenize_bank_account() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (status, body) = vault
        .post(
            "/tokenize",
            &vault.keys,
            &json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000", "firstName": "Jane", "lastName": "Doe"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["last4"], "6789");
    assert_eq!(body["data"]["routing_number"], "110000000");
    assert_eq!(body["mask"]["account_number"], "********6789");
    assert!(!body.to_string().contains(ACCOUNT));
}

#[tokio::test]
async fn bad_tokenize_inputs_get_exact_messages_and_store_nothing() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card = |overrides: Value| {
        let mut data = json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2034", "cvv": CVC});
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                data.as_object_mut().unwrap().remove(k);
            } else {
                data[k] = v.clone();
            }
        }
        json!({"type": "card", "data": data})
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"data": {}}),
            "Missing required field: type",
            "missing_field",
        ),
        (
            json!({"type": "crypto", "data": {}}),
            "Invalid value for type",
            "invalid_field",
        ),
        (
            json!({"type": "card"}),
            "Missing required field: data",
            "missing_field",
        ),
        (
            json!({"type": "card", "data": "x"}),
            "Invalid value for data",
            "invalid_field",
        ),
        (
            card(json!({"cardNumber": null})),
            "Missing required field: cardNumber",
            "missing_field",
        ),
        (
            card(json!({"cardNumber": "4242424242424241"})),
            "Invalid card number",
            "invalid_card_number",
        ),
        (
            card(json!({"cardNumber": "4242"})),
            "Invalid card number",
            "invalid_card_number",
        ),
        (
            card(json!({"cardNumber": "4242abcd42424242"})),
            "Invalid card number",
            "invalid_card_number",
        ),
        (
            card(json!({"cardNumber": ["4242"]})),
            "Invalid value for cardNumber",
            "invalid_field",
        ),
        (
            card(json!({"expirationMonth": null})),
            "Missing required field: expirationMonth",
            "missing_field",
        ),
        (
            card(json!({"expirationMonth": "13"})),
            "Invalid value for expirationMonth",
            "invalid_field",
        ),
        (
            card(json!({"expirationMonth": "0"})),
            "Invalid value for expirationMonth",
            "invalid_field",
        ),
        (
            card(json!({"expirationYear": null})),
            "Missing required field: expirationYear",
            "missing_field",
        ),
        (
            card(json!({"expirationYear": "203"})),
            "Invalid value for expirationYear",
            "invalid_field",
        ),
        (
            card(json!({"expirationYear": "2020"})),
            "Card has expired",
            "card_expired",
        ),
        (
            card(json!({"expirationMonth": "01", "expirationYear": "26"})),
            "Card has expired",
            "card_expired",
        ),
        (
            card(json!({"cvv": "12"})),
            "Invalid value for cvv",
            "invalid_field",
        ),
        (
            card(json!({"cvv": "1234"})),
            "Invalid value for cvv",
            "invalid_field",
        ),
        (
            card(json!({"cvv": null, "cvc": "12a"})),
            "Invalid value for cvc",
            "invalid_field",
        ),
        (
            card(json!({"firstName": 5})),
            "Invalid value for firstName",
            "invalid_field",
        ),
        (
            json!({"type": "card", "data": {"cardNumber": AMEX, "expirationMonth": "12", "expirationYear": "2034", "cvv": "739"}}),
            "Invalid value for cvv",
            "invalid_field",
        ),
        (
            json!({"type": "bank", "data": {"routingNumber": "110000000"}}),
            "Missing required field: accountNumber",
            "missing_field",
        ),
        (
            json!({"type": "bank", "data": {"accountNumber": "12"}}),
            "Invalid value for accountNumber",
            "invalid_field",
        ),
        (
            json!({"type": "bank", "data": {"accountNumber": ACCOUNT}}),
            "Missing required field: routingNumber",
            "missing_field",
        ),
        (
            json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000001"}}),
            "Invalid value for routingNumber",
            "invalid_field",
        ),
    ];
    for (body, message, code) in cases {
        let (status, answer) = vault.post("/tokenize", &vault.keys, &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(
            answer,
            json!({"success": false, "message": message, "data": null, "code": code}),
            "{body}"
        );
    }
    // Not JSON at all.
    let resp = vault
        .http
        .post(vault.url("/tokenize"))
        .header("X-API-Key", &vault.keys.api_key)
        .header("X-Pub-Key", &vault.keys.publishable_key)
        .header("content-type", "application/json")
        .body("{\"type\": \"card\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["message"], "Invalid JSON");
    assert_eq!(answer["code"], "invalid_body");
    assert_eq!(
        vault.token_count().await,
        0,
        "a refused request stored something"
    );
}

#[tokio::test]
async fn test_tokens_only_in_test_projects() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let card =
        json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2034", "cvc": CVC});
    let (status, body) = vault.post("/test-tokens", &vault.keys, &card).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["test_mode"], true);
    assert_eq!(body["expires_in"], "1 year (test session)");
    assert!(body["cvc_session_id"].is_string());
    assert_eq!(body["mask"]["card_number"], "424242******4242");

    let (status, body) = vault
        .post(
            "/test-tokens",
            &vault.keys,
            &json!({"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2034"}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Missing required field: cvc"))
    );

    let live = vault.create_project(&["--mode", "live"]);
    assert!(live.api_key.contains("_live_pvt_") && live.publishable_key.starts_with("pk_live_"));
    let (status, body) = vault.post("/test-tokens", &live, &card).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["message"],
        "This API key does not have permission for this operation"
    );
}

#[tokio::test]
async fn deduplication_returns_the_existing_token() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dedup = vault.create_project(&["--deduplicate"]);
    let card = |year: &str| json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": year}});
    let (_, first) = vault.post("/tokenize", &dedup, &card("2034")).await;
    let (status, second) = vault.post("/tokenize", &dedup, &card("2032")).await;
    assert_eq!(status, 201);
    assert_eq!(first["deduplicated"], false);
    assert_eq!(second["deduplicated"], true);
    assert_eq!(first["token"], second["token"]);
    assert_eq!(second["data"]["expiration_year"], "2032");
    let fp = first["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 64);
    assert_eq!(second["fingerprint"], fp);
    // The refreshed expiry is what the proxy now sends.
    let (status, _) = vault
        .post(
            "/proxy/transaction",
            &dedup,
            &json!({"token": first["token"], "proxy_url": stub.url("/echo"), "request_data": {"y": "${expirationYear}"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stub.last().json(), json!({"y": "2032"}));
    // Another project keeps its own tokens, and the default project has no deduplication.
    let (_, other) = vault.post("/tokenize", &vault.keys, &card("2034")).await;
    let (_, other2) = vault.post("/tokenize", &vault.keys, &card("2034")).await;
    assert_ne!(other["token"], first["token"]);
    assert_ne!(other["token"], other2["token"]);
}
