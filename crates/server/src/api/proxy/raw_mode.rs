//! Raw mode: the request body is the processor body. Control values come from `X-Token`,
//! `X-Proxy-URL`, `X-CVC-Session-ID` (else the query string, else, for a form, form fields of
//! the same names, which are then removed), the method from `X-Proxy-Method`, a dry run from
//! `X-Dry-Run`, and the forwarded headers are the request's own minus the vault's.

use axum::http::{HeaderMap, HeaderName};
use cardvault_core::template::{Encoding, Template};

use super::media_type::MediaType;
use super::request::{
    BodyTemplate, ProxyRequest, UNKNOWN_PLACEHOLDER, destination, dry_run_flag, forwardable,
    method, refuse_template_in_header,
};
use crate::api::{ApiError, BodyKind};
use crate::destinations::UrlChecks;

const PROXY_URL: HeaderName = HeaderName::from_static("x-proxy-url");

/// True when the request describes a raw-mode call.
pub fn applies(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> bool {
    if headers.contains_key(PROXY_URL) || query_value(query, "proxy_url").is_some() {
        return true;
    }
    match MediaType::of(headers) {
        // A JSON object labelled as a form is a JSON-mode call from a client that forgot its
        // Content-Type (`curl -d` labels everything a form); no form body starts with `{`.
        Some(MediaType::Form) => !body.trim_ascii_start().starts_with(b"{"),
        Some(kind) => kind == MediaType::Xml,
        None => false,
    }
}

/// # Errors
/// The API's 400s: an unreadable body, missing control values, templates, the destination.
pub fn parse(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    urls: &UrlChecks,
) -> Result<ProxyRequest, ApiError> {
    let media_type = MediaType::of(headers).unwrap_or(MediaType::Other);
    let is_form = media_type == MediaType::Form;
    let text = std::str::from_utf8(body).map_err(|_| match media_type {
        MediaType::Form => ApiError::InvalidBody(BodyKind::Form),
        MediaType::Xml => ApiError::InvalidBody(BodyKind::Xml),
        MediaType::Json | MediaType::Other => ApiError::invalid("request_data"),
    })?;
    let mut form = is_form.then(|| FormBody::new(text));

    let mut control = |header: &str, field: &str| -> Result<Option<String>, ApiError> {
        if let Some(value) = headers.get(header) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid(static_field(field)))?;
            return Ok(Some(value.trim().to_owned()).filter(|v| !v.is_empty()));
        }
        if let Some(value) = query_value(query, field) {
            return Ok(Some(value).filter(|v| !v.is_empty()));
        }
        Ok(form
            .as_mut()
            .and_then(|f| f.take(field))
            .filter(|v| !v.is_empty()))
    };
    let token = control("x-token", "token")?.ok_or(ApiError::missing("token"))?;
    let proxy_url = control("x-proxy-url", "proxy_url")?.ok_or(ApiError::missing("proxy_url"))?;
    let cvc_session_id = control("x-cvc-session-id", "cvc_session_id")?;
    let method = method(
        headers
            .get("x-proxy-method")
            .map(|v| v.to_str().map_err(|_| ApiError::invalid("http_method")))
            .transpose()?,
    )?;
    let dry_run = match headers.get("x-dry-run") {
        None => false,
        Some(v) => dry_run_flag(v.to_str().map_err(|_| ApiError::invalid("dry_run"))?)?,
    };
    let url = destination(&proxy_url, urls)?;

    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        if forwardable(name, headers) {
            refuse_template_in_header(value)?;
            forwarded.append(name.clone(), value.clone());
        }
    }

    let invalid_template = |_| ApiError::InvalidTemplate.because(UNKNOWN_PLACEHOLDER);
    let body = match form {
        Some(form) => {
            let text = form.into_body();
            BodyTemplate::text(
                Template::parse_form(&text).map_err(invalid_template)?,
                Encoding::Form,
                &text,
            )?
        }
        None => {
            let encoding = match media_type {
                MediaType::Xml => Encoding::Xml,
                MediaType::Json => Encoding::Json,
                MediaType::Form | MediaType::Other => Encoding::Raw,
            };
            BodyTemplate::text(
                Template::parse(text).map_err(invalid_template)?,
                encoding,
                text,
            )?
        }
    };
    ProxyRequest::new(token, cvc_session_id, url, method, forwarded, body)
        .map(|request| request.with_dry_run(dry_run))
}

fn static_field(field: &str) -> &'static str {
    match field {
        "token" => "token",
        "proxy_url" => "proxy_url",
        _ => "cvc_session_id",
    }
}

fn query_value(query: Option<&str>, field: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.trim().to_owned())
}

/// A form body whose control fields can be taken out, leaving every other byte as sent.
struct FormBody<'a> {
    pairs: Vec<&'a str>,
}

impl<'a> FormBody<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            pairs: text.split('&').collect(),
        }
    }

    /// Removes the first `field=value` pair and returns its decoded value.
    fn take(&mut self, field: &str) -> Option<String> {
        let index = self.pairs.iter().position(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == field)
        })?;
        let pair = self.pairs.remove(index);
        form_urlencoded::parse(pair.as_bytes())
            .next()
            .map(|(_, v)| v.trim().to_owned())
    }

    fn into_body(self) -> String {
        self.pairs.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::FormBody;

    #[test]
    fn control_fields_are_removed_and_the_rest_kept_byte_for_byte() {
        let mut form = FormBody::new(
            "amount=100&token=tok_1&card%5Bnumber%5D=%24%7BcardNumber%7D&proxy_url=https%3A%2F%2Fa.example%2Fx",
        );
        assert_eq!(form.take("token").as_deref(), Some("tok_1"));
        assert_eq!(
            form.take("proxy_url").as_deref(),
            Some("https://a.example/x")
        );
        assert_eq!(form.take("cvc_session_id"), None);
        assert_eq!(
            form.into_body(),
            "amount=100&card%5Bnumber%5D=%24%7BcardNumber%7D"
        );
    }
}
