//! A JSON document whose string values are templates.

use serde_json::Value;

use super::{Placeholder, Substitutions, Template, UnknownPlaceholder};

/// The caller's `request_data` as a JSON value, with placeholders found in its string values.
/// Object keys are never templates: card data has no business in a field name.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    value: Value,
    used: Vec<Placeholder>,
    short_secrets_stand_alone: bool,
}

impl JsonTemplate {
    /// # Errors
    /// [`UnknownPlaceholder`] for a `${…}` that names no value in any string of the document.
    pub fn parse(value: Value) -> Result<Self, UnknownPlaceholder> {
        let mut used = Vec::new();
        let mut short_secrets_stand_alone = true;
        visit_strings(&value, &mut |s| {
            let template = Template::parse(s)?;
            for p in template.placeholders() {
                used.push(p);
                if p.must_stand_alone() && !template.is_exactly(p) {
                    short_secrets_stand_alone = false;
                }
            }
            Ok(())
        })?;
        used.sort_unstable();
        used.dedup();
        Ok(Self {
            value,
            used,
            short_secrets_stand_alone,
        })
    }

    /// True when each CVC or account number placeholder is a whole string value.
    pub fn short_secrets_stand_alone(&self) -> bool {
        self.short_secrets_stand_alone
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.used.iter().copied()
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The document with every placeholder replaced (string values stay strings).
    pub fn render(&self, values: &Substitutions) -> Value {
        if self.used.is_empty() {
            return self.value.clone();
        }
        render_value(&self.value, values)
    }

    /// The rendered document serialized as JSON bytes.
    pub fn render_bytes(&self, values: &Substitutions) -> Vec<u8> {
        // Serializing a `Value` cannot fail: its keys are strings and it holds no floats that
        // are not finite.
        serde_json::to_vec(&self.render(values)).unwrap_or_default()
    }
}

fn render_value(value: &Value, values: &Substitutions) -> Value {
    match value {
        Value::String(s) => match Template::parse(s) {
            Ok(t) if !t.is_literal() => Value::String(t.render(values, super::Encoding::Raw)),
            _ => value.clone(),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| render_value(v, values)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_value(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn visit_strings(
    value: &Value,
    f: &mut impl FnMut(&str) -> Result<(), UnknownPlaceholder>,
) -> Result<(), UnknownPlaceholder> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| visit_strings(v, f)),
        _ => Ok(()),
    }
}
