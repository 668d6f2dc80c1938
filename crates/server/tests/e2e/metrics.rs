//! `GET /metrics`: behind the bearer token on the main listener, open on a listener of its own;
//! the series a tokenize and a proxy call leave; and nothing secret in any of it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::exposition::Exposition;
use crate::harness::*;

const TOKEN: &str = "metrics-e2e-token-7c1d44b0aa";
const STAGES: [&str; 9] = [
    "auth",
    "destination",
    "token_load",
    "resolve",
    "cvc",
    "render",
    "upstream",
    "scrub",
    "audit",
];

fn requests(m: &Exposition, route: &str, method: &str, status: &str) -> f64 {
    m.value(
        "cardvault_http_requests_total",
        &[("route", route), ("method", method), ("status", status)],
    )
    .unwrap_or(0.0)
}

fn processor(m: &Exposition, destination: &str, outcome: &str) -> f64 {
    m.value(
        "cardvault_processor_responses_total",
        &[("destination", destination), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn charge(token: &str, session: Option<&str>, url: &str) -> Value {
    let mut body = json!({
        "token": token,
        "proxy_url": url,
        "request_data": {"number": "${cardNumber}", "exp": "${expirationMonth}"},
    });
    if let Some(session) = session {
        body["cvc_session_id"] = json!(session);
        body["request_data"]["cvc"] = json!("${cvv}");
    }
    body
}

async fn mint_client_session(vault: &Vault) {
    let (status, body) = send_with(
        vault
            .http
            .post(vault.url("/collect/sessions"))
            .header("X-API-Key", &vault.keys.api_key)
            .json(&json!({"tokenization_session_id": "checkout-metrics"})),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn the_main_listener_serves_metrics_only_with_the_bearer_token() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_METRICS_TOKEN", TOKEN)]).await;
    let get = || vault.http.get(vault.url("/metrics"));

    let refused = get().send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "invalid_api_key", "{body}");
    assert_eq!(body["message"], "Invalid API key", "{body}");
    let wrong_same_length = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    for authorization in [
        format!("Bearer {wrong_same_length}"),
        format!("Bearer {METRICS_TOKEN}"),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer ".to_owned(),
    ] {
        let (status, body) = send_with(get(), &[("Authorization", &authorization)]).await;
        assert_eq!(status, 401, "{authorization}: {body}");
    }

    let answer = get().bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        answer.headers()
    );
    let text = answer.text().await.unwrap();
    let parsed = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The refusals above were counted, under the route and never with the header's value.
    assert_eq!(requests(&parsed, "/metrics", "GET", "401"), 6.0, "{text}");
    // Capacity counters are there from the start, at zero.
    assert_eq!(
        parsed.value("cardvault_load_shed_total", &[("reason", "in_flight")]),
        Some(0.0),
        "{text}"
    );

    // With metrics off there is no such route.
    let off = Vault::start_with(&stub, &[("CARDVAULT_METRICS_TOKEN", "")]).await;
    let (status, body) = send_with(
        off.http.get(off.url("/metrics")),
        &[("Authorization", &format!("Bearer {METRICS_TOKEN}"))],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found", "{body}");
}

#[tokio::test]
async fn requests_proxy_stages_processor_answers_and_gauges_are_exported() {
    let stub = Stub::start().await;
    // Project settings uncached, so the allowlist set below applies to the next call.
    let vault = Vault::start_with(&stub, &[("CARDVAULT_CACHE_TTL_MS", "0")]).await;
    let (first, _) = vault.visa().await;
    mint_client_session(&vault).await;

    let before = vault.metrics().await;
    // Gauges read at the scrape: one live token under data key 1, so rotation is done.
    assert_eq!(
        before.value("cardvault_sealed_records", &[("version", "1")]),
        Some(1.0)
    );
    assert_eq!(
        before.value("cardvault_key_rotation_records_done", &[]),
        Some(1.0)
    );
    assert_eq!(
        before.value("cardvault_key_rotation_records_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        before.value("cardvault_client_sessions_live", &[]),
        Some(1.0)
    );
    let pool_max = before
        .value("cardvault_db_pool_max_connections", &[])
        .unwrap();
    assert!(pool_max >= 1.0, "{pool_max}");
    let idle = before
        .value("cardvault_db_pool_connections", &[("state", "idle")])
        .unwrap();
    let in_use = before
        .value("cardvault_db_pool_connections", &[("state", "in_use")])
        .unwrap();
    assert!(idle + in_use <= pool_max, "{idle} + {in_use} > {pool_max}");
    // CVC sessions are counted where the vault holds them itself, in its memory.
    let cvc_live = before.value("cardvault_cvc_sessions_live", &[]);
    if vault.backend.redis_url.is_some() {
        assert_eq!(cvc_live, None);
    } else {
        assert_eq!(cvc_live, Some(1.0));
    }

    let second = vault
        .tokenize(json!({"cardNumber": MASTERCARD, "expirationMonth": "3", "expirationYear": "2032", "cvv": CVC}))
        .await;
    let token = second["token"].as_str().unwrap();
    let session = second["cvc_session_id"].as_str().unwrap();
    let (status, body) = vault
        .proxy(&charge(token, Some(session), &stub.url("/charge")))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send_with(vault.http.get(vault.url("/no/such/route")), &[]).await;
    assert_eq!(status, 404);
    let after = vault.metrics().await;

    let delta = |route: &str, method: &str, status: &str| {
        requests(&after, route, method, status) - requests(&before, route, method, status)
    };
    assert_eq!(delta("/tokenize", "POST", "201"), 1.0);
    assert_eq!(delta("/proxy/transaction", "POST", "200"), 1.0);
    assert_eq!(delta("unmatched", "GET", "404"), 1.0);
    // The scrape `before` itself, counted once it was answered.
    assert_eq!(delta("/metrics", "GET", "200"), 1.0);
    assert!(
        after
            .value(
                "cardvault_http_request_duration_seconds_count",
                &[("route", "/proxy/transaction"), ("method", "POST")]
            )
            .unwrap()
            >= 1.0
    );
    for stage in STAGES {
        let count = after
            .value("cardvault_proxy_stage_seconds_count", &[("stage", stage)])
            .unwrap_or(0.0);
        assert!(count >= 1.0, "stage {stage} was not timed");
        assert_eq!(
            after.family_type("cardvault_proxy_stage_seconds_bucket"),
            Some("histogram")
        );
    }
    // No allowlist applied: the destination is `other`.
    assert_eq!(processor(&after, "other", "2xx"), 1.0);
    assert!(
        after
            .value("cardvault_cvc_sessions_created_total", &[])
            .unwrap()
            >= 2.0
    );

    // A project allowlist: the matching pattern's host part is the label (the path part is not).
    let dir = vault.data_dir();
    let out = vault
        .cli()
        .args([
            "project",
            "allow",
            "--data-dir",
            dir.to_str().unwrap(),
            "--project",
            &vault.keys.project_id,
            "localhost/decline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = vault
        .proxy(&charge(&first, None, &stub.url("/decline")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["proxy_response"]["status_code"], 402, "{body}");
    let last = vault.metrics().await;
    assert_eq!(processor(&last, "localhost", "4xx"), 1.0);
    assert_eq!(processor(&last, "other", "2xx"), 1.0);
    assert_eq!(
        last.label_values("cardvault_processor_responses_total", "destination"),
        ["localhost", "other"]
    );
}

#[tokio::test]
async fn metrics_on_their_own_address_need_no_token() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(
        &stub,
        &[
            ("CARDVAULT_METRICS_TOKEN", ""),
            ("CARDVAULT_METRICS_LISTEN", "127.0.0.1:0"),
            ("CARDVAULT_DESTINATION_ALLOWLIST", "localhost, *.stripe.com"),
        ],
    )
    .await;
    let mut addr = None;
    let logged = eventually(Duration::from_secs(10), || {
        addr = vault.logs().lines().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            (line["message"] == "metrics listening")
                .then(|| line["addr"].as_str().map(str::to_owned))?
        });
        addr.is_some()
    })
    .await;
    assert!(logged, "no `metrics listening` line:\n{}", vault.logs());
    let metrics_url = |path: &str| format!("http://{}{path}", addr.as_deref().unwrap());

    // The main listener has no /metrics without a token.
    let (status, _) = send_with(vault.http.get(vault.url("/metrics")), &[]).await;
    assert_eq!(status, 404);
    // The metrics listener serves /metrics alone.
    let (status, body) = send_with(vault.http.get(metrics_url("/tokenize")), &[]).await;
    assert_eq!(status, 404, "{body}");

    let (token, _) = vault.visa().await;
    let (status, body) = vault
        .proxy(&charge(&token, None, &stub.url("/charge")))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = vault
        .http
        .get(metrics_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let parsed = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The server-wide rule that admitted the call names it.
    assert_eq!(processor(&parsed, "localhost", "2xx"), 1.0, "{text}");
    assert_eq!(requests(&parsed, "/proxy/transaction", "POST", "200"), 1.0);
    assert_metrics_clean(&text, &vault.keys);
}

#[tokio::test]
async fn no_card_data_key_token_or_url_reaches_the_metrics() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_METRICS_TOKEN", TOKEN)]).await;
    let (token, session) = vault.visa().await;
    let proxy_url = stub.url("/charge?order=metrics-scan-8d2f&customer=cus_Q9xZ");

    // JSON mode, with the CVC.
    let (status, body) = vault
        .proxy(&charge(&token, Some(&session), &proxy_url))
        .await;
    assert_eq!(status, 200, "{body}");
    // Raw mode: token and URL in headers.
    let (status, body) = send_with(
        vault
            .http
            .post(vault.url("/proxy/transaction"))
            .header("X-API-Key", &vault.keys.api_key)
            .header("X-Token", &token)
            .header("X-Proxy-URL", &proxy_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("card=${cardNumber}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Values in paths and refused calls: a token in a path, a card number in an unknown path,
    // an unknown key, a refused destination.
    let paths = [
        format!("/tokens/{token}"),
        format!("/lookup/{VISA}"),
        format!("/proxy/delete-cvc-session/{session}"),
    ];
    for path in &paths {
        let (status, _) = send_with(
            vault.http.get(vault.url(path)),
            &[("X-API-Key", &vault.keys.api_key)],
        )
        .await;
        assert!(status < 500, "{path}: {status}");
    }
    let wrong_key = "key_metrics_test_pvt_0000deadbeef0000";
    let (status, _) = send_with(
        vault
            .http
            .post(vault.url("/tokenize"))
            .header("X-API-Key", wrong_key)
            .json(&json!({"type": "card", "data": {"cardNumber": MASTERCARD}})),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    // Refused before any I/O: not https.
    let refused_url = format!("http://refused.example/pay?pan={VISA}");
    let (status, _) = vault.proxy(&charge(&token, None, &refused_url)).await;
    assert_eq!(status, 400);

    let (status, text) = vault.scrape().await;
    assert_eq!(status, 200, "{text}");
    let parsed = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for secret in [
        VISA,
        VISA_SPACED,
        MASTERCARD,
        HOLDER_FIRST,
        token.as_str(),
        session.as_str(),
        vault.keys.api_key.as_str(),
        wrong_key,
        TOKEN,
        proxy_url.as_str(),
        "metrics-scan-8d2f",
        "cus_Q9xZ",
        "/charge",
        "refused.example",
        "/lookup",
    ] {
        assert!(
            !text.contains(secret),
            "the metrics contain {secret:?}:\n{text}"
        );
    }
    for sample in &parsed.samples {
        for (label, value) in &sample.labels {
            assert!(
                [
                    "route",
                    "method",
                    "status",
                    "stage",
                    "destination",
                    "outcome",
                    "reason",
                    "class",
                    "state",
                    "version",
                    "le",
                    "quantile",
                ]
                .contains(&label.as_str()),
                "unexpected label {label}: {sample:?}"
            );
            assert_ne!(value, CVC, "{sample:?}");
            // Short digit strings are checked in labels only: sample values are numbers.
            assert!(!value.contains("424242"), "{sample:?}");
        }
    }
    // Routes are the templates that matched, or `unmatched`.
    let routes = parsed.label_values("cardvault_http_requests_total", "route");
    let expected = [
        "/proxy/transaction",
        "/tokenize",
        "/tokens/{token}",
        "unmatched",
    ];
    for route in expected {
        assert!(
            routes.iter().any(|r| r == route),
            "{route} missing: {routes:?}"
        );
    }
    // A method the route does not serve (405) may or may not be counted under its template.
    assert!(
        routes
            .iter()
            .all(|r| expected.contains(&r.as_str()) || r == "/proxy/delete-cvc-session/{id}"),
        "{routes:?}"
    );
    assert_metrics_clean(&text, &vault.keys);
}
