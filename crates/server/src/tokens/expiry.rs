//! When a token stops being usable: what the caller asked for at tokenize (`expires_at` or
//! `ttl_seconds`), bounded by the vault's retention period.
//!
//! From its expiry on, a token is answered as not found everywhere, exactly as a deleted one,
//! and the sweeper erases its sealed data.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::{LATEST_RFC3339, parse_rfc3339};

/// Longer than any RFC 3339 timestamp with a sensible fraction of a second.
const MAX_TIMESTAMP_LEN: usize = 64;

/// Why the requested expiry is refused. Each names the field it is answered for
/// (`Invalid value for <field>`) and a reason that names a rule, never the value sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("expires_at and ttl_seconds were both given")]
    Both,
    #[error("expires_at is not an RFC 3339 timestamp")]
    NotTimestamp,
    #[error("expires_at is not in the future")]
    NotInFuture,
    #[error("ttl_seconds is not a positive integer")]
    NotPositive,
    #[error("{field} is later than the retention period allows")]
    BeyondRetention { field: &'static str },
}

impl ExpiryError {
    /// The body field the refusal is answered for.
    pub fn field(self) -> &'static str {
        match self {
            Self::NotTimestamp | Self::NotInFuture => "expires_at",
            Self::Both | Self::NotPositive => "ttl_seconds",
            Self::BeyondRetention { field } => field,
        }
    }

    /// The rule that was broken, for the answer's `detail`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Both => "give expires_at or ttl_seconds, not both",
            Self::NotTimestamp => {
                "expires_at must be an RFC 3339 timestamp such as 2030-01-31T00:00:00Z"
            }
            Self::NotInFuture => "expires_at must be in the future",
            Self::NotPositive => "ttl_seconds must be a positive integer",
            Self::BeyondRetention { .. } => "the expiry is later than the vault's retention period",
        }
    }
}

/// The expiry (unix seconds) of a token tokenized at `now` with `body`'s top-level fields
/// `expires_at` (RFC 3339, in the future) or `ttl_seconds` (a positive integer), not both; a
/// null field counts as absent. With a `retention` period, a token without an expiry of its
/// own gets `now + retention`, and a later one is refused. `None`: the token lives until it is
/// deleted.
///
/// # Errors
/// [`ExpiryError`] when a field is malformed, both are given, the time is not in the future,
/// or it is past the retention period.
pub fn requested_expiry(
    body: &Map<String, Value>,
    now: i64,
    retention: Option<Duration>,
) -> Result<Option<i64>, ExpiryError> {
    let present = |field| body.get(field).filter(|v| !v.is_null());
    let (asked, field) = match (present("expires_at"), present("ttl_seconds")) {
        (Some(_), Some(_)) => return Err(ExpiryError::Both),
        (Some(at), None) => (Some(absolute(at, now)?), "expires_at"),
        (None, Some(ttl)) => (Some(relative(ttl, now)?), "ttl_seconds"),
        (None, None) => (None, ""),
    };
    let Some(retention) = retention else {
        return Ok(asked);
    };
    let limit = now.saturating_add(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
    match asked {
        Some(at) if at > limit => Err(ExpiryError::BeyondRetention { field }),
        Some(at) => Ok(Some(at)),
        None => Ok(Some(limit)),
    }
}

/// The expiry a deduplicated token keeps when its card is tokenized again: the later of the
/// two (`None`, never, is the latest), so one caller never cuts short a token others hold.
pub fn later(current: Option<i64>, asked: Option<i64>) -> Option<i64> {
    Some(current?.max(asked?))
}

fn absolute(value: &Value, now: i64) -> Result<i64, ExpiryError> {
    let at = value
        .as_str()
        .filter(|s| s.len() <= MAX_TIMESTAMP_LEN)
        .and_then(parse_rfc3339)
        .ok_or(ExpiryError::NotTimestamp)?;
    if at <= now {
        return Err(ExpiryError::NotInFuture);
    }
    Ok(at)
}

fn relative(value: &Value, now: i64) -> Result<i64, ExpiryError> {
    value
        .as_u64()
        .filter(|ttl| *ttl > 0)
        .and_then(|ttl| i64::try_from(ttl).ok())
        .and_then(|ttl| now.checked_add(ttl))
        .filter(|at| *at <= LATEST_RFC3339)
        .ok_or(ExpiryError::NotPositive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_796_290_500; // 2026-12-03T09:35:00Z
    const DAY: Duration = Duration::from_secs(86_400);

    fn expiry(body: Value, retention: Option<Duration>) -> Result<Option<i64>, ExpiryError> {
        let Value::Object(body) = body else {
            unreachable!("the tests give objects")
        };
        requested_expiry(&body, NOW, retention)
    }

    #[test]
    fn no_expiry_unless_asked_or_retained() {
        assert_eq!(expiry(json!({}), None), Ok(None));
        assert_eq!(
            expiry(json!({"expires_at": null, "ttl_seconds": null}), None),
            Ok(None)
        );
        assert_eq!(expiry(json!({}), Some(DAY)), Ok(Some(NOW + 86_400)));
    }

    #[test]
    fn either_field_sets_the_expiry() {
        assert_eq!(
            expiry(json!({"expires_at": "2026-12-03T09:35:01Z"}), None),
            Ok(Some(NOW + 1))
        );
        assert_eq!(
            expiry(json!({"expires_at": "2026-12-04T10:35:00+01:00"}), None),
            Ok(Some(NOW + 86_400))
        );
        assert_eq!(expiry(json!({"ttl_seconds": 1}), None), Ok(Some(NOW + 1)));
        assert_eq!(
            expiry(json!({"ttl_seconds": 86_400}), Some(DAY)),
            Ok(Some(NOW + 86_400))
        );
        assert_eq!(
            expiry(json!({"expires_at": "2026-12-04T09:35:00Z"}), Some(DAY)),
            Ok(Some(NOW + 86_400))
        );
    }

    #[test]
    fn bad_expiries_name_their_field() {
        let cases = [
            (
                json!({"expires_at": "2030-01-01T00:00:00Z", "ttl_seconds": 60}),
                ExpiryError::Both,
            ),
            (json!({"expires_at": "tomorrow"}), ExpiryError::NotTimestamp),
            (
                json!({"expires_at": 1_896_290_500}),
                ExpiryError::NotTimestamp,
            ),
            (
                json!({"expires_at": "2030-01-01"}),
                ExpiryError::NotTimestamp,
            ),
            (
                json!({"expires_at": "2026-12-03T09:35:00Z"}),
                ExpiryError::NotInFuture,
            ),
            (
                json!({"expires_at": "2020-01-01T00:00:00Z"}),
                ExpiryError::NotInFuture,
            ),
            (json!({"ttl_seconds": 0}), ExpiryError::NotPositive),
            (json!({"ttl_seconds": -5}), ExpiryError::NotPositive),
            (json!({"ttl_seconds": 1.5}), ExpiryError::NotPositive),
            (json!({"ttl_seconds": "60"}), ExpiryError::NotPositive),
            (json!({"ttl_seconds": u64::MAX}), ExpiryError::NotPositive),
            (
                json!({"ttl_seconds": LATEST_RFC3339 - NOW + 1}),
                ExpiryError::NotPositive,
            ),
        ];
        for (body, error) in cases {
            assert_eq!(expiry(body.clone(), None), Err(error), "{body}");
        }
        assert_eq!(ExpiryError::Both.field(), "ttl_seconds");
        assert_eq!(ExpiryError::NotTimestamp.field(), "expires_at");
    }

    #[test]
    fn retention_bounds_an_explicit_expiry() {
        let too_late = [
            (json!({"ttl_seconds": 86_401}), "ttl_seconds"),
            (json!({"expires_at": "2026-12-04T09:35:01Z"}), "expires_at"),
        ];
        for (body, field) in too_late {
            let refused = expiry(body, Some(DAY));
            assert_eq!(refused, Err(ExpiryError::BeyondRetention { field }));
            assert_eq!(refused.map_err(ExpiryError::field), Err(field));
        }
    }

    #[test]
    fn a_deduplicated_token_keeps_the_later_expiry() {
        assert_eq!(later(None, Some(5)), None);
        assert_eq!(later(Some(5), None), None);
        assert_eq!(later(Some(5), Some(9)), Some(9));
        assert_eq!(later(Some(9), Some(5)), Some(9));
    }
}
