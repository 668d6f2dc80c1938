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
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        let ends_with = |suffix: &str| {
            essence.len() >= suffix.len()
                && essence
                    .get(essence.len() - suffix.len()..)
                    .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
        };
        if is("application/json") || ends_with("+json") {
            Self::Json
        } else if is("application/x-www-form-urlencoded") {
            Self::Form
        } else if is("application/xml") || is("text/xml") || ends_with("+xml") {
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
        assert_eq!(of("APPLICATION/SOAP+XML"), Some(MediaType::Xml));
        assert_eq!(of("json"), Some(MediaType::Other));
        // Text that is not ASCII never comes from a header, but is read without a panic.
        assert_eq!(MediaType::parse("é+json"), MediaType::Json);
        assert_eq!(MediaType::parse("+jsoné"), MediaType::Other);
        assert_eq!(MediaType::parse("éé"), MediaType::Other);
        assert_eq!(MediaType::of(&HeaderMap::new()), None);
    }
}
