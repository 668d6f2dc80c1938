//! A string that never prints itself and is wiped from memory when dropped.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Sensitive text: a card number, a CVC, an account number, a key.
///
/// Invariant: `Debug` and `Display` never show the contents; the only way to the raw value is
/// [`SecretString::expose_secret`], so every use of the raw value is visible in review.
/// No `PartialEq`: comparing secrets with `==` leaks their contents through timing; whoever
/// needs to compare one does it in constant time, on purpose.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// For a buffer of secrets the crate fills in place; it must not grow by itself (a
    /// reallocation would free the old contents unwiped).
    pub(crate) fn expose_secret_mut(&mut self) -> &mut String {
        &mut self.0
    }

    /// A second copy, made on purpose (no `Clone`, so copies are never accidental).
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = SecretString::new("4242424242424242".to_owned());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose_secret(), "4242424242424242");
    }
}
