//! Where a record's fields are in another vault's export: column names (CSV) or keys (JSON
//! lines), found by their common names or named by the operator (`--map number=cc_num`), and
//! turned into the fields of `POST /tokenize`'s `data`, so a record is validated exactly as the
//! API validates one.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A field of an imported record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The record's id in the vault it comes from (the import's key).
    Id,
    /// `card` or `bank` (absent: a bank account when there is a routing number, else a card).
    Type,
    Number,
    ExpMonth,
    ExpYear,
    /// Month and year in one value: `MM/YY`, `MM/YYYY`, `MM-YY`, `YYYY-MM`.
    Expiry,
    FirstName,
    LastName,
    /// The holder's full name, split at its last space when there are no separate names.
    Name,
    AccountNumber,
    RoutingNumber,
    /// When the token expires: RFC 3339, as `POST /tokenize`'s `expires_at`.
    ExpiresAt,
    /// The token's own rule on where it may be sent, as `POST /tokenize`'s
    /// `allowed_destinations`: a JSON list, or in a CSV column the patterns separated by spaces.
    AllowedDestinations,
}

impl Field {
    pub const ALL: [Self; 13] = [
        Self::Id,
        Self::Type,
        Self::Number,
        Self::ExpMonth,
        Self::ExpYear,
        Self::Expiry,
        Self::FirstName,
        Self::LastName,
        Self::Name,
        Self::AccountNumber,
        Self::RoutingNumber,
        Self::ExpiresAt,
        Self::AllowedDestinations,
    ];

    /// The field's name in `--map` and in the export layout.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Type => "type",
            Self::Number => "number",
            Self::ExpMonth => "exp_month",
            Self::ExpYear => "exp_year",
            Self::Expiry => "expiry",
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::Name => "name",
            Self::AccountNumber => "account_number",
            Self::RoutingNumber => "routing_number",
            Self::ExpiresAt => "expires_at",
            Self::AllowedDestinations => "allowed_destinations",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Column names (normalized: lowercase letters and digits only) this field is found by
    /// when no `--map` names its column: the names common exports use.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Id => &[
                "id",
                "oldid",
                "token",
                "tokenid",
                "cardid",
                "paymentmethodid",
                "paymentmethodtoken",
                "externalid",
            ],
            Self::Type => &["type", "kind", "paymentmethodtype"],
            Self::Number => &[
                "number",
                "cardnumber",
                "pan",
                "ccnumber",
                "cardno",
                "primaryaccountnumber",
            ],
            Self::ExpMonth => &["expmonth", "expirationmonth", "expirymonth", "month"],
            Self::ExpYear => &["expyear", "expirationyear", "expiryyear", "year"],
            Self::Expiry => &[
                "expiry",
                "expiration",
                "exp",
                "expirationdate",
                "expirydate",
                "expdate",
            ],
            Self::FirstName => &["firstname", "givenname"],
            Self::LastName => &["lastname", "surname", "familyname"],
            Self::Name => &[
                "name",
                "fullname",
                "holdername",
                "cardholdername",
                "cardholder",
                "nameoncard",
            ],
            Self::AccountNumber => &["accountnumber", "bankaccountnumber", "account"],
            Self::RoutingNumber => &["routingnumber", "abaroutingnumber", "routing", "aba"],
            Self::ExpiresAt => &["expiresat", "tokenexpiresat"],
            Self::AllowedDestinations => &["alloweddestinations"],
        }
    }

    /// The layout's name for a `/tokenize` field named in a validation error.
    pub fn for_api_field(api: &str) -> &str {
        match api {
            "cardNumber" => "number",
            "expirationMonth" => "exp_month",
            "expirationYear" => "exp_year",
            "firstName" => "first_name",
            "lastName" => "last_name",
            "accountNumber" => "account_number",
            "routingNumber" => "routing_number",
            other => other,
        }
    }
}

/// `Card Number`, `card_number`, `cardNumber` → `cardnumber`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Which column (or key) holds each field: the operator's `--map FIELD=COLUMN`, else the
/// common names.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    explicit: HashMap<Field, String>,
}

impl Mapping {
    /// Parses `FIELD=COLUMN` pairs.
    ///
    /// # Errors
    /// A message naming the pair that is not `FIELD=COLUMN` with a known field.
    pub fn parse(pairs: &[String]) -> Result<Self, String> {
        let mut explicit = HashMap::new();
        for pair in pairs {
            let (field, column) = pair
                .split_once('=')
                .filter(|(_, c)| !c.is_empty())
                .ok_or_else(|| format!("--map {pair}: expected FIELD=COLUMN"))?;
            let field = Field::parse(field.trim()).ok_or_else(|| {
                let names: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
                format!("--map {pair}: fields are {}", names.join(", "))
            })?;
            explicit.insert(field, column.to_owned());
        }
        Ok(Self { explicit })
    }

    /// The field a column (or key) holds, if any.
    pub fn field_of(&self, column: &str) -> Option<Field> {
        if let Some((field, _)) = self.explicit.iter().find(|(_, c)| c.as_str() == column) {
            return Some(*field);
        }
        let normalized = normalize(column);
        Field::ALL
            .into_iter()
            .find(|f| !self.explicit.contains_key(f) && f.aliases().contains(&normalized.as_str()))
    }

    /// For a CSV header: each field's column index.
    pub fn columns(&self, header: &[String]) -> HashMap<Field, usize> {
        let mut columns = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            if let Some(field) = self.field_of(name) {
                columns.entry(field).or_insert(i);
            }
        }
        columns
    }
}

/// A record as found, before validation: each field's text (an empty value counts as absent).
#[derive(Default)]
pub struct RawRecord {
    values: HashMap<Field, Value>,
}

impl RawRecord {
    pub fn set(&mut self, field: Field, value: Value) {
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.trim().is_empty(),
            _ => false,
        };
        if !empty {
            self.values.entry(field).or_insert(value);
        }
    }

    fn text(&self, field: Field) -> Option<String> {
        match self.values.get(&field)? {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The old vault's id; `None` when missing (the record is refused).
    pub fn id(&self) -> Option<String> {
        self.text(Field::Id)
    }

    /// The token's own options, as the top-level fields of a `/tokenize` body: `expires_at`
    /// and `allowed_destinations` (a CSV column's space-separated patterns made a list).
    pub fn options(&self) -> Map<String, Value> {
        let mut body = Map::new();
        if let Some(at) = self.values.get(&Field::ExpiresAt) {
            body.insert("expires_at".into(), at.clone());
        }
        if let Some(rule) = self.values.get(&Field::AllowedDestinations) {
            let rule = match rule {
                Value::String(text) => Value::Array(
                    text.split_whitespace()
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                ),
                other => other.clone(),
            };
            body.insert("allowed_destinations".into(), rule);
        }
        body
    }

    /// `card` or `bank`, and the fields of `/tokenize`'s `data` by their API names.
    ///
    /// # Errors
    /// The reason the record is refused (`invalid_field: type`, `invalid_field: expiry`).
    pub fn to_api(&self) -> Result<(&'static str, Map<String, Value>), String> {
        let kind = match self.text(Field::Type).map(|t| normalize(&t)).as_deref() {
            None if self.values.contains_key(&Field::RoutingNumber) => "bank",
            None => "card",
            Some("card" | "creditcard" | "debitcard") => "card",
            Some("bank" | "bankaccount" | "ach") => "bank",
            Some(_) => return Err("invalid_field: type".into()),
        };
        let mut data = Map::new();
        let put = |data: &mut Map<String, Value>, api: &str, field: Field| {
            if let Some(v) = self.values.get(&field) {
                data.insert(api.to_owned(), v.clone());
            }
        };
        if kind == "card" {
            put(&mut data, "cardNumber", Field::Number);
            put(&mut data, "expirationMonth", Field::ExpMonth);
            put(&mut data, "expirationYear", Field::ExpYear);
        } else {
            put(&mut data, "accountNumber", Field::AccountNumber);
            put(&mut data, "routingNumber", Field::RoutingNumber);
            if !data.contains_key("accountNumber") {
                put(&mut data, "accountNumber", Field::Number);
            }
        }
        put(&mut data, "firstName", Field::FirstName);
        put(&mut data, "lastName", Field::LastName);
        if kind == "card"
            && !(data.contains_key("expirationMonth") && data.contains_key("expirationYear"))
            && let Some(expiry) = self.text(Field::Expiry)
        {
            let (month, year) =
                split_expiry(&expiry).ok_or_else(|| "invalid_field: expiry".to_owned())?;
            data.insert("expirationMonth".into(), Value::String(month));
            data.insert("expirationYear".into(), Value::String(year));
        }
        if !data.contains_key("firstName")
            && !data.contains_key("lastName")
            && let Some(name) = self.text(Field::Name)
        {
            match name.rsplit_once(' ') {
                Some((first, last)) => {
                    data.insert("firstName".into(), Value::String(first.trim().to_owned()));
                    data.insert("lastName".into(), Value::String(last.to_owned()));
                }
                None => {
                    data.insert("lastName".into(), Value::String(name));
                }
            }
        }
        Ok((kind, data))
    }
}

/// `MM/YY`, `MM/YYYY`, `MM-YY`, `MMYY` or `YYYY-MM` → (month, year).
fn split_expiry(text: &str) -> Option<(String, String)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (a, b) = match text.split_once(['/', '-']) {
        Some(parts) => parts,
        None if text.len() == 4 && digits(text) => text.split_at(2),
        None => return None,
    };
    let (a, b) = (a.trim(), b.trim());
    if !digits(a) || !digits(b) {
        return None;
    }
    if a.len() == 4 && b.len() <= 2 {
        return Some((b.to_owned(), a.to_owned()));
    }
    (a.len() <= 2 && (b.len() == 2 || b.len() == 4)).then(|| (a.to_owned(), b.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_are_found_in_any_spelling() {
        let m = Mapping::default();
        assert_eq!(m.field_of("Card Number"), Some(Field::Number));
        assert_eq!(m.field_of("cardNumber"), Some(Field::Number));
        assert_eq!(m.field_of("exp_month"), Some(Field::ExpMonth));
        assert_eq!(m.field_of("payment_method_token"), Some(Field::Id));
        assert_eq!(m.field_of("cvv"), None);
    }

    #[test]
    fn an_explicit_mapping_wins() {
        let m = Mapping::parse(&["number=cc".into(), "id=ref".into()]).unwrap();
        assert_eq!(m.field_of("cc"), Some(Field::Number));
        assert_eq!(m.field_of("ref"), Some(Field::Id));
        // `number` now means nothing: its field is the mapped column's.
        assert_eq!(m.field_of("number"), None);
        assert!(Mapping::parse(&["pin=x".into()]).is_err());
        assert!(Mapping::parse(&["number".into()]).is_err());
    }

    #[test]
    fn expiry_forms() {
        let s = |t: &str| split_expiry(t).map(|(m, y)| format!("{m} {y}"));
        assert_eq!(s("07/31").as_deref(), Some("07 31"));
        assert_eq!(s("7/2031").as_deref(), Some("7 2031"));
        assert_eq!(s("2031-07").as_deref(), Some("07 2031"));
        assert_eq!(s("0731").as_deref(), Some("07 31"));
        assert_eq!(s("July"), None);
        assert_eq!(s("07/3"), None);
    }

    #[test]
    fn a_full_name_is_split_at_its_last_space() {
        let mut r = RawRecord::default();
        r.set(Field::Number, Value::String("4242424242424242".into()));
        r.set(Field::Expiry, Value::String("07/31".into()));
        r.set(Field::Name, Value::String("Ada King Lovelace".into()));
        let (kind, data) = r.to_api().unwrap();
        assert_eq!(kind, "card");
        assert_eq!(data["firstName"], "Ada King");
        assert_eq!(data["lastName"], "Lovelace");
        assert_eq!(data["expirationYear"], "31");
    }

    #[test]
    fn a_csv_rule_is_split_into_a_list() {
        let mut r = RawRecord::default();
        r.set(
            Field::AllowedDestinations,
            Value::String(" api.stripe.com  *.adyen.com/v1 ".into()),
        );
        r.set(
            Field::ExpiresAt,
            Value::String("2031-01-31T00:00:00Z".into()),
        );
        let body = r.options();
        assert_eq!(
            body["allowed_destinations"],
            serde_json::json!(["api.stripe.com", "*.adyen.com/v1"])
        );
        assert_eq!(body["expires_at"], "2031-01-31T00:00:00Z");
        assert!(RawRecord::default().options().is_empty());
    }

    #[test]
    fn a_routing_number_makes_a_bank_account() {
        let mut r = RawRecord::default();
        r.set(Field::Number, Value::String("000123456789".into()));
        r.set(Field::RoutingNumber, Value::String("110000000".into()));
        let (kind, data) = r.to_api().unwrap();
        assert_eq!(kind, "bank");
        assert_eq!(data["accountNumber"], "000123456789");
    }
}
