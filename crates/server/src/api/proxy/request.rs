//! A proxy call as the caller described it, parsed and checked without any I/O.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use cardvault_core::destination::DestinationRules;
use cardvault_core::template::{Encoding, JsonTemplate, Placeholder, Substitutions, Template};
use serde_json::{Map, Value};
use url::Url;

use crate::api::ApiError;
use crate::api::body::json_object;

/// The body to send, with its placeholders found.
pub enum BodyTemplate {
    Json(JsonTemplate),
    Text(Template, Encoding),
}

impl BodyTemplate {
    pub fn placeholders(&self) -> Box<dyn Iterator<Item = Placeholder> + '_> {
        match self {
            Self::Json(t) => Box::new(t.placeholders()),
            Self::Text(t, _) => Box::new(t.placeholders()),
        }
    }

    pub fn render(&self, values: &Substitutions) -> Vec<u8> {
        match self {
            Self::Json(t) => t.render_bytes(values),
            Self::Text(t, encoding) => t.render(values, *encoding).into_bytes(),
        }
    }
}

pub struct ProxyRequest {
    pub token: String,
    pub cvc_session_id: Option<String>,
    pub url: Url,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: BodyTemplate,
}

/// Headers the caller may not set: they describe this hop, not the processor request, or could
/// be used to smuggle a second request.
const FORBIDDEN_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "x-api-key",
    "x-pub-key",
];

impl ProxyRequest {
    /// Parses a JSON-mode body: `token`, `proxy_url`, `request_data` and the optional fields.
    ///
    /// # Errors
    /// The API's 400s, in the order the fields are listed in API.md.
    pub fn from_json(bytes: &[u8], rules: &DestinationRules) -> Result<Self, ApiError> {
        let body = json_object(bytes)?;
        let token = required_string(&body, "token")?;
        let proxy_url = match body.get("proxy_url") {
            None | Some(Value::Null) => return Err(ApiError::missing("proxy_url")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ApiError::InvalidProxyUrl),
        };
        let request_data = match body.get("request_data") {
            None | Some(Value::Null) => return Err(ApiError::missing("request_data")),
            Some(v) => v.clone(),
        };
        let headers = headers(body.get("http_headers"))?;
        let method = method(body.get("http_method"))?;
        let cvc_session_id = match body.get("cvc_session_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::invalid("cvc_session_id")),
        };
        if has_template(&proxy_url) {
            return Err(ApiError::InvalidTemplate);
        }
        let url = rules.check_url(proxy_url.trim()).map_err(|e| {
            tracing::debug!(reason = %e, "destination refused");
            ApiError::InvalidProxyUrl
        })?;
        let (body, headers) = body_template(request_data, headers)?;
        if cvc_session_id.is_none() && body.placeholders().any(|p| p == Placeholder::Cvc) {
            return Err(ApiError::missing("cvc_session_id"));
        }
        Ok(Self {
            token,
            cvc_session_id,
            url,
            method,
            headers,
            body,
        })
    }
}

fn required_string(body: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::missing(field)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(_) => Err(ApiError::invalid(field)),
    }
}

/// True when `text` holds a placeholder or an unknown `${…}`: neither may reach a URL or header.
fn has_template(text: &str) -> bool {
    Template::parse(text).map_or(true, |t| !t.is_literal())
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
        if has_template(name) || has_template(value) {
            return Err(ApiError::InvalidTemplate);
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ApiError::invalid("http_headers"))?;
        // HeaderValue refuses CR, LF and NUL, so a value cannot start a second header.
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| ApiError::invalid("http_headers"))?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers.append(name, value);
    }
    Ok(headers)
}

fn method(value: Option<&Value>) -> Result<Method, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Method::POST),
        Some(Value::String(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "POST" => Ok(Method::POST),
            "PUT" => Ok(Method::PUT),
            "PATCH" => Ok(Method::PATCH),
            "GET" => Ok(Method::GET),
            "DELETE" => Ok(Method::DELETE),
            _ => Err(ApiError::invalid("http_method")),
        },
        Some(_) => Err(ApiError::invalid("http_method")),
    }
}

/// Chooses how `request_data` becomes the outgoing body, from the outgoing `Content-Type`.
fn body_template(
    request_data: Value,
    mut headers: HeaderMap,
) -> Result<(BodyTemplate, HeaderMap), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let template = |text: &str, encoding| {
        Template::parse(text)
            .map(|t| BodyTemplate::Text(t, encoding))
            .map_err(|_| ApiError::InvalidTemplate)
    };
    let body = match (content_type.as_deref(), request_data) {
        (None, data) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            json_body(data)?
        }
        (Some(ct), data) if ct == "application/json" || ct.ends_with("+json") => json_body(data)?,
        (Some(ct), Value::String(text)) if is_xml(ct) => template(&text, Encoding::Xml)?,
        (Some("application/x-www-form-urlencoded"), Value::String(text)) => {
            template(&text, Encoding::Form)?
        }
        (Some(_), Value::String(text)) => template(&text, Encoding::Raw)?,
        (Some(_), _) => return Err(ApiError::invalid("request_data")),
    };
    Ok((body, headers))
}

fn json_body(data: Value) -> Result<BodyTemplate, ApiError> {
    match data {
        Value::Object(_) | Value::Array(_) => JsonTemplate::parse(data)
            .map(BodyTemplate::Json)
            .map_err(|_| ApiError::InvalidTemplate),
        // A string is a JSON document the caller serialized itself; values land in its strings.
        Value::String(text) => Template::parse(&text)
            .map(|t| BodyTemplate::Text(t, Encoding::Json))
            .map_err(|_| ApiError::InvalidTemplate),
        _ => Err(ApiError::invalid("request_data")),
    }
}

fn is_xml(content_type: &str) -> bool {
    content_type == "application/xml"
        || content_type == "text/xml"
        || content_type.ends_with("+xml")
}
