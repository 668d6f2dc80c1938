//! JSON mode: `{"token", "proxy_url", "request_data", "http_headers"?, "http_method"?,
//! "cvc_session_id"?, "dry_run"?}`; the outgoing body is encoded by the outgoing `Content-Type`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use cardvault_core::template::{
    Encoding, FormTemplate, JsonTemplate, JsonTemplateError, Template, UnknownPlaceholder,
};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json_fields::{Field, ProxyFields};
use super::media_type::MediaType;
use super::request::{
    BodyTemplate, ProxyRequest, UNKNOWN_PLACEHOLDER, destination, forwardable, method,
    refuse_template,
};
use crate::api::body::UniqueKeys;
use crate::api::{ApiError, BodyKind};
use crate::destinations::UrlChecks;

/// Parses a JSON-mode body, checking its fields in the order below, after the whole body is
/// known to be JSON without a repeated key.
///
/// # Errors
/// The API's 400s: missing and invalid fields, templates, the destination.
pub fn parse(bytes: &[u8], urls: &UrlChecks) -> Result<ProxyRequest, ApiError> {
    let fields = ProxyFields::read(bytes)?;
    // Built before its turn to be checked: the outgoing `Content-Type` says how to read
    // `request_data`, which must be read (and be JSON) before any field is refused.
    let headers = headers(&fields.http_headers);
    let json_document = headers
        .as_ref()
        .is_ok_and(|h| matches!(MediaType::of(h), None | Some(MediaType::Json)));
    let request_data = fields
        .request_data
        .map(|raw| RequestData::read(raw, json_document))
        .transpose()?;
    let token = match &fields.token {
        Field::Absent | Field::Null => return Err(ApiError::missing("token")),
        Field::Text(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ApiError::invalid("token")),
    };
    let proxy_url = match &fields.proxy_url {
        Field::Absent | Field::Null => return Err(ApiError::missing("proxy_url")),
        Field::Text(s) => s,
        _ => return Err(ApiError::InvalidProxyUrl),
    };
    let request_data = match request_data {
        None | Some(RequestData::Value(Value::Null)) => {
            return Err(ApiError::missing("request_data"));
        }
        Some(data) => data,
    };
    let headers = headers?;
    let method = match &fields.http_method {
        Field::Absent | Field::Null => method(None)?,
        Field::Text(s) => method(Some(s))?,
        _ => return Err(ApiError::invalid("http_method")),
    };
    let cvc_session_id = match &fields.cvc_session_id {
        Field::Absent | Field::Null => None,
        Field::Text(s) if s.trim().is_empty() => None,
        Field::Text(s) => Some(s.clone().into_owned()),
        _ => return Err(ApiError::invalid("cvc_session_id")),
    };
    let dry_run = match fields.dry_run {
        Field::Absent | Field::Null => false,
        Field::Bool(b) => b,
        _ => return Err(ApiError::invalid("dry_run")),
    };
    let url = destination(proxy_url, urls)?;
    let (body, headers) = body_template(request_data, headers)?;
    ProxyRequest::new(token, cvc_session_id, url, method, headers, body)
        .map(|request| request.with_dry_run(dry_run))
}

/// `request_data`, read into what the call uses: a JSON document bound for a JSON body
/// straight into its template, anything else into a value.
enum RequestData {
    /// The template, or (checked in its turn) the unknown placeholder it names.
    Document(Result<JsonTemplate, UnknownPlaceholder>),
    Value(Value),
}

impl RequestData {
    /// # Errors
    /// `400 Invalid JSON`: the text is not JSON as strictly as the rest of the body is read
    /// (nested as deep as the body around it allows included).
    fn read(raw: &RawValue, json_document: bool) -> Result<Self, ApiError> {
        let text = raw.get();
        if nested_deeper_than(text, MAX_REQUEST_DATA_NESTING) {
            return Err(ApiError::InvalidBody(BodyKind::Json));
        }
        if json_document && (text.starts_with('{') || text.starts_with('[')) {
            match JsonTemplate::read(text) {
                Ok(template) if template.is_object_or_array() => {
                    return Ok(Self::Document(Ok(template)));
                }
                // A number after all, read below as every other value is.
                Ok(_) => {}
                Err(JsonTemplateError::UnknownPlaceholder) => {
                    return Ok(Self::Document(Err(UnknownPlaceholder)));
                }
                Err(JsonTemplateError::InvalidJson) => {
                    return Err(ApiError::InvalidBody(BodyKind::Json));
                }
            }
        }
        match serde_json::from_str::<UniqueKeys>(text) {
            Ok(UniqueKeys(value)) => Ok(Self::Value(value)),
            Err(_) => Err(ApiError::InvalidBody(BodyKind::Json)),
        }
    }
}

/// How deep `request_data` may nest: `serde_json` reads 127 levels of arrays and objects, one
/// of them the body's own, and `request_data` is read again on its own (its text captured
/// first without that limit).
const MAX_REQUEST_DATA_NESTING: usize = 126;

/// Whether a JSON text nests arrays and objects deeper than `max`. Only a text of more than
/// twice that many bytes can.
fn nested_deeper_than(text: &str, max: usize) -> bool {
    if text.len() <= 2 * max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn headers(field: &Field<'_>) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::new();
    let pairs = match field {
        Field::Absent | Field::Null => return Ok(headers),
        Field::Object(pairs) => pairs,
        _ => return Err(ApiError::invalid("http_headers")),
    };
    for (name, value) in pairs {
        let Field::Text(value) = value else {
            return Err(ApiError::invalid("http_headers"));
        };
        refuse_template(name)?;
        refuse_template(value)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ApiError::invalid("http_headers"))?;
        // HeaderValue refuses CR, LF and NUL, so a value cannot start a second header.
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| ApiError::invalid("http_headers"))?;
        // A map has room for 32,768 entries; `append` past them panics.
        headers
            .try_append(name, value)
            .map_err(|_| ApiError::invalid("http_headers"))?;
    }
    // Usually every header may go, and the map is kept as it is (a copy is two allocations).
    if headers.keys().all(|name| forwardable(name, &headers)) {
        return Ok(headers);
    }
    let forwarded = headers
        .iter()
        .filter(|(name, _)| forwardable(name, &headers))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Ok(forwarded)
}

/// Chooses how `request_data` becomes the outgoing body, from the outgoing `Content-Type`.
fn body_template(
    request_data: RequestData,
    mut headers: HeaderMap,
) -> Result<(BodyTemplate, HeaderMap), ApiError> {
    let invalid_template = |_| ApiError::InvalidTemplate.because(UNKNOWN_PLACEHOLDER);
    let media_type = MediaType::of(&headers);
    if media_type.is_none() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let data = match request_data {
        RequestData::Document(template) => {
            return match media_type {
                None | Some(MediaType::Json) => template
                    .map(|t| (BodyTemplate::Json(t), headers))
                    .map_err(invalid_template),
                Some(_) => Err(ApiError::invalid("request_data")),
            };
        }
        RequestData::Value(data) => data,
    };
    let body = match (media_type, data) {
        (None | Some(MediaType::Json), data) => json_body(data)?,
        (Some(MediaType::Form), Value::String(text)) => BodyTemplate::text(
            Template::parse_form(&text).map_err(invalid_template)?,
            Encoding::Form,
            &text,
        )?,
        (Some(MediaType::Form), data @ (Value::Object(_) | Value::Array(_))) => {
            BodyTemplate::Form(FormTemplate::from_json(&data).map_err(invalid_template)?)
        }
        (Some(MediaType::Xml), Value::String(text)) => BodyTemplate::text(
            Template::parse(&text).map_err(invalid_template)?,
            Encoding::Xml,
            &text,
        )?,
        (Some(MediaType::Other), Value::String(text)) => BodyTemplate::text(
            Template::parse(&text).map_err(invalid_template)?,
            Encoding::Raw,
            &text,
        )?,
        (Some(_), _) => return Err(ApiError::invalid("request_data")),
    };
    Ok((body, headers))
}

/// A JSON body's `request_data` that is no document (documents were read into their
/// templates, [`RequestData::read`]).
fn json_body(data: Value) -> Result<BodyTemplate, ApiError> {
    match data {
        // A string is a JSON document the caller serialized itself; values land in its strings.
        Value::String(text) => Template::parse(&text)
            .map(|template| BodyTemplate::Text {
                template,
                encoding: Encoding::Json,
            })
            .map_err(|_| ApiError::InvalidTemplate.because(UNKNOWN_PLACEHOLDER)),
        _ => Err(ApiError::invalid("request_data")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cardvault_core::destination::DestinationRules;

    use super::*;
    use crate::api::proxy::request::BodyTemplate;

    const URL: &str = "https://pay.example/v1/charges";

    fn code(body: &str) -> &'static str {
        match parse(
            body.as_bytes(),
            &UrlChecks::new(DestinationRules::default(), Duration::ZERO),
        ) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn the_whole_body_is_json_before_any_field_is_refused() {
        for body in [
            // A key repeated inside request_data, with the token missing.
            r#"{"proxy_url": "x", "request_data": {"a": 1, "a": 2}}"#,
            // ... bound for a form body, or beside headers that are refused.
            r#"{"request_data": {"a": 1, "a": 2}, "http_headers": {"Content-Type": "application/x-www-form-urlencoded"}}"#,
            r#"{"request_data": {"a": 1, "a": 2}, "http_headers": 7}"#,
            r#"{"request_data": "\ud800", "token": 1}"#,
            r#"{"request_data": ["${nope}", {"b": 1, "b": 2}]}"#,
        ] {
            assert_eq!(code(body), "invalid_body", "{body}");
        }
    }

    #[test]
    fn request_data_nests_as_deep_as_the_body_around_it_allows() {
        for depth in 124..=130 {
            let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body =
                format!(r#"{{"token": "tok_1", "proxy_url": "{URL}", "request_data": {data}}}"#);
            let whole_body_is_json = serde_json::from_str::<Value>(&body).is_ok();
            assert_eq!(code(&body) != "invalid_body", whole_body_is_json, "{depth}");
        }
        assert!(!nested_deeper_than(r#"["[[[[[[[", "\"{{{{{{{{"]"#, 2));
        assert!(nested_deeper_than(r#"[{"a": [1, [2]]}, "]]]]"]"#, 3));
    }

    #[test]
    fn more_headers_than_a_header_map_holds_are_refused_not_a_panic() {
        let pairs: Vec<String> = (0..40_000).map(|n| format!(r#""h{n}": "v""#)).collect();
        let body = format!(
            r#"{{"token": "tok_1", "proxy_url": "{URL}", "request_data": {{}}, "http_headers": {{{}}}}}"#,
            pairs.join(",")
        );
        assert_eq!(code(&body), "invalid_field");
    }

    #[test]
    fn fields_are_refused_in_their_order() {
        let cases = [
            (r#"{"request_data": {"a": "${nope}"}}"#, "missing_field"),
            (
                r#"{"token": "tok_1", "proxy_url": 5, "request_data": {"a": "${nope}"}}"#,
                "invalid_proxy_url",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "ftp://x", "request_data": {"a": "${nope}"}}"#,
                "invalid_proxy_url",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "ftp://x", "request_data": {"a": "${nope}"}, "http_headers": 1, "http_method": 2, "cvc_session_id": 3, "dry_run": "yes"}"#,
                "invalid_field",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": {"a": "${nope}"}, "http_headers": {"X-A": "${cardNumber}"}}"#,
                "invalid_template",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": {"a": "${nope}"}, "http_method": "TRACE", "cvc_session_id": 3}"#,
                "invalid_field",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": {"a": "${nope}"}, "dry_run": "yes"}"#,
                "invalid_field",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": {"a": "${nope}"}}"#,
                "invalid_template",
            ),
            // What serde_json's `Value` reads as a number is no JSON document to send.
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": {"$serde_json::private::Number": "12"}}"#,
                "invalid_field",
            ),
            (
                r#"{"token": "tok_1", "proxy_url": "https://pay.example/x", "request_data": null}"#,
                "missing_field",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(code(body), expected, "{body}");
        }
    }

    #[test]
    fn a_json_document_is_sent_as_serde_json_writes_its_value() {
        let data = r#"{"amount": 0.10, "big": 18446744073709551616, "s": "\u00e9", "n": "${cardNumber}", "k": [true, null, {}]}"#;
        let body = format!(r#"{{"token": "tok_1", "proxy_url": "{URL}", "request_data": {data}}}"#);
        let request = parse(
            body.as_bytes(),
            &UrlChecks::new(DestinationRules::default(), Duration::ZERO),
        )
        .unwrap();
        let BodyTemplate::Json(template) = &request.body else {
            panic!("a JSON body");
        };
        let mut values = cardvault_core::template::Substitutions::default();
        values.set(
            cardvault_core::template::Placeholder::CardNumber,
            cardvault_core::secret::SecretString::new("4242424242424242".into()),
        );
        assert_eq!(
            template.render_bytes(&values).unwrap(),
            r#"{"amount":0.10,"big":18446744073709551616,"s":"é","n":"4242424242424242","k":[true,null,{}]}"#.as_bytes()
        );
        assert_eq!(
            request.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        // Without a placeholder, the bytes are serde_json's own serialization of the value.
        let data = r#"{"z": [1.50, -0, 1e400, "\ud83d\ude00\u0000"], "a": {"k": "v\"\\/"}}"#;
        let body = format!(r#"{{"token": "tok_1", "proxy_url": "{URL}", "request_data": {data}}}"#);
        let request = parse(
            body.as_bytes(),
            &UrlChecks::new(DestinationRules::default(), Duration::ZERO),
        )
        .unwrap();
        let BodyTemplate::Json(template) = &request.body else {
            panic!("a JSON body");
        };
        assert_eq!(
            template.render_bytes(&values).unwrap(),
            serde_json::to_vec(&serde_json::from_str::<Value>(data).unwrap()).unwrap()
        );
    }
}
