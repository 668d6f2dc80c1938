//! The sensitive part of a token, as it is sealed into the database and opened for a proxy call.
//!
//! In memory it is held in core's types (`Pan`, `Expiry`, `AccountNumber`), which redact
//! themselves and are wiped on drop. The sealed form is a private JSON shape (unchanged since
//! the first version, so every stored token still opens); it exists only inside `seal` and
//! `open`, in buffers that are wiped too. A token's `allowed_destinations` rule is sealed in the
//! same plaintext (an optional field, absent from tokens without one), so it cannot be changed
//! without the ciphertext failing to open.

use cardvault_core::bank::{AccountNumber, RoutingNumber};
use cardvault_core::card::{Expiry, Pan};
use cardvault_core::template::{Placeholder, Substitutions};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::AllowedDestinations;
use crate::crypto::{CryptoError, Keyring, Sealed, aad};

/// Plaintext of a token. Lives only while a request needs it; wiped on drop.
pub enum TokenData {
    Card {
        pan: Pan,
        expiry: Expiry,
        holder: Holder,
    },
    Bank {
        account: AccountNumber,
        routing: RoutingNumber,
        holder: Holder,
    },
}

/// The holder's name, when it was tokenized.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct Holder {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl std::fmt::Debug for TokenData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenData([redacted])")
    }
}

/// The sealed form. Field names and tags are a stored format: never rename them.
///
/// Read through [`Flat`], in one pass: serde reads an internally tagged enum by first
/// buffering every field as generic content, then reading the variant from that, ~1,000
/// instructions more of every proxy call's token (docs/benchmarks.md).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "Flat")]
enum Stored {
    Card {
        number: String,
        exp_month: String,
        exp_year: String,
        first_name: Option<String>,
        last_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed_destinations: Option<Vec<String>>,
    },
    Bank {
        account_number: String,
        routing_number: String,
        first_name: Option<String>,
        last_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed_destinations: Option<Vec<String>>,
    },
}

/// Every field of either kind of [`Stored`], read in one pass. Unknown fields are ignored, as
/// the tagged enum ignored them; the other kind's fields are read too (and must have their
/// types), which the tagged enum did not ask: the vault never seals a form with both.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct Flat {
    #[zeroize(skip)]
    kind: Kind,
    number: Option<String>,
    exp_month: Option<String>,
    exp_year: Option<String>,
    account_number: Option<String>,
    routing_number: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    allowed_destinations: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Card,
    Bank,
}

impl TryFrom<Flat> for Stored {
    type Error = &'static str;

    /// The fields move (`take`), so that what `Flat` wipes as it drops is empty.
    fn try_from(mut flat: Flat) -> Result<Self, Self::Error> {
        let required = |field: &mut Option<String>| field.take().ok_or("a missing field");
        Ok(match flat.kind {
            Kind::Card => Self::Card {
                number: required(&mut flat.number)?,
                exp_month: required(&mut flat.exp_month)?,
                exp_year: required(&mut flat.exp_year)?,
                first_name: flat.first_name.take(),
                last_name: flat.last_name.take(),
                allowed_destinations: flat.allowed_destinations.take(),
            },
            Kind::Bank => Self::Bank {
                account_number: required(&mut flat.account_number)?,
                routing_number: required(&mut flat.routing_number)?,
                first_name: flat.first_name.take(),
                last_name: flat.last_name.take(),
                allowed_destinations: flat.allowed_destinations.take(),
            },
        })
    }
}

impl TokenData {
    /// Encrypts the data for its row, with no rule on where it may be sent.
    ///
    /// # Errors
    /// [`CryptoError`] when sealing fails (or, never expected, serialization).
    pub fn seal(
        &self,
        keyring: &Keyring,
        project_id: &str,
        token_id: &str,
    ) -> Result<Sealed, CryptoError> {
        self.seal_with_rule(None, keyring, project_id, token_id)
    }

    /// Encrypts the data for its row, with the token's `allowed_destinations` inside.
    ///
    /// # Errors
    /// [`CryptoError`] when sealing fails (or, never expected, serialization).
    pub fn seal_with_rule(
        &self,
        allowed: Option<&AllowedDestinations>,
        keyring: &Keyring,
        project_id: &str,
        token_id: &str,
    ) -> Result<Sealed, CryptoError> {
        let stored = self.to_stored(allowed.map(AllowedDestinations::patterns));
        let plain =
            Zeroizing::new(serde_json::to_vec(&stored).map_err(|_| CryptoError::Serialize)?);
        keyring.seal(&plain, &aad::token(project_id, token_id))
    }

    /// Decrypts a row's data, without its rule on where it may be sent: for calls that send it
    /// nowhere. A call that sends it somewhere uses [`Self::open_with_rule`].
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] when the ciphertext was altered or moved, or its content is not
    /// valid token data.
    pub fn open(
        keyring: &Keyring,
        sealed: &Sealed,
        project_id: &str,
        token_id: &str,
    ) -> Result<Self, CryptoError> {
        Self::open_with_rule(keyring, sealed, project_id, token_id).map(|(data, _)| data)
    }

    /// Decrypts a row's data and its `allowed_destinations` (`None`: the token has no rule).
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] when the ciphertext was altered or moved, or its content
    /// (the rule included) is not valid token data.
    pub fn open_with_rule(
        keyring: &Keyring,
        sealed: &Sealed,
        project_id: &str,
        token_id: &str,
    ) -> Result<(Self, Option<AllowedDestinations>), CryptoError> {
        let plain = keyring.open(sealed, &aad::token(project_id, token_id))?;
        let mut stored: Stored =
            cardvault_core::json_keys::from_utf8_json(&plain).ok_or(CryptoError::Decrypt)?;
        let allowed = match &stored {
            Stored::Card {
                allowed_destinations,
                ..
            }
            | Stored::Bank {
                allowed_destinations,
                ..
            } => allowed_destinations
                .as_deref()
                .map(AllowedDestinations::from_sealed)
                .transpose()
                .map_err(|_| CryptoError::Decrypt)?,
        };
        let data = Self::from_stored(&mut stored).ok_or(CryptoError::Decrypt)?;
        Ok((data, allowed))
    }

    /// What makes two submissions the same card or account (hashed for deduplication, never
    /// stored as is).
    pub fn identity(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Self::Card { pan, .. } => pan.expose_secret().as_bytes().to_vec(),
            Self::Bank {
                account, routing, ..
            } => format!("{}:{}", routing.as_str(), account.expose_secret()).into_bytes(),
        })
    }

    /// The values this token offers to a template (the CVC comes from its session, if any).
    pub fn substitutions(&self) -> Substitutions {
        let mut values = Substitutions::default();
        let mut set = |p: Placeholder, v: &str| values.set_str(p, v);
        let holder = match self {
            Self::Card {
                pan,
                expiry,
                holder,
            } => {
                set(Placeholder::CardNumber, pan.expose_secret());
                set(Placeholder::ExpirationMonth, expiry.month());
                set(Placeholder::ExpirationYear, expiry.year());
                set(Placeholder::ExpirationYear2, expiry.year2());
                set(Placeholder::ExpirationYear4, &expiry.year4());
                holder
            }
            Self::Bank {
                account,
                routing,
                holder,
            } => {
                set(Placeholder::AccountNumber, account.expose_secret());
                set(Placeholder::RoutingNumber, routing.as_str());
                holder
            }
        };
        if let Some(first) = &holder.first_name {
            set(Placeholder::FirstName, first);
        }
        if let Some(last) = &holder.last_name {
            set(Placeholder::LastName, last);
        }
        values
    }

    fn to_stored(&self, allowed_destinations: Option<Vec<String>>) -> Stored {
        match self {
            Self::Card {
                pan,
                expiry,
                holder,
            } => Stored::Card {
                number: pan.expose_secret().to_owned(),
                exp_month: expiry.month().to_owned(),
                exp_year: expiry.year().to_owned(),
                first_name: holder.first_name.clone(),
                last_name: holder.last_name.clone(),
                allowed_destinations,
            },
            Self::Bank {
                account,
                routing,
                holder,
            } => Stored::Bank {
                account_number: account.expose_secret().to_owned(),
                routing_number: routing.as_str().to_owned(),
                first_name: holder.first_name.clone(),
                last_name: holder.last_name.clone(),
                allowed_destinations,
            },
        }
    }

    /// Rebuilds the typed values; the data was validated when it was stored, so a value that
    /// no longer parses means the stored data is wrong.
    /// Its values moved out of `stored` (left empty), not copied: this runs on every call.
    fn from_stored(stored: &mut Stored) -> Option<Self> {
        Some(match stored {
            Stored::Card {
                number,
                exp_month,
                exp_year,
                first_name,
                last_name,
                ..
            } => Self::Card {
                pan: Pan::parse(number).ok()?,
                expiry: Expiry::from_stored(std::mem::take(exp_month), std::mem::take(exp_year)),
                holder: Holder {
                    first_name: first_name.take(),
                    last_name: last_name.take(),
                },
            },
            Stored::Bank {
                account_number,
                routing_number,
                first_name,
                last_name,
                ..
            } => Self::Bank {
                account: AccountNumber::parse(account_number).ok()?,
                routing: RoutingNumber::parse(routing_number).ok()?,
                holder: Holder {
                    first_name: first_name.take(),
                    last_name: last_name.take(),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn keyring() -> Keyring {
        let master = MasterKey::generate().unwrap();
        Keyring::new(&master, &[Keyring::wrap_new_data_key(&master, 1).unwrap()]).unwrap()
    }

    /// The sealed form as serde's internally tagged enum reads it, which `Stored` read itself
    /// before [`Flat`].
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    enum Tagged {
        Card {
            number: String,
            exp_month: String,
            exp_year: String,
            first_name: Option<String>,
            last_name: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            allowed_destinations: Option<Vec<String>>,
        },
        Bank {
            account_number: String,
            routing_number: String,
            first_name: Option<String>,
            last_name: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            allowed_destinations: Option<Vec<String>>,
        },
    }

    #[test]
    fn the_sealed_form_reads_as_the_tagged_enum_read_it() {
        for text in [
            r#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","first_name":"Jane","last_name":null}"#,
            r#"{"number":"4242424242424242","exp_year":"31","exp_month":"07","kind":"card"}"#,
            r#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","allowed_destinations":["api.stripe.com"],"extra":{"a":[1]}}"#,
            r#"{"kind":"bank","account_number":"000123456789","routing_number":"110000000","first_name":null,"last_name":"Doe"}"#,
            r#"{"kind":"bank","account_number":"000123456789","routing_number":"110000000","number":"4242424242424242"}"#,
            r#"{"kind":"card","number":"4242424242424242","exp_month":"07"}"#,
            r#"{"kind":"bank","number":"4242424242424242","exp_month":"07","exp_year":"31"}"#,
            r#"{"kind":"cheque","number":"4242424242424242","exp_month":"07","exp_year":"31"}"#,
            r#"{"number":"4242424242424242","exp_month":"07","exp_year":"31"}"#,
            r#"{"kind":"card","number":"4242424242424242","number":"4000056655665556","exp_month":"07","exp_year":"31"}"#,
            r#"{"kind":"card","kind":"bank","account_number":"000123456789","routing_number":"110000000"}"#,
            r#"{"kind":"card","number":4242424242424242,"exp_month":"07","exp_year":"31"}"#,
            r#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","first_name":7}"#,
            r#"{"kind":"card","number":"4242\u0034242424242424","exp_month":"07","exp_year":"31"}"#,
            r#"["card","4242424242424242","07","31"]"#,
            "null",
        ] {
            let flat =
                serde_json::from_str::<Stored>(text).map(|s| serde_json::to_value(&s).unwrap());
            let tagged =
                serde_json::from_str::<Tagged>(text).map(|t| serde_json::to_value(&t).unwrap());
            match (flat, tagged) {
                (Ok(flat), Ok(tagged)) => assert_eq!(flat, tagged, "{text}"),
                (Err(_), Err(_)) => {}
                (flat, tagged) => panic!("{text}: read as {flat:?}, the tagged enum as {tagged:?}"),
            }
        }
    }

    #[test]
    fn records_sealed_in_the_first_format_still_open() {
        let keyring = keyring();
        let first_format = br#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","first_name":"Jane","last_name":null}"#;
        let sealed = keyring
            .seal(first_format, &aad::token("proj_1", "tok_1"))
            .unwrap();
        let data = TokenData::open(&keyring, &sealed, "proj_1", "tok_1").unwrap();
        let values = data.substitutions();
        assert_eq!(
            values.get(Placeholder::CardNumber),
            Some("4242424242424242")
        );
        assert_eq!(values.get(Placeholder::ExpirationYear), Some("31"));
        assert_eq!(values.get(Placeholder::ExpirationYear2), Some("31"));
        assert_eq!(values.get(Placeholder::ExpirationYear4), Some("2031"));
        assert_eq!(values.get(Placeholder::FirstName), Some("Jane"));
        assert_eq!(values.get(Placeholder::LastName), None);
        assert_eq!(format!("{data:?}"), "TokenData([redacted])");
    }

    #[test]
    fn sealed_data_round_trips_and_stays_bound_to_its_row() {
        let keyring = keyring();
        let data = TokenData::Bank {
            account: AccountNumber::parse("000123456789").unwrap(),
            routing: RoutingNumber::parse("110000000").unwrap(),
            holder: Holder::default(),
        };
        let sealed = data.seal(&keyring, "proj_1", "tok_1").unwrap();
        let opened = TokenData::open(&keyring, &sealed, "proj_1", "tok_1").unwrap();
        assert_eq!(
            opened.substitutions().get(Placeholder::AccountNumber),
            Some("000123456789")
        );
        assert!(TokenData::open(&keyring, &sealed, "proj_1", "tok_2").is_err());
        assert_eq!(&*data.identity(), b"110000000:000123456789");
    }

    #[test]
    fn the_rule_is_sealed_with_the_data_and_old_records_have_none() {
        let keyring = keyring();
        let data = TokenData::Card {
            pan: Pan::parse("4242424242424242").unwrap(),
            expiry: Expiry::from_stored("07".into(), "31".into()),
            holder: Holder::default(),
        };
        let rule = AllowedDestinations::parse(&["api.stripe.com"]).unwrap();
        let sealed = data
            .seal_with_rule(Some(&rule), &keyring, "proj_1", "tok_1")
            .unwrap();
        let (_, opened) = TokenData::open_with_rule(&keyring, &sealed, "proj_1", "tok_1").unwrap();
        assert_eq!(opened, Some(rule));
        let plain = keyring
            .open(&sealed, &aad::token("proj_1", "tok_1"))
            .unwrap();
        assert!(
            std::str::from_utf8(&plain)
                .unwrap()
                .contains(r#""allowed_destinations":["api.stripe.com"]"#)
        );
        let unruled = data.seal(&keyring, "proj_1", "tok_1").unwrap();
        let (_, none) = TokenData::open_with_rule(&keyring, &unruled, "proj_1", "tok_1").unwrap();
        assert_eq!(none, None);
        // A sealed rule that no longer parses (or is empty) fails like altered data.
        for broken in [
            &br#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","first_name":null,"last_name":null,"allowed_destinations":[]}"#[..],
            &br#"{"kind":"card","number":"4242424242424242","exp_month":"07","exp_year":"31","first_name":null,"last_name":null,"allowed_destinations":["*"]}"#[..],
        ] {
            let sealed = keyring.seal(broken, &aad::token("proj_1", "tok_1")).unwrap();
            assert!(TokenData::open(&keyring, &sealed, "proj_1", "tok_1").is_err());
        }
    }
}
