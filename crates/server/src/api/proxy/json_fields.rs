//! A JSON-mode body's fields, read in one pass and borrowed from it: each field as it came
//! (checked later, in their order), `request_data` as its text, to be read by its own reader
//! once the outgoing `Content-Type` says how. Every key outside `request_data`, at any depth,
//! is checked not to repeat here; `request_data`'s own by its reader.

use std::borrow::Cow;

use cardvault_core::json_keys::{Key, KeySet, NUMBER_KEY, from_utf8_json};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::api::body::UniqueKeys;
use crate::api::{ApiError, BodyKind};

/// A field of the body, before its checks.
#[derive(Default)]
pub enum Field<'a> {
    #[default]
    Absent,
    Null,
    Text(Cow<'a, str>),
    Bool(bool),
    /// An object's pairs in the order given (`http_headers` is one).
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
    /// A number or an array.
    Other,
}

#[derive(Default)]
pub struct ProxyFields<'a> {
    pub token: Field<'a>,
    pub proxy_url: Field<'a>,
    /// The text of `request_data` (`null` included) when given.
    pub request_data: Option<&'a RawValue>,
    pub http_headers: Field<'a>,
    pub http_method: Field<'a>,
    pub cvc_session_id: Field<'a>,
    pub dry_run: Field<'a>,
}

impl<'a> ProxyFields<'a> {
    /// # Errors
    /// `400 Invalid JSON`: not a JSON object, or a key given twice anywhere outside
    /// `request_data` (whose text is only captured here, and read later).
    pub fn read(bytes: &'a [u8]) -> Result<Self, ApiError> {
        from_utf8_json(bytes).ok_or(ApiError::InvalidBody(BodyKind::Json))
    }
}

impl<'de> Deserialize<'de> for ProxyFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = ProxyFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProxyFields<'de>, A::Error> {
        let mut fields = ProxyFields::default();
        let mut keys = KeySet::default();
        let mut first = true;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            // What `serde_json`'s `Value` reads as a number is no object, as before.
            if first && key == NUMBER_KEY {
                return Err(A::Error::custom("a number"));
            }
            first = false;
            match key.as_ref() {
                "token" => fields.token = map.next_value()?,
                "proxy_url" => fields.proxy_url = map.next_value()?,
                "request_data" => fields.request_data = Some(map.next_value()?),
                "http_headers" => fields.http_headers = map.next_value()?,
                "http_method" => fields.http_method = map.next_value()?,
                "cvc_session_id" => fields.cvc_session_id = map.next_value()?,
                "dry_run" => fields.dry_run = map.next_value()?,
                _ => {
                    map.next_value::<UniqueKeys>()?;
                }
            }
            if !keys.insert(key) {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(fields)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(b))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    /// Read as strictly as any other value (keys unique), then set aside.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        UniqueKeys::visit_seq(seq).map(|()| Field::Other)
    }
    /// An object, or a number (see [`NUMBER_KEY`]), its text taken as strictly as
    /// `serde_json`'s `Value` takes it.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        let mut pairs = Vec::new();
        let mut keys = KeySet::default();
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            if pairs.is_empty() && name == NUMBER_KEY {
                let Key(text) = map.next_value::<Key<'de>>()?;
                return text
                    .parse::<serde_json::Number>()
                    .map(|_| Field::Other)
                    .map_err(A::Error::custom);
            }
            let value: Field<'de> = map.next_value()?;
            if !keys.insert(name.clone()) {
                return Err(A::Error::custom("duplicate key"));
            }
            pairs.push((name, value));
        }
        Ok(Field::Object(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(field: &'a Field<'_>) -> Option<&'a str> {
        match field {
            Field::Text(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn fields_are_borrowed_where_the_body_allows_and_kept_as_they_came() {
        let body = br#"{"token": "tok_1", "proxy_url": "https://p\u0061y.example/x", "request_data": {"a": [1, "${cardNumber}"]}, "http_headers": {"Authorization": "Bearer k", "X-N": 1}, "http_method": 7, "dry_run": true, "extra": {"k": [1]}}"#;
        let fields = ProxyFields::read(body).unwrap();
        assert!(matches!(fields.token, Field::Text(Cow::Borrowed("tok_1"))));
        assert_eq!(text(&fields.proxy_url), Some("https://pay.example/x"));
        assert_eq!(
            fields.request_data.unwrap().get(),
            r#"{"a": [1, "${cardNumber}"]}"#
        );
        let Field::Object(pairs) = &fields.http_headers else {
            panic!("headers");
        };
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].0, "Authorization");
        assert_eq!(text(&pairs[0].1), Some("Bearer k"));
        assert!(matches!(pairs[1].1, Field::Other));
        assert!(matches!(fields.http_method, Field::Other));
        assert!(matches!(fields.cvc_session_id, Field::Absent));
        assert!(matches!(fields.dry_run, Field::Bool(true)));
    }

    #[test]
    fn a_key_given_twice_outside_request_data_or_a_body_not_an_object_is_invalid_json() {
        for body in [
            r#"{"token": "a", "token": "b"}"#,
            r#"{"token": "a", "\u0074oken": "b"}"#,
            r#"{"extra": 1, "extra": 2}"#,
            r#"{"http_headers": {"A": "1", "A": "2"}}"#,
            r#"{"extra": {"k": {"x": 1, "x": 2}}}"#,
            r#"{"token": [{"x": 1, "x": 2}]}"#,
            r#"{"http_headers": [{"x": 1, "x": 2}]}"#,
            r#"{"$serde_json::private::Number": "12"}"#,
            r#"{"http_headers": {"$serde_json::private::Number": "x"}}"#,
            r#"{"token": "a"} x"#,
            r#"[1]"#,
            "",
        ] {
            assert!(
                matches!(
                    ProxyFields::read(body.as_bytes()),
                    Err(ApiError::InvalidBody(BodyKind::Json))
                ),
                "{body}"
            );
        }
    }
}
