//! The sensitive part of a token, as it is sealed into the database and opened for a proxy call.

use cardvault_core::secret::SecretString;
use cardvault_core::template::{Placeholder, Substitutions};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{CryptoError, Keyring, Sealed, aad};

/// Plaintext of a token. Lives only while a request needs it; wiped on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TokenData {
    Card {
        number: String,
        exp_month: String,
        exp_year: String,
        first_name: Option<String>,
        last_name: Option<String>,
    },
    Bank {
        account_number: String,
        routing_number: String,
        first_name: Option<String>,
        last_name: Option<String>,
    },
}

impl std::fmt::Debug for TokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenData([redacted])")
    }
}

impl TokenData {
    pub fn seal(
        &self,
        keyring: &Keyring,
        project_id: &str,
        token_id: &str,
    ) -> Result<Sealed, CryptoError> {
        // Serializing this enum of strings cannot fail.
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(self).unwrap_or_default());
        keyring.seal(&plain, &aad::token(project_id, token_id))
    }

    pub fn open(
        keyring: &Keyring,
        sealed: &Sealed,
        project_id: &str,
        token_id: &str,
    ) -> Result<Self, CryptoError> {
        let plain = keyring.open(sealed, &aad::token(project_id, token_id))?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Decrypt)
    }

    /// The values this token offers to a template (the CVC comes from its session, if any).
    pub fn substitutions(&self) -> Substitutions {
        let mut values = Substitutions::default();
        let mut set = |p: Placeholder, v: &str| values.set(p, SecretString::new(v.to_owned()));
        match self {
            Self::Card {
                number,
                exp_month,
                exp_year,
                first_name,
                last_name,
            } => {
                set(Placeholder::CardNumber, number);
                set(Placeholder::ExpirationMonth, exp_month);
                set(Placeholder::ExpirationYear, exp_year);
                let year2 = &exp_year[exp_year.len().saturating_sub(2)..];
                set(Placeholder::ExpirationYear2, year2);
                let year4 = if exp_year.len() == 4 {
                    exp_year.clone()
                } else {
                    format!("20{year2}")
                };
                set(Placeholder::ExpirationYear4, &year4);
                names(&mut set, first_name, last_name);
            }
            Self::Bank {
                account_number,
                routing_number,
                first_name,
                last_name,
            } => {
                set(Placeholder::AccountNumber, account_number);
                set(Placeholder::RoutingNumber, routing_number);
                names(&mut set, first_name, last_name);
            }
        }
        values
    }
}

fn names(set: &mut impl FnMut(Placeholder, &str), first: &Option<String>, last: &Option<String>) {
    if let Some(first) = first {
        set(Placeholder::FirstName, first);
    }
    if let Some(last) = last {
        set(Placeholder::LastName, last);
    }
}
