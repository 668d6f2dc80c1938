//! Payment cards: the number (PAN), its brand, the expiry and the security code.

use std::fmt;

use crate::date::YearMonth;
use crate::mask;
use crate::secret::SecretString;
use crate::validation::ValidationError;

/// A primary account number that is 13–19 digits and passes the Luhn check.
///
/// Invariant: holds digits only (spaces and dashes stripped), so it can be substituted as is.
pub struct Pan(SecretString);

impl Pan {
    /// Strips spaces and dashes, then checks length, digits and the Luhn checksum.
    ///
    /// # Errors
    /// [`ValidationError::InvalidCardNumber`] for anything that is not a valid card number.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        // Sized once: a string grown as it fills would free its earlier buffers unwiped.
        let mut digits = String::with_capacity(input.len());
        digits.extend(input.chars().filter(|c| *c != ' ' && *c != '-'));
        let digits = SecretString::new(digits);
        let raw = digits.expose_secret();
        if !(13..=19).contains(&raw.len()) || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::InvalidCardNumber);
        }
        if !luhn_valid(raw) {
            return Err(ValidationError::InvalidCardNumber);
        }
        Ok(Self(digits))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn brand(&self) -> Brand {
        Brand::detect(self.expose_secret())
    }

    /// The issuer identification number as the API reports it: the first six digits.
    pub fn bin(&self) -> &str {
        &self.expose_secret()[..6]
    }

    pub fn last4(&self) -> &str {
        let raw = self.expose_secret();
        &raw[raw.len() - 4..]
    }

    pub fn masked(&self) -> String {
        mask::card_number(self.expose_secret())
    }

    pub fn duplicate(&self) -> Self {
        Self(self.0.duplicate())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

/// The Luhn (mod 10) checksum over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b.wrapping_sub(b'0'));
        if d > 9 {
            return false;
        }
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Card networks we recognise from the leading digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Diners,
    Jcb,
    UnionPay,
    Maestro,
    Unknown,
}

impl Brand {
    /// Detects the brand from a digit string (only its first six digits are read).
    pub fn detect(digits: &str) -> Self {
        let prefix =
            |n: usize| -> u32 { digits.get(..n).and_then(|p| p.parse().ok()).unwrap_or(0) };
        let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
        match () {
            _ if p2 == 34 || p2 == 37 => Self::Amex,
            _ if (622_126..=622_925).contains(&p6) => Self::Discover,
            _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 => Self::Discover,
            _ if (3528..=3589).contains(&p4) => Self::Jcb,
            _ if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 => {
                Self::Diners
            }
            _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => Self::Mastercard,
            _ if p1 == 4 => Self::Visa,
            _ if p2 == 62 || p2 == 81 => Self::UnionPay,
            _ if p2 == 50 || (56..=58).contains(&p2) || p2 == 63 || p2 == 67 => Self::Maestro,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Diners => "diners",
            Self::Jcb => "jcb",
            Self::UnionPay => "unionpay",
            Self::Maestro => "maestro",
            Self::Unknown => "unknown",
        }
    }

    /// Digits in this brand's security code: 4 for American Express, 3 for the others.
    pub fn cvc_length(self) -> usize {
        if self == Self::Amex { 4 } else { 3 }
    }
}

/// A card's expiry, kept as tokenized: the month zero-padded, the year with 2 or 4 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    month: String,
    year: String,
}

impl Expiry {
    /// Parses month (`1`–`12`, zero-padded on output) and year (2 or 4 digits) and refuses a card
    /// whose expiry month is before `today`'s.
    ///
    /// # Errors
    /// `InvalidField("expirationMonth" | "expirationYear")` for malformed values,
    /// [`ValidationError::CardExpired`] for a month in the past.
    pub fn parse(month: &str, year: &str, today: YearMonth) -> Result<Self, ValidationError> {
        let month = month.trim();
        let year = year.trim();
        let m: u8 = match month.len() {
            1 | 2 if month.bytes().all(|b| b.is_ascii_digit()) => month
                .parse()
                .map_err(|_| ValidationError::InvalidField("expirationMonth"))?,
            _ => return Err(ValidationError::InvalidField("expirationMonth")),
        };
        if !(1..=12).contains(&m) {
            return Err(ValidationError::InvalidField("expirationMonth"));
        }
        if !(year.len() == 2 || year.len() == 4) || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::InvalidField("expirationYear"));
        }
        let full_year: u16 = year
            .parse::<u16>()
            .map_err(|_| ValidationError::InvalidField("expirationYear"))?;
        let full_year = if year.len() == 2 {
            2000 + full_year
        } else {
            full_year
        };
        // Cards are issued for at most a few years; a year far ahead is a typo, not a card.
        if full_year > today.year.saturating_add(50) {
            return Err(ValidationError::InvalidField("expirationYear"));
        }
        if (YearMonth {
            year: full_year,
            month: m,
        }) < today
        {
            return Err(ValidationError::CardExpired);
        }
        Ok(Self {
            month: format!("{m:02}"),
            year: year.to_owned(),
        })
    }

    /// Rebuilds an expiry that was validated when it was stored.
    pub fn from_stored(month: String, year: String) -> Self {
        Self { month, year }
    }

    /// Two digits, `01`–`12`.
    pub fn month(&self) -> &str {
        &self.month
    }

    /// The year as it was tokenized (2 or 4 digits).
    pub fn year(&self) -> &str {
        &self.year
    }

    pub fn year2(&self) -> &str {
        &self.year[self.year.len() - 2..]
    }

    pub fn year4(&self) -> String {
        if self.year.len() == 4 {
            self.year.clone()
        } else {
            format!("20{}", self.year)
        }
    }
}

/// A card security code (CVV/CVC/CID).
pub struct Cvc(SecretString);

impl Cvc {
    /// Checks the code is digits of the length `brand` uses.
    ///
    /// # Errors
    /// `InvalidField(field)` for a wrong length or a non-digit.
    pub fn parse(input: &str, brand: Brand, field: &'static str) -> Result<Self, ValidationError> {
        let value = SecretString::new(input.trim().to_owned());
        let raw = value.expose_secret();
        if raw.len() != brand.cvc_length() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::InvalidField(field));
        }
        Ok(Self(value))
    }

    /// Rebuilds a code that was validated when its session was created.
    pub fn from_stored(value: SecretString) -> Self {
        Self(value)
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

#[cfg(test)]
mod tests;
