//! Reading a JSON object's keys as the proxy reads its JSON requests: borrowed from the body
//! where it has no escapes, and never the same key twice (parsers disagree on which of two wins, so a
//! front proxy that reads the first would check a different request from the one the vault runs).
//! And JSON read from bytes with their UTF-8 checked once ([`from_utf8_json`]).

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{Deserialize, Deserializer, Visitor};
use smallvec::SmallVec;

/// How `serde_json` with `arbitrary_precision` (which the templates need, to send amounts
/// digit for digit) hands a number to a visitor: as a one-entry map under this key, whose
/// value is the number's text. An object whose first key is this is a number to its `Value`,
/// and so to every reader here.
pub const NUMBER_KEY: &str = "$serde_json::private::Number";

/// An object key, or any string, decoded; borrowed from the text when it holds no escape.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
}

/// The keys of one object seen so far. A short list while the object is small (most are):
/// cheaper than hashing, and up to [`INLINE`] keys no allocation (a proxy call's body has five
/// objects); a set past [`FEW`], so an object of many keys costs linear time.
#[derive(Default)]
pub struct KeySet<'de> {
    few: SmallVec<[Cow<'de, str>; INLINE]>,
    many: HashSet<Cow<'de, str>>,
}

/// Objects up to this many keys are checked by comparing with each.
const FEW: usize = 16;
/// Keys held without an allocation.
const INLINE: usize = 8;

impl<'de> KeySet<'de> {
    /// Adds a key; false when the object already has it.
    pub fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return false;
            }
            if self.few.len() < FEW {
                self.few.push(key);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key)
    }
}

/// Reads `T` from JSON bytes, checking them as UTF-8 once: read from bytes, `serde_json`
/// checks each string it meets again (18 strings in a proxy call's body). `None` when the
/// bytes are not UTF-8 or not a `T`.
pub fn from_utf8_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_refused_the_second_time_before_and_after_the_set_grows() {
        let mut keys = KeySet::default();
        for n in 0..3 * FEW {
            assert!(keys.insert(Cow::Owned(format!("k{n}"))), "k{n}");
            for seen in [0, n / 2, n] {
                assert!(
                    !keys.insert(Cow::Owned(format!("k{seen}"))),
                    "k{seen} at {n}"
                );
            }
        }
    }

    #[test]
    fn keys_without_escapes_are_borrowed() {
        let Key(plain) = serde_json::from_str::<Key<'_>>(r#""token""#).unwrap();
        assert!(matches!(plain, Cow::Borrowed("token")));
        let Key(escaped) = serde_json::from_str::<Key<'_>>(r#""\u0074oken""#).unwrap();
        assert_eq!(escaped, "token");
    }
}
