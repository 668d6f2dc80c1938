//! JSON mode: `{"token", "proxy_url", "request_data", "http_headers"?, "http_method"?,
//! "cvc_session_id"?, "dry_run"?}`; the outgoing body is encoded by the outgoing `Content-Type`.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use cardvault_core::destination::DestinationRules;
use cardvault_core::template::{Encoding, FormTemplate, JsonTemplate, Template};
use serde_json::{Map, Value};

use super::media_type::MediaType;
use super::request::{
    BodyTemplate, ProxyRequest, UNKNOWN_PLACEHOLDER, destination, forwardable, method,
    refuse_template,
};
use crate::api::ApiError;
use crate::api::body::json_object;

/// Parses a JSON-mode body, checking fields in the order API.md lists them.
///
/// # Errors
/// The API's 400s: missing and invalid fields, templates, the destination.
pub fn parse(bytes: &[u8], rules: &DestinationRules) -> Result<ProxyRequest, ApiError> {
    let mut body = json_object(bytes)?;
    let token = required_string(&body, "token")?;
    let proxy_url = match body.get("proxy_url") {
        None | Some(Value::Null) => return Err(ApiError::missing("proxy_url")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::InvalidProxyUrl),
    };
    // Taken out, not copied: the template is built from it and the rest is read by name.
    let request_data = match body.remove("request_data") {
        None | Some(Value::Null) => return Err(ApiError::missing("request_data")),
        Some(v) => v,
    };
    let headers = headers(body.get("http_headers"))?;
    let method = match body.get("http_method") {
        None | Some(Value::Null) => method(None)?,
        Some(Value::String(s)) => method(Some(s))?,
        Some(_) => return Err(ApiError::invalid("http_method")),
    };
    let cvc_session_id = match body.get("cvc_session_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid("cvc_session_id")),
    };
    let dry_run = match body.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("dry_run")),
    };
    let url = destination(&proxy_url, rules)?;
    let (body, headers) = body_template(request_data, headers)?;
    ProxyRequest::new(token, cvc_session_id, url, method, headers, body)
        .map(|request| request.with_dry_run(dry_run))
}

fn required_string(body: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::missing(field)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(_) => Err(ApiError::invalid(field)),
    }
}

fn headers(value: Option<&Value>) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::new();
    let map = match value {
        None | Some(Value::Null) => return Ok(headers),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::invalid("http_headers")),
    };
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(ApiError::invalid("http_headers"));
        };
        refuse_template(name)?;
        refuse_template(value)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ApiError::invalid("http_headers"))?;
        // HeaderValue refuses CR, LF and NUL, so a value cannot start a second header.
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| ApiError::invalid("http_headers"))?;
        headers.append(name, value);
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
    request_data: Value,
    mut headers: HeaderMap,
) -> Result<(BodyTemplate, HeaderMap), ApiError> {
    let invalid_template = |_| ApiError::InvalidTemplate.because(UNKNOWN_PLACEHOLDER);
    let body = match (MediaType::of(&headers), request_data) {
        (None, data) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            json_body(data)?
        }
        (Some(MediaType::Json), data) => json_body(data)?,
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

fn json_body(data: Value) -> Result<BodyTemplate, ApiError> {
    match data {
        Value::Object(_) | Value::Array(_) => JsonTemplate::parse(data)
            .map(BodyTemplate::Json)
            .map_err(|_| ApiError::InvalidTemplate.because(UNKNOWN_PLACEHOLDER)),
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
