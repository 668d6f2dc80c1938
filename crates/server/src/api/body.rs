//! Reading a request body within the size limit, with refusals in the API's envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{ApiError, AppState, BodyKind};

/// The raw request body: at most the configured size (413 beyond it), read within the
/// configured time (408 after it), so a client dribbling its body cannot hold a worker.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let read = Bytes::from_request(req, state);
        match tokio::time::timeout(state.policy.body_read_timeout, read).await {
            Err(_) => Err(ApiError::RequestTimeout),
            Ok(Ok(bytes)) => Ok(Self(bytes)),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge)
            }
            Ok(Err(_)) => Err(ApiError::InvalidBody(BodyKind::Json)),
        }
    }
}

/// Parses a JSON object; anything else is `Invalid JSON`, and so is an object with a key given
/// twice at any depth: parsers disagree on which one wins, so a front proxy that reads the first
/// would check a different request from the one the vault runs.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if serde_json::from_slice::<UniqueKeys>(bytes).is_err() {
        return Err(ApiError::InvalidBody(BodyKind::Json));
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::InvalidBody(BodyKind::Json)),
    }
}

/// A JSON document read only to check that no object repeats a key.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = SeenKeys::Few(Vec::new());
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Objects with more keys than this are checked with a hash set.
const FEW_KEYS: usize = 16;

/// The keys of one object seen so far. A request's objects have a handful of keys, which a
/// short list compares faster than a hash set hashes them (each object's set was most of this
/// check's cost); past [`FEW_KEYS`] they go into a set, so a body of many keys never costs
/// their square.
enum SeenKeys<'de> {
    Few(Vec<Cow<'de, str>>),
    Many(HashSet<Cow<'de, str>>),
}

impl<'de> SeenKeys<'de> {
    /// Records `key`; false if it was seen before.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        match self {
            Self::Few(keys) if keys.contains(&key) => false,
            Self::Few(keys) if keys.len() < FEW_KEYS => {
                keys.push(key);
                true
            }
            Self::Few(keys) => {
                let mut set: HashSet<_> = keys.drain(..).collect();
                set.insert(key);
                *self = Self::Many(set);
                true
            }
            Self::Many(set) => set.insert(key),
        }
    }
}

/// A text field that may be absent (or null). Card, CVC, account and routing numbers must be
/// JSON strings: as numbers they lose leading zeros and, past 2^53, digits in many clients.
pub fn optional_text(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field)),
    }
}

pub fn required_text(obj: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    optional_text(obj, field)?.ok_or(ApiError::missing(field))
}

/// A required field that may also be a non-negative JSON integer, taken as its decimal text:
/// some clients send `"expirationMonth": 12`, which is unambiguous.
pub fn required_text_or_integer(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<String, ApiError> {
    match obj.get(field) {
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        _ => required_text(obj, field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_at_any_depth_is_invalid_json() {
        for body in [
            r#"{"token": "tok_a", "token": "tok_b"}"#,
            r#"{"data": {"cardNumber": "4242424242424242", "cardNumber": "5555555555554444"}}"#,
            r#"{"request_data": [{"a": 1}, {"b": 2, "b": 3}]}"#,
            r#"{"a": 1, "\u0061": 2}"#,
        ] {
            assert!(
                matches!(
                    json_object(body.as_bytes()),
                    Err(ApiError::InvalidBody(BodyKind::Json))
                ),
                "{body}"
            );
        }
        let fine = json_object(
            br#"{"a": {"x": 1.5e3, "y": [1, 2, {"x": 18446744073709551616}]}, "b": {"x": null}}"#,
        )
        .unwrap();
        assert_eq!(fine.len(), 2);
    }

    #[test]
    fn a_key_given_twice_in_an_object_of_many_keys_is_invalid_json() {
        let object = |keys: &[String]| {
            let fields: Vec<String> = keys.iter().map(|k| format!("\"{k}\": 1")).collect();
            format!("{{{}}}", fields.join(", "))
        };
        let many: Vec<String> = (0..3 * FEW_KEYS).map(|n| format!("k{n}")).collect();
        assert_eq!(
            json_object(object(&many).as_bytes()).unwrap().len(),
            many.len()
        );
        // Repeated within the short list, by the key that would end it, across its end, the
        // key that ended it, and among the hashed keys.
        for (first, again) in [
            (1, 2),
            (0, FEW_KEYS),
            (3, FEW_KEYS + 4),
            (FEW_KEYS, 2 * FEW_KEYS),
            (FEW_KEYS + 5, 2 * FEW_KEYS + 1),
        ] {
            let mut keys = many.clone();
            keys[again] = keys[first].clone();
            assert!(
                matches!(
                    json_object(object(&keys).as_bytes()),
                    Err(ApiError::InvalidBody(BodyKind::Json))
                ),
                "{first} repeated at {again}"
            );
        }
    }

    #[test]
    fn numbers_are_text_only_where_unambiguous() {
        let obj =
            json_object(br#"{"cardNumber": 4242424242424242, "expirationMonth": 7, "cvv": 123}"#)
                .unwrap();
        assert!(matches!(
            required_text(&obj, "cardNumber"),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            optional_text(&obj, "cvv"),
            Err(ApiError::Validation(_))
        ));
        assert_eq!(
            required_text_or_integer(&obj, "expirationMonth").unwrap(),
            "7"
        );
    }
}
