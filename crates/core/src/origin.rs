//! The web origins a project lets embed its card fields: `https://shop.example`,
//! `https://shop.example:8443`, or `https://*.example.com` for its subdomains. Plain `http` is
//! accepted for loopback only (`http://localhost:3000`), for development.
//!
//! A pattern is kept in the form a browser serializes an origin (lowercase, no default port, no
//! path), which is also a valid CSP source expression: the same text gates the frames'
//! `frame-ancestors` and the tokenizer's calls.

use std::fmt;

/// Why an origin pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "`{0}` is not an origin: give scheme, host and optional port, e.g. https://shop.example"
    )]
    Malformed(String),
    #[error("`{0}` must use https (http is accepted for localhost, 127.0.0.1 and [::1] only)")]
    NotHttps(String),
    #[error("`{0}`: a wildcard may only stand for subdomains, as in https://*.example.com")]
    BadWildcard(String),
}

/// One allowed origin (or family of origins).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginPattern(String);

impl OriginPattern {
    /// Parses and normalizes a pattern.
    ///
    /// # Errors
    /// [`OriginError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let malformed = || OriginError::Malformed(text.to_owned());
        let trimmed = text.trim();
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(malformed)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(malformed());
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err(OriginError::BadWildcard(text.to_owned()));
        }
        let origin = Origin::parse(&format!("{scheme}://{rest}")).ok_or_else(malformed)?;
        if wildcard && (origin.is_ip_literal() || !origin.host.contains('.')) {
            return Err(OriginError::BadWildcard(text.to_owned()));
        }
        if origin.scheme == "http" && (wildcard || !origin.is_loopback()) {
            return Err(OriginError::NotHttps(text.to_owned()));
        }
        let host = if wildcard {
            format!("*.{}", origin.host)
        } else {
            origin.host.clone()
        };
        Ok(Self(origin.serialize_with_host(&host)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the browser-serialized `origin` (e.g. an `Origin` header) is one this pattern
    /// allows. A wildcard matches any subdomain, never the domain itself.
    pub fn matches(&self, origin: &str) -> bool {
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        let Some(pattern) = Origin::parse(&self.0.replacen("*.", "", 1)) else {
            return false;
        };
        if origin.scheme != pattern.scheme || origin.port != pattern.port {
            return false;
        }
        if self.0.contains("://*.") {
            origin
                .host
                .strip_suffix(&pattern.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            origin.host == pattern.host
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether any of `patterns` allows `origin`.
pub fn is_allowed(patterns: &[OriginPattern], origin: &str) -> bool {
    patterns.iter().any(|p| p.matches(origin))
}

/// A concrete origin, as WHATWG URL parsing normalizes it.
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` with nothing else (no user info, path, query or fragment).
    fn parse(text: &str) -> Option<Self> {
        let url = url::Url::parse(text).ok()?;
        let bare = url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && !text.ends_with('/')
            && !text.contains('@');
        if !bare || !matches!(url.scheme(), "https" | "http") {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port(),
        })
    }

    fn is_ip_literal(&self) -> bool {
        self.host.starts_with('[') || self.host.parse::<std::net::Ipv4Addr>().is_ok()
    }

    fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }

    fn serialize_with_host(&self, host: &str) -> String {
        match self.port {
            Some(port) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        OriginPattern::parse(text).unwrap()
    }

    #[test]
    fn patterns_are_kept_as_browsers_serialize_origins() {
        assert_eq!(
            pattern("https://Shop.Example/").as_str(),
            "https://shop.example"
        );
        assert_eq!(
            pattern("https://shop.example:443").as_str(),
            "https://shop.example"
        );
        assert_eq!(
            pattern("https://shop.example:8443").as_str(),
            "https://shop.example:8443"
        );
        assert_eq!(
            pattern("https://*.Example.com").as_str(),
            "https://*.example.com"
        );
        assert_eq!(
            pattern("http://127.0.0.1:4000").as_str(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(pattern("http://[::1]:80").as_str(), "http://[::1]");
    }

    #[test]
    fn what_is_not_a_bare_https_origin_is_refused_with_the_reason() {
        for bad in [
            "shop.example",
            "https://shop.example/checkout",
            "https://user@shop.example",
            "https://shop.example?x=1",
            "ftp://shop.example",
            "",
        ] {
            assert!(
                matches!(OriginPattern::parse(bad), Err(OriginError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            OriginPattern::parse("http://shop.example"),
            Err(OriginError::NotHttps(_))
        ));
        assert!(matches!(
            OriginPattern::parse("http://*.localhost"),
            Err(OriginError::BadWildcard(_) | OriginError::NotHttps(_))
        ));
        for bad in [
            "https://*",
            "https://*.com",
            "https://shop.*.example",
            "https://*.1.2.3.4",
        ] {
            assert!(
                matches!(OriginPattern::parse(bad), Err(OriginError::BadWildcard(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn exact_patterns_match_only_their_origin() {
        let p = pattern("https://shop.example");
        assert!(p.matches("https://shop.example"));
        assert!(p.matches("https://shop.example:443"));
        assert!(!p.matches("http://shop.example"));
        assert!(!p.matches("https://shop.example:8443"));
        assert!(!p.matches("https://shop.example.evil.test"));
        assert!(!p.matches("https://evilshop.example"));
        assert!(!p.matches("https://a.shop.example"));
        assert!(!p.matches("null"));
    }

    #[test]
    fn a_wildcard_matches_subdomains_not_the_domain_or_lookalikes() {
        let p = pattern("https://*.example.com");
        assert!(p.matches("https://shop.example.com"));
        assert!(p.matches("https://a.b.example.com"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("https://evilexample.com"));
        assert!(!p.matches("https://example.com.evil.test"));
        assert!(!p.matches("https://shop.example.com:8443"));
        assert!(!p.matches("http://shop.example.com"));
    }

    #[test]
    fn loopback_http_is_for_development() {
        let p = pattern("http://127.0.0.1:4000");
        assert!(p.matches("http://127.0.0.1:4000"));
        assert!(!p.matches("http://127.0.0.1:4001"));
        assert!(is_allowed(
            &[pattern("https://a.example"), p],
            "http://127.0.0.1:4000"
        ));
        assert!(!is_allowed(&[], "http://127.0.0.1:4000"));
    }
}
