//! A JSON object encoded as `application/x-www-form-urlencoded`, the way Stripe's API reads it:
//! `card[number]=…`, `metadata[k]=v`, `items[0][price]=…`.

use serde_json::Value;

use super::{Encoding, Placeholder, Substitutions, Template, UnknownPlaceholder};

#[derive(Debug, Clone)]
enum FormValue {
    Literal(String),
    Template(Template),
}

/// The pairs of a form body, in document order, with placeholders found in string values.
#[derive(Debug, Clone)]
pub struct FormTemplate {
    pairs: Vec<(String, FormValue)>,
}

impl FormTemplate {
    /// Flattens `value` into bracketed keys. Booleans become `true`/`false`, numbers are kept
    /// as written, `null` becomes an empty value (Stripe's way to unset a field), and an empty
    /// object or array sends nothing.
    ///
    /// # Errors
    /// [`UnknownPlaceholder`] for a `${…}` naming no value.
    pub fn from_json(value: &Value) -> Result<Self, UnknownPlaceholder> {
        let mut pairs = Vec::new();
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    flatten(&encode_key(key), v, &mut pairs)?;
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    flatten(&i.to_string(), v, &mut pairs)?;
                }
            }
            _ => return Err(UnknownPlaceholder),
        }
        Ok(Self { pairs })
    }

    /// True when each CVC or account number placeholder is a whole form value.
    pub fn short_secrets_stand_alone(&self) -> bool {
        self.pairs.iter().all(|(_, v)| match v {
            FormValue::Template(t) => t
                .placeholders()
                .all(|p| !p.must_stand_alone() || t.is_exactly(p)),
            FormValue::Literal(_) => true,
        })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.pairs.iter().flat_map(|(_, v)| match v {
            FormValue::Template(t) => t.placeholders().collect::<Vec<_>>(),
            FormValue::Literal(_) => Vec::new(),
        })
    }

    pub fn render(&self, values: &Substitutions) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            match value {
                FormValue::Literal(text) => Encoding::Form.push_escaped(text, &mut out),
                FormValue::Template(t) => {
                    let raw = zeroize::Zeroizing::new(t.render(values, Encoding::Raw));
                    Encoding::Form.push_escaped(&raw, &mut out);
                }
            }
        }
        out
    }
}

fn flatten(
    prefix: &str,
    value: &Value,
    pairs: &mut Vec<(String, FormValue)>,
) -> Result<(), UnknownPlaceholder> {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                flatten(&format!("{prefix}[{}]", encode_key(key)), v, pairs)?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, pairs)?;
            }
        }
        Value::String(s) => {
            let value = match Template::parse_if_templated(s)? {
                None => FormValue::Literal(s.clone()),
                Some(template) => FormValue::Template(template),
            };
            pairs.push((prefix.to_owned(), value));
        }
        Value::Number(n) => pairs.push((prefix.to_owned(), FormValue::Literal(n.to_string()))),
        Value::Bool(b) => pairs.push((prefix.to_owned(), FormValue::Literal(b.to_string()))),
        Value::Null => pairs.push((prefix.to_owned(), FormValue::Literal(String::new()))),
    }
    Ok(())
}

/// A key segment, percent-encoded; the brackets between segments stay literal, as Stripe's
/// own examples send them.
fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    #[test]
    fn encodes_nested_objects_like_stripe() {
        let body: Value = serde_json::from_str(
            r#"{
                "amount": 2000,
                "currency": "usd",
                "capture": false,
                "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}"},
                "metadata": {"order id": "A&B=1", "empty": null},
                "items": [{"price": "price_1", "quantity": 2}, {"price": "price_2"}],
                "expand": ["customer"],
                "ratio": 10.50
            }"#,
        )
        .unwrap();
        let template = FormTemplate::from_json(&body).unwrap();
        let mut values = Substitutions::default();
        values.set(
            Placeholder::CardNumber,
            SecretString::new("4242424242424242".into()),
        );
        values.set(Placeholder::ExpirationMonth, SecretString::new("07".into()));
        assert_eq!(
            template.render(&values),
            "amount=2000&currency=usd&capture=false&source[number]=4242424242424242&source[exp_month]=07\
             &metadata[order+id]=A%26B%3D1&metadata[empty]=&items[0][price]=price_1&items[0][quantity]=2\
             &items[1][price]=price_2&expand[0]=customer&ratio=10.50"
        );
    }
}
