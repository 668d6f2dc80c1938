use std::collections::BTreeSet;

use axum::response::IntoResponse;
use cardvault_core::ValidationError;
use serde_json::Value;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::api::{ApiError, BodyKind};

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

/// `(path, method)` of every operation in the document.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = document();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if HTTP_METHODS.contains(&method.as_str()) {
                routes.insert((path.clone(), method.clone()));
            }
        }
    }
    routes
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Documented without being registered in `api::router`: `/metrics` may be served on a listener
/// of its own.
const SERVED_ELSEWHERE: [(&str, &str); 1] = [("/metrics", "get")];

/// Routes registered in `api::router`, read from its source.
///
/// axum cannot list a router's routes, and a second table of routes kept by hand would be
/// one more thing to forget. So the router's own source is the one list: each
/// `.route("path", get(…).post(…))` is read from `api/mod.rs` as compiled (`include_str!`).
/// Anything this reading could miss makes the test fail instead of passing quietly: a route
/// added by `merge`, `nest`, `route_service` or `any`, or a method router built elsewhere
/// (a `.route` whose methods are not spelled out in the call).
fn registered_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../mod.rs");
    for hidden in [
        ".merge(",
        ".nest(",
        ".nest_service(",
        ".route_service(",
        "MethodFilter",
    ] {
        assert!(
            !source.contains(hidden),
            "api/mod.rs uses `{hidden}`: routes added that way are not seen by this test; \
             register them with `.route(\"path\", method(handler))`"
        );
    }
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let args = balanced_args(&source[at + ".route(".len()..]);
        let path = first_string_literal(args).expect("a route's path is a string literal");
        let methods = method_calls(args);
        assert!(
            !methods.is_empty() && !methods.contains(&"any"),
            "route {path}: spell out its methods (`get(…).post(…)`) in the `.route` call"
        );
        for method in methods {
            routes.insert((path.to_owned(), method.to_owned()));
        }
    }
    routes
}

/// The text up to the parenthesis that closes the one just opened.
fn balanced_args(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in api/mod.rs");
}

fn first_string_literal(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The method routers called in a `.route` call's arguments: `get(` or `.post(`, not a path
/// such as `tokens::delete`.
fn method_calls(args: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for method in HTTP_METHODS.iter().copied().chain(["any"]) {
        for (at, _) in args.match_indices(method) {
            let before = args[..at].chars().next_back();
            let after = args[at + method.len()..].chars().next();
            let starts_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            if starts_word && after == Some('(') {
                found.push(method);
            }
        }
    }
    found
}

#[test]
fn every_registered_route_is_documented_and_nothing_else() {
    let registered = registered_routes();
    let documented = documented_routes();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes of api::router missing from the OpenAPI document (add `#[utoipa::path]` to \
         the handler and list it in `ApiDoc`): {undocumented:?}"
    );
    let phantom: Vec<_> = documented
        .difference(&registered)
        .filter(|(path, method)| !SERVED_ELSEWHERE.contains(&(path.as_str(), method.as_str())))
        .collect();
    assert!(
        phantom.is_empty(),
        "documented routes that api::router does not register: {phantom:?}"
    );
}

#[test]
fn the_route_reader_sees_every_form_the_router_uses() {
    let args = r#""/a/{id}", get(a::read).put(a::update).delete(a::delete))"#;
    assert_eq!(first_string_literal(args), Some("/a/{id}"));
    assert_eq!(method_calls(args), vec!["get", "put", "delete"]);
    assert_eq!(
        method_calls("\"/p\",\n            delete(cvc_sessions::delete_from_query_or_body),"),
        vec!["delete"]
    );
    assert_eq!(
        balanced_args(r#""/x(", post(f(g)))).layer(y)"#),
        r#""/x(", post(f(g))"#
    );
    // The router as it is now: a parse that found nothing would make the comparison vacuous.
    assert!(registered_routes().len() >= 25);
}

/// Every way the API answers with an error, one of each variant.
fn every_error() -> Vec<ApiError> {
    let errors = vec![
        ApiError::InvalidBody(BodyKind::Json),
        ApiError::InvalidBody(BodyKind::Xml),
        ApiError::InvalidBody(BodyKind::Form),
        ApiError::Validation(ValidationError::MissingField("token")),
        ApiError::Validation(ValidationError::InvalidField("token")),
        ApiError::Validation(ValidationError::InvalidCardNumber),
        ApiError::Validation(ValidationError::CardExpired),
        ApiError::InvalidProxyUrl,
        ApiError::InvalidTemplate,
        ApiError::InvalidApiKey,
        ApiError::PermissionDenied,
        ApiError::TokenNotFound,
        ApiError::CvcSessionNotFound,
        ApiError::ClientSessionNotFound,
        ApiError::ApplicationNotFound,
        ApiError::ProjectNotFound,
        ApiError::ApplicationNameTaken,
        ApiError::IdempotencyKeyInUse,
        ApiError::IdempotencyKeyReused,
        ApiError::OwnKeyInUse,
        ApiError::BodyTooLarge,
        ApiError::RequestTimeout,
        ApiError::UriTooLong,
        ApiError::HeadersTooLarge,
        ApiError::RouteNotFound,
        ApiError::MethodNotAllowed,
        ApiError::Upstream {
            cause: "reset".into(),
            request_sent: true,
        },
        ApiError::UpstreamTimeout {
            request_sent: false,
        },
        ApiError::Unavailable("down".into()),
        ApiError::Overloaded,
        ApiError::RateLimited {
            retry_after_seconds: 7,
        },
        ApiError::InvalidApiKey.because("the X-Pub-Key header is missing"),
        ApiError::Internal("bug".into()),
    ];
    for e in &errors {
        listed(e);
    }
    errors
}

/// Adding a variant to `ApiError` breaks this match on purpose: add one of it to
/// `every_error`, so its body is checked against the document.
fn listed(e: &ApiError) {
    match e {
        ApiError::InvalidBody(_)
        | ApiError::Validation(_)
        | ApiError::InvalidProxyUrl
        | ApiError::InvalidTemplate
        | ApiError::InvalidApiKey
        | ApiError::PermissionDenied
        | ApiError::TokenNotFound
        | ApiError::CvcSessionNotFound
        | ApiError::ClientSessionNotFound
        | ApiError::ApplicationNotFound
        | ApiError::ProjectNotFound
        | ApiError::ApplicationNameTaken
        | ApiError::IdempotencyKeyInUse
        | ApiError::IdempotencyKeyReused
        | ApiError::OwnKeyInUse
        | ApiError::BodyTooLarge
        | ApiError::RequestTimeout
        | ApiError::UriTooLong
        | ApiError::HeadersTooLarge
        | ApiError::RouteNotFound
        | ApiError::MethodNotAllowed
        | ApiError::Upstream { .. }
        | ApiError::UpstreamTimeout { .. }
        | ApiError::Unavailable(_)
        | ApiError::Overloaded
        | ApiError::RateLimited { .. }
        | ApiError::Detailed { .. }
        | ApiError::Internal(_) => {}
    }
}

#[tokio::test]
async fn every_error_body_is_the_documented_envelope() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["Error"];
    let properties = schema["properties"].as_object().unwrap();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["success", "message", "data", "code"])
    );
    let documented_codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut answered = BTreeSet::new();
    for error in every_error() {
        let code = error.code();
        let response = error.into_response();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let fields = body.as_object().unwrap();
        for field in fields.keys() {
            assert!(
                properties.contains_key(field),
                "{field} is not in the Error schema"
            );
        }
        for field in &required {
            assert!(fields.contains_key(*field), "{code}: no {field}");
        }
        assert_eq!(body["success"], false);
        assert!(body["data"].is_null());
        assert!(
            documented_codes.contains(code),
            "code {code} is not in ErrorCode"
        );
        answered.insert(code);
    }
    let unanswered: Vec<_> = documented_codes
        .iter()
        .filter(|c| !answered.contains(*c))
        .collect();
    assert!(
        unanswered.is_empty(),
        "ErrorCode lists codes no error answers with: {unanswered:?}"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_the_api_s_security_schemes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &doc["components"]["securitySchemes"];
    for (name, header) in [
        ("api_key", "X-API-Key"),
        ("pub_key", "X-Pub-Key"),
        ("wax_key", "X-Wax-Key"),
    ] {
        assert_eq!(schemes[name]["type"], "apiKey");
        assert_eq!(schemes[name]["in"], "header");
        assert_eq!(schemes[name]["name"], header);
    }
    assert_eq!(schemes["metrics_token"]["scheme"], "bearer");
    // Every security requirement names a scheme that exists.
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.get(name).is_some(), "unknown scheme {name}");
                }
            }
        }
    }
}
