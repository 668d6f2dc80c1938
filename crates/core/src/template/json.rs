//! A JSON document whose string values are templates.

use std::fmt;

use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Encoding, Placeholder, Substitutions, Template, UnknownPlaceholder};
use crate::json_keys::{Key, KeySet, NUMBER_KEY};

/// The caller's `request_data` as a JSON value, with placeholders found in its string values.
/// Object keys are never templates: card data has no business in a field name.
///
/// Invariant: the document is read once, into the compact text `serde_json` would write for
/// it less the string values that hold a placeholder; rendering copies that text and writes
/// each such value, filled in, where it was. A call's template is rendered once, so what its
/// reading builds is what its rendering costs.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    text: Vec<u8>,
    /// Each templated string value and where it goes in `text`, in order.
    holes: Vec<(usize, Template)>,
    used: Vec<Placeholder>,
    short_secrets_stand_alone: bool,
}

/// Why a document is no JSON template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonTemplateError {
    /// Not one JSON value, or an object in it repeats a key.
    InvalidJson,
    /// The document is JSON, and names a `${…}` that is no placeholder.
    UnknownPlaceholder,
}

impl JsonTemplate {
    /// Reads the document straight from its text, finding the placeholders in its strings.
    /// The text is checked as `serde_json`'s `Value` reads it (strings decoded, numbers as
    /// [`NUMBER_KEY`] says, 127 levels deep at most) and more: an object that gives a key
    /// twice is not JSON here (see [`crate::json_keys`]). `serde_json`'s key for a raw value,
    /// which its `Value` would read again as JSON, is an ordinary key here.
    ///
    /// # Errors
    /// [`JsonTemplateError::InvalidJson`] before [`JsonTemplateError::UnknownPlaceholder`]: the
    /// whole text is read either way.
    pub fn read(text: &str) -> Result<Self, JsonTemplateError> {
        let mut builder = Builder::default();
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Reader(&mut builder)
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end())
            .map_err(|_| JsonTemplateError::InvalidJson)?;
        builder
            .finish()
            .map_err(|_| JsonTemplateError::UnknownPlaceholder)
    }

    /// True when the document is an object or an array (a text starting with `{` can be a
    /// number to `serde_json`: see [`NUMBER_KEY`]).
    pub fn is_object_or_array(&self) -> bool {
        matches!(self.text.first(), Some(b'{' | b'['))
    }

    /// True when each CVC or account number placeholder is a whole string value.
    pub fn short_secrets_stand_alone(&self) -> bool {
        self.short_secrets_stand_alone
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.used.iter().copied()
    }

    /// The rendered document, as compact JSON: `serde_json`'s serialization of the document
    /// with every placeholder replaced (string values stay strings).
    ///
    /// # Errors
    /// A serialization error (none is expected: a string always serializes).
    pub fn render_bytes(&self, values: &Substitutions) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.text.len() + 32 * self.holes.len());
        let mut copied = 0;
        for (at, template) in &self.holes {
            out.extend_from_slice(self.text.get(copied..*at).unwrap_or_default());
            if let Some(placeholder) = template.only_placeholder() {
                // The value itself, serialized straight into the body: no copy to wipe.
                serde_json::to_writer(&mut out, values.get(placeholder).unwrap_or_default())?;
            } else {
                let text = zeroize::Zeroizing::new(template.render(values, Encoding::Raw));
                serde_json::to_writer(&mut out, text.as_str())?;
            }
            copied = *at;
        }
        out.extend_from_slice(self.text.get(copied..).unwrap_or_default());
        Ok(out)
    }
}

/// The text and holes of a template as they are read.
struct Builder {
    text: Vec<u8>,
    holes: Vec<(usize, Template)>,
    used: Vec<Placeholder>,
    short_secrets_stand_alone: bool,
    unknown_placeholder: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            text: Vec::with_capacity(256),
            holes: Vec::new(),
            used: Vec::new(),
            short_secrets_stand_alone: true,
            unknown_placeholder: false,
        }
    }
}

impl Builder {
    fn finish(mut self) -> Result<JsonTemplate, UnknownPlaceholder> {
        if self.unknown_placeholder {
            return Err(UnknownPlaceholder);
        }
        self.used.sort_unstable();
        self.used.dedup();
        Ok(JsonTemplate {
            text: self.text,
            holes: self.holes,
            used: self.used,
            short_secrets_stand_alone: self.short_secrets_stand_alone,
        })
    }

    /// A string value: written as it came, or a hole when it holds a placeholder.
    fn string(&mut self, s: &str) -> Result<(), serde_json::Error> {
        match Template::parse_if_templated(s) {
            Ok(None) => self.write(s),
            Ok(Some(template)) => {
                for p in template.placeholders() {
                    self.used.push(p);
                    if p.must_stand_alone() && !template.is_exactly(p) {
                        self.short_secrets_stand_alone = false;
                    }
                }
                self.holes.push((self.text.len(), template));
                Ok(())
            }
            Err(UnknownPlaceholder) => {
                self.unknown_placeholder = true;
                Ok(())
            }
        }
    }

    fn write(&mut self, scalar: &(impl Serialize + ?Sized)) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut self.text, scalar)
    }
}

/// Reads one JSON value into a [`Builder`].
struct Reader<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.0.write(&b).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<(), E> {
        self.0.write(&n).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<(), E> {
        self.0.write(&n).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<(), E> {
        self.0
            .write(&serde_json::Number::from_f64(n))
            .map_err(E::custom)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.0.string(s).map_err(E::custom)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.write(&()).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let builder = self.0;
        builder.text.push(b'[');
        let mut first = true;
        loop {
            let before = builder.text.len();
            if !first {
                builder.text.push(b',');
            }
            if seq.next_element_seed(Reader(builder))?.is_none() {
                builder.text.truncate(before);
                break;
            }
            first = false;
        }
        builder.text.push(b']');
        Ok(())
    }

    /// An object, or (under `arbitrary_precision`) a number, which arrives as a one-entry map
    /// of its text, taken as strictly as `serde_json`'s `Value` takes it.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let builder = self.0;
        let Some(Key(first)) = map.next_key::<Key<'de>>()? else {
            builder.text.extend_from_slice(b"{}");
            return Ok(());
        };
        if first == NUMBER_KEY {
            let Key(text) = map.next_value::<Key<'de>>()?;
            let number = text
                .parse::<serde_json::Number>()
                .map_err(serde::de::Error::custom)?;
            return builder.write(&number).map_err(serde::de::Error::custom);
        }
        let mut keys = KeySet::default();
        let mut key = first;
        builder.text.push(b'{');
        loop {
            builder
                .write(key.as_ref())
                .map_err(serde::de::Error::custom)?;
            builder.text.push(b':');
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Reader(builder))?;
            match map.next_key::<Key<'de>>()? {
                Some(Key(next)) => {
                    builder.text.push(b',');
                    key = next;
                }
                None => break,
            }
        }
        builder.text.push(b'}');
        Ok(())
    }
}
