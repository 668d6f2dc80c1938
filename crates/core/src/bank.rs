//! US bank accounts: the account number and the ABA routing number.

use std::fmt;

use crate::mask;
use crate::secret::SecretString;
use crate::validation::ValidationError;

/// A bank account number: 4–17 digits.
pub struct AccountNumber(SecretString);

impl AccountNumber {
    /// # Errors
    /// `InvalidField("accountNumber")` unless the input is 4–17 digits (spaces and dashes allowed).
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let digits = SecretString::new(input.chars().filter(|c| *c != ' ' && *c != '-').collect());
        let raw = digits.expose_secret();
        if !(4..=17).contains(&raw.len()) || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::InvalidField("accountNumber"));
        }
        Ok(Self(digits))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn last4(&self) -> &str {
        let raw = self.expose_secret();
        &raw[raw.len() - 4..]
    }

    pub fn masked(&self) -> String {
        mask::account_number(self.expose_secret())
    }
}

impl fmt::Debug for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountNumber({})", self.masked())
    }
}

/// An ABA routing transit number: 9 digits with a valid checksum. Public information (it names
/// the bank, not the account), so it is shown in responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingNumber(String);

impl RoutingNumber {
    /// # Errors
    /// `InvalidField("routingNumber")` unless the input is 9 digits with a valid ABA checksum.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let digits = input.trim();
        if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::InvalidField("routingNumber"));
        }
        // Weights 3, 7, 1 repeating: 3·(d0+d3+d6) + 7·(d1+d4+d7) + (d2+d5+d8).
        let sum: u32 = digits
            .bytes()
            .zip([3, 7, 1].into_iter().cycle())
            .map(|(b, weight)| weight * u32::from(b - b'0'))
            .sum();
        if !sum.is_multiple_of(10) {
            return Err(ValidationError::InvalidField("routingNumber"));
        }
        Ok(Self(digits.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_numbers_follow_the_aba_checksum() {
        for good in ["110000000", "021000021", "011401533", "091000019"] {
            assert!(RoutingNumber::parse(good).is_ok(), "{good}");
        }
        for bad in ["110000001", "12345678", "1234567890", "11000000a", ""] {
            assert_eq!(
                RoutingNumber::parse(bad),
                Err(ValidationError::InvalidField("routingNumber")),
                "{bad}"
            );
        }
    }

    #[test]
    fn account_numbers_are_4_to_17_digits() {
        let account = AccountNumber::parse("000123456789").unwrap();
        assert_eq!(account.last4(), "6789");
        assert_eq!(account.masked(), "********6789");
        assert_eq!(format!("{account:?}"), "AccountNumber(********6789)");
        for bad in ["123", "123456789012345678", "12a4", ""] {
            assert!(AccountNumber::parse(bad).is_err(), "{bad}");
        }
    }
}
