use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn proxy_injects_card_data_and_wraps_the_processor_answer() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let resp = vault
        .http
        .post(vault.url("/proxy/transaction"))
        .header("X-API-Key", &vault.keys.api_key)
        .json(&json!({
            "token": token,
            "cvc_session_id": session,
            "proxy_url": stub.url("/charge?expand=source"),
            "request_data": {
                "amount": 2000,
                "currency": "usd",
                "source": {
                    "number": "${cardNumber}",
                    "exp_month": "${expirationMonth}",
                    "exp_year": "${expirationYear}",
                    "exp_year2": "${expirationYear2}",
                    "cvc": "${cvv}",
                    "name": "${firstName} Q.",
                },
                "tags": ["${expirationYear4}", 1.5, null, false],
            },
            "http_headers": {"Authorization": "Bearer sk_test_abc", "Idempotency-Key": "order-1"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream-status"], "200");
    let body: serde_json::Value = resp.json().await.unwrap();

    let sent = stub.last();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/charge?expand=source");
    assert_eq!(sent.header("authorization"), Some("Bearer sk_test_abc"));
    assert_eq!(sent.header("idempotency-key"), Some("order-1"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.header("x-api-key"),
        None,
        "the vault key leaked to the processor"
    );
    assert_eq!(
        sent.json(),
        json!({
            "amount": 2000,
            "currency": "usd",
            "source": {"number": VISA, "exp_month": "07", "exp_year": "2031", "exp_year2": "31", "cvc": CVC, "name": "Zebulon Q."},
            "tags": ["2031", 1.5, null, false],
        })
    );

    assert_eq!(body["success"], true);
    let upstream = &body["proxy_response"];
    assert_eq!(upstream["status_code"], 200);
    assert_eq!(
        upstream["body"],
        json!({"id": "ch_123", "object": "charge", "status": "succeeded"})
    );
    assert_eq!(upstream["headers"]["x-stub"], "yes");
    assert_eq!(upstream["headers"]["content-type"], "application/json");
    assert!(
        upstream["headers"].get("set-cookie").is_none(),
        "Set-Cookie must be dropped"
    );
}

#[tokio::test]
async fn a_processor_decline_is_still_a_successful_proxy_call() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/decline"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["proxy_response"]["status_code"], 402);
    assert_eq!(
        body["proxy_response"]["body"]["error"]["code"],
        "card_declined"
    );
}

#[tokio::test]
async fn methods_text_bodies_and_non_json_answers() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    for method in ["PUT", "PATCH", "DELETE", "get"] {
        let (status, body) = vault
            .proxy(&json!({"token": token, "proxy_url": stub.url("/text"), "http_method": method, "request_data": {"a": 1}}))
            .await;
        assert_eq!(status, 200, "{method}: {body}");
        assert_eq!(stub.last().method, method.to_ascii_uppercase());
        assert_eq!(body["proxy_response"]["body"], "plain ok");
    }
    // A string request_data under a non-JSON content type is sent as written, values verbatim.
    let (status, _) = vault
        .proxy(&json!({
            "token": token,
            "proxy_url": stub.url("/echo"),
            "request_data": "PAN=${cardNumber};EXP=${expirationMonth}${expirationYear2}",
            "http_headers": {"Content-Type": "text/plain"},
        }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(stub.last().body).unwrap(),
        format!("PAN={VISA};EXP=0731")
    );
}

#[tokio::test]
async fn echoed_card_data_is_masked_before_it_reaches_the_caller() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({
            "token": token,
            "cvc_session_id": session,
            "proxy_url": stub.url("/echo"),
            "request_data": {"number": "${cardNumber}", "cvc": "${cvv}", "note": "card ${cardNumber} ok", "amount": 739},
        }))
        .await;
    assert_eq!(status, 200);
    let echoed = &body["proxy_response"]["body"];
    assert_eq!(echoed["number"], "424242******4242");
    assert_eq!(echoed["cvc"], "***");
    assert_eq!(echoed["note"], "card 424242******4242 ok");
    assert_eq!(
        echoed["amount"], 739,
        "numbers that merely equal the CVC are data, not echoes"
    );
    assert!(!body.to_string().contains(VISA));
}

#[tokio::test]
async fn bank_tokens_proxy_account_values() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (_, tok) = vault
        .post("/tokenize", &vault.keys, &json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000"}}))
        .await;
    let (status, body) = vault
        .proxy(&json!({
            "token": tok["token"],
            "proxy_url": stub.url("/echo"),
            "request_data": {"account": "${accountNumber}", "routing": "${routingNumber}"},
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stub.last().json(),
        json!({"account": ACCOUNT, "routing": "110000000"})
    );
    assert_eq!(body["proxy_response"]["body"]["account"], "********6789");
    // A card placeholder on a bank token is a template error.
    let (status, body) = vault
        .proxy(&json!({"token": tok["token"], "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_template"))
    );
    assert_eq!(body["message"], "Invalid value for request_data");
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/redirect"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["proxy_response"]["status_code"], 302);
    assert_eq!(
        body["proxy_response"]["headers"]["location"],
        "http://127.0.0.1:9/internal"
    );
    assert_eq!(stub.count("/redirect"), 1);
}

#[tokio::test]
async fn tricks_to_read_an_echo_back_whole_are_defeated() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = vault.visa().await;
    // A digit glued to the card number: the echo is still masked.
    let (status, body) = vault
        .proxy(&json!({"token": token, "proxy_url": stub.url("/echo"), "request_data": {"d": "0${cardNumber}", "e": "${cardNumber}${cardNumber}"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(VISA), "{body}");
    assert_eq!(body["proxy_response"]["body"]["d"], "0424242******4242");
    // Short secrets must be whole values, where an echo can be recognised.
    for data in [
        json!({"c": "cvc ${cvv}"}),
        json!({"c": "0${cvv}"}),
        json!({"c": "${expirationMonth}${cvv}"}),
    ] {
        let (status, body) = vault
            .proxy(&json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/echo"), "request_data": data}))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_template")),
            "{data}"
        );
    }
    // A short account number as a whole value is masked in the echo.
    let (_, bank) = vault
        .post("/tokenize", &vault.keys, &json!({"type": "bank", "data": {"accountNumber": "12345", "routingNumber": "110000000"}}))
        .await;
    let (status, body) = vault
        .proxy(&json!({"token": bank["token"], "proxy_url": stub.url("/echo"), "request_data": {"account": "${accountNumber}", "amount": "12345x"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().json()["account"], "12345");
    assert_eq!(body["proxy_response"]["body"]["account"], "*2345");
    let (status, body) = vault
        .proxy(&json!({"token": bank["token"], "proxy_url": stub.url("/echo"), "request_data": {"account": "00${accountNumber}"}}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_template"))
    );
    // The CVC session survived the refused calls.
    let (status, _) = vault
        .proxy(&json!({"token": token, "cvc_session_id": session, "proxy_url": stub.url("/echo"), "request_data": {"c": "${cvv}"}}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_json_body_sent_without_its_content_type_is_still_json_mode() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    // What `curl -d '{…}'` sends: a JSON object labelled as a form.
    let body = json!({"token": token, "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}});
    let resp = vault
        .http
        .post(vault.url("/proxy/transaction"))
        .header("X-API-Key", &vault.keys.api_key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stub.last().json(), json!({"n": VISA}));
}

#[tokio::test]
async fn calls_at_once_each_send_their_own_card_and_find_no_deleted_or_foreign_token() {
    // On PostgreSQL the token reads of calls in flight at once go as one statement: each call
    // must still get its own card, nothing of a token that is gone or another project's, and
    // no call may fail for another's.
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let mut live = Vec::new();
    for number in [VISA, MASTERCARD, AMEX] {
        live.push((vault.token_in(&vault.keys, number).await, number));
    }
    let deleted = vault.token_in(&vault.keys, VISA).await;
    let (status, body) =
        crate::tokens_lifecycle::delete_token(&vault, &vault.keys.api_key, &deleted).await;
    assert!((200..300).contains(&status), "{status} {body}");
    let other = vault.create_project(&[]);
    let foreign = vault.token_in(&other, MASTERCARD).await;

    let vault = &vault;
    // An id PostgreSQL cannot even take as text (a NUL), which in a group's statement would
    // fail every other read of that group with it.
    let unreadable = format!("{deleted}\u{0}");
    let calls = (0..40).map(|i| {
        let token = match (i % 5, i % 10) {
            (3, _) => deleted.clone(),
            (4, 4) => foreign.clone(),
            (4, _) => unreadable.clone(),
            (k, _) => live[k].0.clone(),
        };
        let body = json!({
            "token": token,
            "proxy_url": stub.url(&format!("/charge/{i}/")),
            "request_data": {"call": i, "number": "${cardNumber}"},
        });
        async move { (i, vault.proxy(&body).await) }
    });
    for (i, (status, body)) in futures_join_all(calls).await {
        match i % 5 {
            3 | 4 => {
                assert_eq!(status, 404, "call {i}: {body}");
                assert_eq!(body["code"], "token_not_found", "call {i}");
                assert_eq!(stub.count(&format!("/charge/{i}/")), 0, "call {i}");
            }
            k => assert_eq!(status, 200, "call {i} ({}): {body}", live[k].1),
        }
    }
    for sent in stub.requests() {
        let body = sent.json();
        let i = body["call"].as_u64().unwrap() as usize;
        assert_eq!(sent.path, format!("/charge/{i}/"));
        assert_eq!(body["number"], live[i % 5].1, "call {i}");
    }
    assert_eq!(stub.requests().len(), 24);
}
