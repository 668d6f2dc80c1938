//! Every body a processor speaks: JSON-to-form, raw form, raw XML, header mode; escaping of
//! awkward holder names; scrubbing of echoes in every form.

use serde_json::{Value, json};

use crate::harness::*;

/// A holder name with every character that needs escaping somewhere, and a placeholder that
/// must be sent literally, never expanded.
const AWKWARD: &str = "O'Brien & <Sons> \"Ltd\" 100% = ünï ${cvv}";

async fn awkward_card(vault: &Vault) -> (String, String) {
    let body = vault
        .tokenize(json!({"cardNumber": VISA, "expirationMonth": "3", "expirationYear": "2032", "cvv": CVC, "lastName": AWKWARD}))
        .await;
    (
        body["token"].as_str().unwrap().to_owned(),
        body["cvc_session_id"].as_str().unwrap().to_owned(),
    )
}

fn decoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Sends a raw-mode request: `headers` plus the API key, `body` as is.
async fn raw(vault: &Vault, query: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let req = vault
        .http
        .post(vault.url(&format!("/proxy/transaction{query}")))
        .header("X-API-Key", &vault.keys.api_key)
        .body(body.to_owned());
    send_with(req, headers).await
}

#[tokio::test]
async fn json_mode_encodes_stripe_style_forms() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = awkward_card(&vault).await;
    let request = r#"{
        "token": "TOKEN", "cvc_session_id": "SESSION", "proxy_url": "URL",
        "http_headers": {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer sk_test_1"},
        "request_data": {
            "amount": 2000, "currency": "usd", "capture": true, "application_fee": 12.50,
            "card": {"number": "${cardNumber}", "exp_month": "${expirationMonth}", "exp_year": "${expirationYear}", "cvc": "${cvv}", "name": "${lastName}"},
            "metadata": {"order_id": "A-1", "note": null},
            "items": [{"price": "price_1", "quantity": 2}, {"price": "price_2"}]
        }
    }"#
    .replace("TOKEN", &token)
    .replace("SESSION", &session)
    .replace("URL", &stub.url("/charge"));
    let request: Value = serde_json::from_str(&request).unwrap();
    let (status, body) = vault.proxy(&request).await;
    assert_eq!(status, 200, "{body}");
    let sent = stub.last();
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let expected: Vec<(String, String)> = [
        ("amount", "2000"),
        ("currency", "usd"),
        ("capture", "true"),
        ("application_fee", "12.50"),
        ("card[number]", VISA),
        ("card[exp_month]", "03"),
        ("card[exp_year]", "2032"),
        ("card[cvc]", CVC),
        ("card[name]", AWKWARD),
        ("metadata[order_id]", "A-1"),
        ("metadata[note]", ""),
        ("items[0][price]", "price_1"),
        ("items[0][quantity]", "2"),
        ("items[1][price]", "price_2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(decoded_pairs(&sent.body), expected);
    let raw = String::from_utf8(sent.body.clone()).unwrap();
    assert!(raw.starts_with("amount=2000&currency=usd&capture=true&application_fee=12.50&card[number]=4242424242424242&"), "{raw}");
}

#[tokio::test]
async fn raw_form_takes_control_values_from_headers_query_or_fields() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let form = "application/x-www-form-urlencoded";
    let template = "amount=100&card%5Bnumber%5D=%24%7BcardNumber%7D&card[cvc]=${cvv}&card[name]=${lastName}&exp=${expirationMonth}%2F${expirationYear2}";
    let expected = |body: &[u8]| {
        assert_eq!(
            decoded_pairs(body),
            vec![
                ("amount".to_owned(), "100".to_owned()),
                ("card[number]".to_owned(), VISA.to_owned()),
                ("card[cvc]".to_owned(), CVC.to_owned()),
                ("card[name]".to_owned(), AWKWARD.to_owned()),
                ("exp".to_owned(), "03/32".to_owned()),
            ]
        );
    };

    // 1. Control values in headers; the vault's own and hop-by-hop headers stay behind.
    let (token, session) = awkward_card(&vault).await;
    let url = stub.url("/charge");
    let (status, body) = raw(
        &vault,
        "",
        &[
            ("Content-Type", form),
            ("X-Token", &token),
            ("X-Proxy-URL", &url),
            ("X-CVC-Session-ID", &session),
            ("X-Proxy-Method", "PUT"),
            ("Authorization", "Bearer sk_test_1"),
            ("X-Merchant", "m-1"),
            ("Cookie", "sid=abc"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Pub-Key", &vault.keys.publishable_key),
        ],
        template,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = stub.last();
    assert_eq!(sent.method, "PUT");
    expected(&sent.body);
    assert_eq!(sent.header("content-type"), Some(form));
    assert_eq!(sent.header("authorization"), Some("Bearer sk_test_1"));
    assert_eq!(sent.header("x-merchant"), Some("m-1"));
    for own in [
        "x-api-key",
        "x-pub-key",
        "x-token",
        "x-proxy-url",
        "x-cvc-session-id",
        "x-proxy-method",
        "cookie",
        "x-forwarded-for",
    ] {
        assert_eq!(sent.header(own), None, "{own} was forwarded");
    }
    assert_eq!(body["proxy_response"]["status_code"], 200);

    // 2. Control values in the query string.
    let (token, session) = awkward_card(&vault).await;
    let query = format!(
        "?token={token}&cvc_session_id={session}&proxy_url={}",
        form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let (status, body) = raw(&vault, &query, &[("Content-Type", form)], template).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.last().method, "POST");
    expected(&stub.last().body);

    // 3. Control values as form fields, removed before forwarding.
    let (token, session) = awkward_card(&vault).await;
    let with_fields = format!(
        "token={token}&{template}&cvc_session_id={session}&proxy_url={}",
        form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let (status, body) = raw(&vault, "", &[("Content-Type", form)], &with_fields).await;
    assert_eq!(status, 200, "{body}");
    expected(&stub.last().body);
}

#[tokio::test]
async fn raw_xml_is_substituted_with_xml_escaping() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = awkward_card(&vault).await;
    let soap = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<createTransactionRequest><payment><creditCard holder="${lastName}">
<cardNumber>${cardNumber}</cardNumber><expirationDate>${expirationYear4}-${expirationMonth}</expirationDate><cardCode>${cvv}</cardCode>
</creditCard></payment></createTransactionRequest></soap:Body></soap:Envelope>"#;
    let url = stub.url("/echo");
    let (status, body) = raw(
        &vault,
        &format!("?cvc_session_id={session}"),
        &[
            ("Content-Type", "text/xml; charset=utf-8"),
            ("X-Token", &token),
            ("X-Proxy-URL", &url),
            ("SOAPAction", "create"),
        ],
        soap,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = stub.last();
    let escaped = "O&apos;Brien &amp; &lt;Sons&gt; &quot;Ltd&quot; 100% = ünï ${cvv}";
    // The CVC first: the name's literal `${cvv}` must survive.
    let expected = soap
        .replace("${cvv}", CVC)
        .replace("${lastName}", escaped)
        .replace("${cardNumber}", VISA)
        .replace("${expirationYear4}", "2032")
        .replace("${expirationMonth}", "03");
    assert_eq!(String::from_utf8(sent.body.clone()).unwrap(), expected);
    assert_eq!(sent.header("soapaction"), Some("create"));
    assert_eq!(sent.header("content-type"), Some("text/xml; charset=utf-8"));
    // The echo comes back as a string with the card data masked.
    let echoed = body["proxy_response"]["body"].as_str().unwrap();
    assert!(
        echoed.contains("<cardNumber>424242******4242</cardNumber>"),
        "{echoed}"
    );
    assert!(echoed.contains("<cardCode>***</cardCode>"), "{echoed}");
    assert!(!echoed.contains(VISA));
}

#[tokio::test]
async fn json_mode_xml_and_header_mode_json() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, _) = awkward_card(&vault).await;
    // JSON mode, XML body given as a string.
    let (status, body) = vault
        .proxy(&json!({
            "token": token, "proxy_url": stub.url("/echo"),
            "http_headers": {"Content-Type": "application/xml"},
            "request_data": "<r><n>${cardNumber}</n><h a=\"${lastName}\"/></r>",
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        String::from_utf8(stub.last().body).unwrap(),
        format!(
            "<r><n>{VISA}</n><h a=\"O&apos;Brien &amp; &lt;Sons&gt; &quot;Ltd&quot; 100% = ünï ${{cvv}}\"/></r>"
        )
    );
    // Header mode: a JSON processor body sent as is, control values in headers.
    let url = stub.url("/echo");
    let (status, body) = raw(
        &vault,
        "",
        &[
            ("Content-Type", "application/json"),
            ("X-Token", &token),
            ("X-Proxy-URL", &url),
        ],
        r#"{"card": {"number": "${cardNumber}", "name": "${lastName}"}, "amount": 10.00}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = stub.last();
    assert_eq!(
        String::from_utf8(sent.body.clone()).unwrap(),
        format!(
            r#"{{"card": {{"number": "{VISA}", "name": "O'Brien & <Sons> \"Ltd\" 100% = ünï ${{cvv}}"}}, "amount": 10.00}}"#
        )
    );
    assert_eq!(sent.json()["card"]["name"], AWKWARD);
    assert_eq!(
        body["proxy_response"]["body"]["card"]["number"],
        "424242******4242"
    );
}

#[tokio::test]
async fn raw_mode_refusals() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let (token, session) = awkward_card(&vault).await;
    let url = stub.url("/charge");
    let xml = "text/xml";
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("Content-Type", xml),
                ("X-Proxy-URL", &url),
                ("X-CVC-Session-ID", &session),
            ],
            "<a>${cvv}</a>",
            "Missing required field: token",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-CVC-Session-ID", &session),
            ],
            "<a>${cvv}</a>",
            "Missing required field: proxy_url",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-CVC-Session-ID", &session),
            ],
            "<a>${cvv}</b>",
            "Invalid XML",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-CVC-Session-ID", &session),
            ],
            "<a>${cvv}&bogus;</a>",
            "Invalid XML",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
            ],
            "<a>${cvv}</a>",
            "Missing required field: cvc_session_id",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-Card", "${cardNumber}"),
            ],
            "<a/>",
            "Invalid value for request_data",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-Proxy-Method", "TRACE"),
            ],
            "<a/>",
            "Invalid value for http_method",
        ),
        (
            vec![
                ("Content-Type", xml),
                ("X-Token", &token),
                ("X-Proxy-URL", "http://localhost/x"),
            ],
            "<a/>",
            "Invalid proxy URL",
        ),
        (
            vec![
                ("Content-Type", "text/plain"),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-CVC-Session-ID", &session),
            ],
            "${nope}",
            "Invalid value for request_data",
        ),
    ];
    for (headers, body, message) in cases {
        let (status, answer) = raw(&vault, "", &headers, body).await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some(message)),
            "{headers:?} {body}: {answer}"
        );
    }
    // A form body that is not UTF-8.
    let resp = vault
        .http
        .post(vault.url("/proxy/transaction"))
        .header("X-API-Key", &vault.keys.api_key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Token", &token)
        .header("X-Proxy-URL", &url)
        .body(vec![b'a', b'=', 0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Invalid form body"
    );
    assert_eq!(stub.count("/charge"), 0);
    // None of those consumed the session.
    let (status, _) = raw(
        &vault,
        "",
        &[
            ("Content-Type", xml),
            ("X-Token", &token),
            ("X-Proxy-URL", &url),
            ("X-CVC-Session-ID", &session),
        ],
        "<a>${cvv}</a>",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(stub.last().body).unwrap(),
        format!("<a>{CVC}</a>")
    );
}

#[tokio::test]
async fn echoes_in_every_form_are_masked() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let spaced = "4242 4242 4242 4242";
    let percent: String = VISA.bytes().map(|b| format!("%{b:02X}")).collect();
    let json_escaped: String = VISA
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    // The stub echoes what it receives, so the echoes are written into the request literally.
    let cases = [
        (
            "application/json",
            format!(
                r#"{{"a":"${{cardNumber}}","b":"{spaced}","c":"{json_escaped}","cvc":"${{cvv}}","amount":"7390"}}"#
            ),
        ),
        (
            "application/x-www-form-urlencoded",
            format!(
                "a=${{cardNumber}}&b={}&c={percent}&cvc=${{cvv}}",
                spaced.replace(' ', "+")
            ),
        ),
        (
            "text/xml",
            format!("<r><a>${{cardNumber}}</a><b>{spaced}</b><cvc>${{cvv}}</cvc></r>"),
        ),
        (
            "text/plain",
            format!(
                "card ${{cardNumber}} / {} / {percent}",
                spaced.replace(' ', "-")
            ),
        ),
    ];
    for (content_type, template) in cases {
        let (token, session) = vault.visa().await;
        let url = stub.url("/echo");
        let (status, body) = raw(
            &vault,
            "",
            &[
                ("Content-Type", content_type),
                ("X-Token", &token),
                ("X-Proxy-URL", &url),
                ("X-CVC-Session-ID", &session),
            ],
            &template,
        )
        .await;
        assert_eq!(status, 200, "{content_type}: {body}");
        let text = body["proxy_response"]["body"].to_string();
        assert!(!text.contains(VISA), "{content_type}: {text}");
        assert!(
            !text.contains(spaced) && !text.contains(&percent) && !text.contains("4242-4242"),
            "{content_type}: {text}"
        );
        assert!(!text.contains(&json_escaped), "{content_type}: {text}");
        assert!(text.contains("424242******4242"), "{content_type}: {text}");
        if content_type != "text/plain" {
            assert!(
                text.contains("***\"") || text.contains("***<") || text.contains("=***"),
                "{content_type}: {text}"
            );
            assert!(
                !text.contains(&format!("\"{CVC}\"")) && !text.contains(&format!(">{CVC}<")),
                "{content_type}: {text}"
            );
        }
    }
}
