//! The kinds of body a `Content-Type` names, parsed once: the caller's request, the outgoing
//! processor request and the processor's answer are all read through this.

use axum::http::{HeaderMap, header};

/// What a body is, as far as templates and scrubbing care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json` or `*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/xml`, `text/xml` or `*+xml`.
    Xml,
    /// Anything else.
    Other,
}

impl MediaType {
    /// The kind named by the `Content-Type` header; `None` when there is none.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = value.split(';').next().unwrap_or("").trim();
        Some(Self::parse(essence))
    }

    fn parse(essence: &str) -> Self {
        let lower = essence.to_ascii_lowercase();
        if lower == "application/json" || lower.ends_with("+json") {
            Self::Json
        } else if lower == "application/x-www-form-urlencoded" {
            Self::Form
        } else if lower == "application/xml" || lower == "text/xml" || lower.ends_with("+xml") {
            Self::Xml
        } else {
            Self::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn media_types_are_read_without_parameters_and_case() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            MediaType::of(&headers)
        };
        assert_eq!(of("Application/JSON; charset=utf-8"), Some(MediaType::Json));
        assert_eq!(of("application/vnd.api+json"), Some(MediaType::Json));
        assert_eq!(
            of("application/x-www-form-urlencoded"),
            Some(MediaType::Form)
        );
        assert_eq!(of("text/xml"), Some(MediaType::Xml));
        assert_eq!(of("application/soap+xml"), Some(MediaType::Xml));
        assert_eq!(of("text/plain"), Some(MediaType::Other));
        assert_eq!(MediaType::of(&HeaderMap::new()), None);
    }
}
