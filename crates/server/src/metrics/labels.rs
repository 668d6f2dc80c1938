//! Label values, each from a bounded set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ::metrics::SharedString;
use cardvault_core::destination::AllowRule;
use http::{Method, StatusCode};

/// Distinct project allowlist patterns that get a label of their own, per process. Projects
/// write their own allowlists, so without a cap a provisioning key could grow the series
/// without end; past it, further patterns are counted as `other`.
const MAX_PROJECT_PATTERNS: usize = 200;

const OTHER: &str = "other";

/// The destination label of a proxy call: the host pattern of the allowlist entry that
/// admitted it (`api.stripe.com`, `*.adyen.com`; never the path part nor the URL), or
/// `other`. Made once when a list is loaded, so labelling a call costs a reference count.
#[derive(Clone, Debug)]
pub struct DestinationLabel(SharedString);

impl DestinationLabel {
    /// For a call no allowlist applied to, or whose pattern is over the cap.
    pub fn other() -> Self {
        Self(SharedString::const_str(OTHER))
    }

    /// For an entry of the server-wide list: the operator's configuration, bounded by it.
    pub fn server_rule(rule: &AllowRule) -> Self {
        Self(shared(&host_pattern(rule)))
    }

    /// For an entry of a project's list: its own label while fewer than
    /// [`MAX_PROJECT_PATTERNS`] distinct patterns have been seen, else `other`.
    pub fn project_rule(rule: &AllowRule) -> Self {
        static PROJECT_PATTERNS: OnceLock<Patterns> = OnceLock::new();
        PROJECT_PATTERNS
            .get_or_init(|| Patterns::new(MAX_PROJECT_PATTERNS))
            .label(host_pattern(rule))
    }

    pub(super) fn label(&self) -> SharedString {
        self.0.clone()
    }
}

/// The patterns given a label so far, at most `cap` of them.
struct Patterns {
    cap: usize,
    seen: Mutex<HashMap<String, SharedString>>,
}

impl Patterns {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn label(&self, pattern: String) -> DestinationLabel {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(label) = seen.get(&pattern) {
            return DestinationLabel(label.clone());
        }
        if seen.len() >= self.cap {
            return DestinationLabel::other();
        }
        let label = shared(&pattern);
        seen.insert(pattern, label.clone());
        DestinationLabel(label)
    }
}

/// A label value whose clones share one allocation.
fn shared(text: &str) -> SharedString {
    SharedString::from(Arc::<str>::from(text))
}

/// A rule's host pattern without its path prefix (a path could name an account).
fn host_pattern(rule: &AllowRule) -> String {
    let text = rule.to_string();
    match text.split_once('/') {
        Some((host, _)) => host.to_owned(),
        None => text,
    }
}

/// The standard methods by name; anything else (an extension method a caller made up) as
/// `other`.
pub(super) fn method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The statuses the vault answers with, without allocating; any other as its number (still a
/// bounded set: three digits).
pub(super) fn status(status: StatusCode) -> SharedString {
    let text = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        414 => "414",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(text)
}

/// A processor's status as its class.
pub(super) fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_label_is_the_host_pattern_without_the_path() {
        let rule = AllowRule::parse("api.stripe.com/v1/accounts/acct_123").unwrap();
        assert_eq!(
            &*DestinationLabel::server_rule(&rule).label(),
            "api.stripe.com"
        );
        let rule = AllowRule::parse("*.adyen.com").unwrap();
        assert_eq!(
            &*DestinationLabel::project_rule(&rule).label(),
            "*.adyen.com"
        );
    }

    #[test]
    fn patterns_past_the_cap_are_other() {
        let patterns = Patterns::new(3);
        let labels: Vec<String> = [
            "a.example",
            "b.example",
            "a.example",
            "c.example",
            "d.example",
        ]
        .iter()
        .map(|p| patterns.label((*p).to_owned()).label().to_string())
        .collect();
        assert_eq!(
            labels,
            ["a.example", "b.example", "a.example", "c.example", OTHER]
        );
        assert_eq!(
            patterns.label("a.example".into()).label().to_string(),
            "a.example"
        );
    }

    #[test]
    fn labels_of_methods_and_statuses_are_bounded() {
        assert_eq!(method(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(&*status(StatusCode::CREATED), "201");
        assert_eq!(&*status(StatusCode::IM_A_TEAPOT), "418");
        assert_eq!(status_class(StatusCode::PAYMENT_REQUIRED), "4xx");
    }
}
