//! Escaping a substituted value for the place it lands in.

use std::fmt::Write;

/// How a substituted value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Inside a JSON string literal.
    Json,
    /// A value in `application/x-www-form-urlencoded`.
    Form,
    /// XML character data or an attribute value.
    Xml,
    /// Verbatim.
    Raw,
}

impl Encoding {
    pub fn push_escaped(self, value: &str, out: &mut String) {
        match self {
            Self::Raw => out.push_str(value),
            Self::Json => push_json_escaped(value, out),
            Self::Form => out.extend(form_urlencoded::byte_serialize(value.as_bytes())),
            Self::Xml => push_xml_escaped(value, out),
        }
    }
}

fn push_json_escaped(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

fn push_xml_escaped(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}
