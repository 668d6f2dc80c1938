//! Reading a request body within the size limit, with refusals in the API's envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Uri};

use cardvault_core::json_keys::NUMBER_KEY;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{ApiError, AppState, BodyKind};

/// The raw request body: at most the configured size (413 beyond it), read within the
/// configured time (408 after it), so a client dribbling its body cannot hold a worker.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // The limit applied here rather than by axum's `DefaultBodyLimit` layer, which would
        // wrap every route in one more boxed service: two allocations and a layer of polls on
        // every call (docs/benchmarks.md, issue 17's thirty-first step).
        let read = Limited::new(req.into_body(), state.policy.max_request_bytes).collect();
        match tokio::time::timeout(state.policy.body_read_timeout, read).await {
            Err(_) => Err(ApiError::RequestTimeout),
            Ok(Ok(collected)) => Ok(Self(collected.to_bytes())),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge),
            Ok(Err(_)) => Err(ApiError::InvalidBody(BodyKind::Json)),
        }
    }
}

/// The request's target, headers and body (as [`RawBody`] reads it), moved out of the request:
/// axum's own `Uri` and `HeaderMap` extractors copy them, a header map's two allocations and a
/// reference count for each of its names and values, on every call of the routes that take
/// all three.
pub struct TargetHeadersBody {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl FromRequest<AppState> for TargetHeadersBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let uri = std::mem::take(&mut parts.uri);
        let headers = std::mem::take(&mut parts.headers);
        let RawBody(body) = RawBody::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self { uri, headers, body })
    }
}

/// Parses a JSON object; anything else is `Invalid JSON`, and so is an object with a key given
/// twice at any depth: parsers disagree on which one wins, so a front proxy that reads the first
/// would check a different request from the one the vault runs.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<UniqueKeys>(bytes) {
        Ok(UniqueKeys(Value::Object(map))) => Ok(map),
        _ => Err(ApiError::InvalidBody(BodyKind::Json)),
    }
}

/// A JSON value whose objects never repeat a key, read in one pass: the check is the object's
/// own insert (a second pass only for the check was a third of the proxy's JSON cost).
///
/// A number arrives as a one-entry map under [`NUMBER_KEY`], its text taken as strictly as
/// `serde_json`'s own `Value` takes it (`Number`'s `FromStr`: no spaces, nothing after).
/// `serde_json`'s other such key, for `RawValue`, which its `Value` would parse again from a
/// string without this reader's duplicate check, is an ordinary key here.
pub(crate) struct UniqueKeys(pub(crate) Value);

impl UniqueKeys {
    /// An array read to its end as strictly as [`UniqueKeys`] reads one, and dropped.
    pub(crate) fn visit_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<(), A::Error> {
        UniqueKeysVisitor.visit_seq(seq).map(drop)
    }
}

/// `serde_json`'s key for a `RawValue`, whose string its `Value` reads again as JSON.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(Self)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.is_empty() && key == NUMBER_KEY {
                let text: String = map.next_value()?;
                return text
                    .parse::<serde_json::Number>()
                    .map(Value::Number)
                    .map_err(serde::de::Error::custom);
            }
            let UniqueKeys(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(object))
    }
}

/// Whether `text` is one JSON value as `serde_json`'s `Value` would read it, building nothing:
/// its strings decoded (a lone surrogate escape refused), nested at most 128 deep, nothing
/// after it. (`RawValue`'s own check skips over strings and nesting without either.)
pub fn is_one_json_value(text: &str) -> bool {
    serde_json::from_str::<Checked>(text).is_ok()
}

/// A JSON value read and thrown away.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    /// Objects, and (under `arbitrary_precision`) numbers, which arrive as a one-entry map of
    /// their text. An object whose first key is one of `serde_json`'s private ones is taken as
    /// its `Value` takes it: a number's text that must parse, or a string that must itself be
    /// one JSON value, and nothing after it.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Checked);
        };
        if first == NUMBER_KEY {
            let text: String = map.next_value()?;
            return text
                .parse::<serde_json::Number>()
                .map(|_| Checked)
                .map_err(serde::de::Error::custom);
        }
        if first == RAW_VALUE_KEY {
            let text: String = map.next_value()?;
            return if is_one_json_value(&text) {
                Ok(Checked)
            } else {
                Err(serde::de::Error::custom("not one JSON value"))
            };
        }
        map.next_value::<Checked>()?;
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
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
    fn one_json_value_is_what_serde_jsons_value_reads() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases = [
            r#"{"a": [1, -2.5e3, 12345678901234567890.10, true, null, "x\u00e9\ud83d\ude00"]}"#
                .to_owned(),
            r#" {"a": 1} "#.to_owned(),
            r#""just a string""#.to_owned(),
            r#"{"a": "\ud800"}"#.to_owned(),
            r#"{"a": "\udc00 alone"}"#.to_owned(),
            r#"{"a": 1} {"b": 2}"#.to_owned(),
            r#"{"a": 1,}"#.to_owned(),
            r#"{"a": 01}"#.to_owned(),
            r#"{"a": "tab	inside"}"#.to_owned(),
            deep(100),
            deep(200),
            String::new(),
            r#"{"$serde_json::private::Number": "12.5"}"#.to_owned(),
            r#"{"$serde_json::private::Number": "x"}"#.to_owned(),
            r#"{"$serde_json::private::Number": 1}"#.to_owned(),
            r#"{"$serde_json::private::Number": "1", "b": 2}"#.to_owned(),
            r#"{"$serde_json::private::Numbe\u0072": "x"}"#.to_owned(),
            r#"{"$serde_json::private::RawValue": "[1]"}"#.to_owned(),
            r#"{"$serde_json::private::RawValue": "["}"#.to_owned(),
            r#"{"$serde_json::private::RawValue": "[1]", "b": 2}"#.to_owned(),
            r#"{"b": 2, "$serde_json::private::Number": "x"}"#.to_owned(),
        ];
        for case in cases {
            assert_eq!(
                is_one_json_value(&case),
                serde_json::from_str::<Value>(&case).is_ok(),
                "{case:.60}"
            );
        }
        assert!(is_one_json_value(&deep(100)));
        assert!(!is_one_json_value(&deep(200)));
        assert!(!is_one_json_value(r#"{"a": "\ud800"}"#));
    }

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
        // Numbers keep their digits, as `serde_json`'s own parser keeps them.
        assert_eq!(fine["a"]["y"][2]["x"].to_string(), "18446744073709551616");
        assert_eq!(fine["b"]["x"], Value::Null);
    }

    #[test]
    fn one_pass_reads_what_serde_json_reads() {
        for body in [
            r#"{}"#,
            r#"{"a": [], "b": {}, "c": [[1, -2.50, 3e-7], {"d": true, "e": false}], "f": "\u00e9\n"}"#,
            r#"{"amount": 0.10, "big": -123456789012345678901234567890, "s": "tok_1"}"#,
        ] {
            let ours = Value::Object(json_object(body.as_bytes()).unwrap());
            let theirs: Value = serde_json::from_str(body).unwrap();
            assert_eq!(ours, theirs, "{body}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{body}");
        }
        for body in [
            r#"[1]"#,
            r#""x""#,
            r#"{"a": }"#,
            r#"{"a": 1"#,
            "",
            r#"{"a": 1} x"#,
            // What `serde_json` reads as a number (so not an object), as before.
            r#"{"$serde_json::private::Number": "12"}"#,
            // A number's text is taken strictly, as `serde_json`'s `Value` takes it.
            r#"{"a": {"$serde_json::private::Number": " 12"}}"#,
            r#"{"a": {"$serde_json::private::Number": "12 "}}"#,
            r#"{"a": {"$serde_json::private::Number": "{\"$serde_json::private::Number\": \"12\"}"}}"#,
        ] {
            assert!(json_object(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_raw_value_key_cannot_smuggle_a_second_document_past_the_duplicate_check() {
        // `serde_json`'s own `Value` would parse this string as JSON again, duplicate included.
        let body = r#"{"data": {"$serde_json::private::RawValue": "{\"cardNumber\": \"4242424242424242\", \"cardNumber\": \"5555555555554444\"}"}}"#;
        let parsed = json_object(body.as_bytes()).unwrap();
        let data = parsed["data"].as_object().unwrap();
        assert_eq!(data.len(), 1);
        assert!(data["$serde_json::private::RawValue"].is_string());
    }

    #[test]
    fn a_key_given_twice_in_an_object_of_many_keys_is_invalid_json() {
        let object = |keys: &[String]| {
            let fields: Vec<String> = keys.iter().map(|k| format!("\"{k}\": 1")).collect();
            format!("{{{}}}", fields.join(", "))
        };
        // As many keys as a hashed object needs several growths for.
        const FEW_KEYS: usize = 16;
        let many: Vec<String> = (0..3 * FEW_KEYS).map(|n| format!("k{n}")).collect();
        assert_eq!(
            json_object(object(&many).as_bytes()).unwrap().len(),
            many.len()
        );
        // Repeated near the start, across growths of the object, and near the end.
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
