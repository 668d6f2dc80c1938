//! A JSON document whose string values are templates.

use serde_json::Value;

use super::{Encoding, Placeholder, Substitutions, Template, UnknownPlaceholder};

/// The caller's `request_data` as a JSON value, with placeholders found in its string values.
/// Object keys are never templates: card data has no business in a field name.
///
/// Invariant: the document is parsed once; rendering only walks the parsed tree, and subtrees
/// without a placeholder are kept as they came and written out unchanged.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    root: Node,
    used: Vec<Placeholder>,
    short_secrets_stand_alone: bool,
}

#[derive(Debug, Clone)]
enum Node {
    /// A value with no placeholder anywhere inside.
    Literal(Value),
    /// A string value with at least one placeholder.
    Text(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl JsonTemplate {
    /// # Errors
    /// [`UnknownPlaceholder`] for a `${…}` that names no value in any string of the document.
    pub fn parse(value: Value) -> Result<Self, UnknownPlaceholder> {
        let mut used = Vec::new();
        let mut short_secrets_stand_alone = true;
        let root = Node::parse(value, &mut |template| {
            for p in template.placeholders() {
                used.push(p);
                if p.must_stand_alone() && !template.is_exactly(p) {
                    short_secrets_stand_alone = false;
                }
            }
        })?;
        used.sort_unstable();
        used.dedup();
        Ok(Self {
            root,
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

    /// The document with every placeholder replaced (string values stay strings).
    pub fn render(&self, values: &Substitutions) -> Value {
        self.root.render(values)
    }

    /// The rendered document serialized as compact JSON, written straight from the parsed tree.
    ///
    /// # Errors
    /// A serialization error (none is expected: keys are strings and numbers finite).
    pub fn render_bytes(&self, values: &Substitutions) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(256);
        self.root.write(values, &mut out)?;
        Ok(out)
    }
}

impl Node {
    fn parse(value: Value, found: &mut impl FnMut(&Template)) -> Result<Self, UnknownPlaceholder> {
        Ok(match value {
            Value::String(text) => {
                let template = Template::parse(&text)?;
                if template.is_literal() {
                    Self::Literal(Value::String(text))
                } else {
                    found(&template);
                    Self::Text(template)
                }
            }
            Value::Array(items) => {
                let nodes = items
                    .into_iter()
                    .map(|item| Self::parse(item, found))
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.iter().all(Self::is_literal) {
                    Self::Literal(Value::Array(
                        nodes.into_iter().map(Self::into_value).collect(),
                    ))
                } else {
                    Self::Array(nodes)
                }
            }
            Value::Object(map) => {
                let pairs = map
                    .into_iter()
                    .map(|(key, item)| Self::parse(item, found).map(|node| (key, node)))
                    .collect::<Result<Vec<_>, _>>()?;
                if pairs.iter().all(|(_, node)| node.is_literal()) {
                    Self::Literal(Value::Object(
                        pairs
                            .into_iter()
                            .map(|(key, node)| (key, node.into_value()))
                            .collect(),
                    ))
                } else {
                    Self::Object(pairs)
                }
            }
            other => Self::Literal(other),
        })
    }

    fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }

    /// The value of a literal node (only called on literals).
    fn into_value(self) -> Value {
        match self {
            Self::Literal(value) => value,
            _ => Value::Null,
        }
    }

    fn render(&self, values: &Substitutions) -> Value {
        match self {
            Self::Literal(value) => value.clone(),
            Self::Text(template) => Value::String(template.render(values, Encoding::Raw)),
            Self::Array(items) => Value::Array(items.iter().map(|n| n.render(values)).collect()),
            Self::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(key, node)| (key.clone(), node.render(values)))
                    .collect(),
            ),
        }
    }

    fn write(&self, values: &Substitutions, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Self::Literal(value) => serde_json::to_writer(&mut *out, value)?,
            Self::Text(template) => {
                let text = zeroize::Zeroizing::new(template.render(values, Encoding::Raw));
                serde_json::to_writer(&mut *out, text.as_str())?;
            }
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(values, out)?;
                }
                out.push(b']');
            }
            Self::Object(pairs) => {
                out.push(b'{');
                for (i, (key, node)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    node.write(values, out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}
