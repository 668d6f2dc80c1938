//! Placeholder templates: find `${cardNumber}` and friends in the caller's text, then render the
//! text with the real values, each escaped for the format it lands in.
//!
//! Invariant: placeholders are only ever found in the caller's template, never in a substituted
//! value, so a value that contains `${cvv}` is sent as those literal characters.

mod encode;
mod form;
mod json;

pub use encode::Encoding;
pub use form::FormTemplate;
pub use json::{JsonTemplate, JsonTemplateError};

use smallvec::SmallVec;
use zeroize::Zeroize;

use crate::secret::SecretString;

/// A value that can be substituted into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placeholder {
    CardNumber,
    ExpirationMonth,
    ExpirationYear,
    ExpirationYear2,
    ExpirationYear4,
    Cvc,
    AccountNumber,
    RoutingNumber,
    FirstName,
    LastName,
}

impl Placeholder {
    pub const ALL: [Placeholder; 10] = [
        Self::CardNumber,
        Self::ExpirationMonth,
        Self::ExpirationYear,
        Self::ExpirationYear2,
        Self::ExpirationYear4,
        Self::Cvc,
        Self::AccountNumber,
        Self::RoutingNumber,
        Self::FirstName,
        Self::LastName,
    ];

    /// The name inside `${…}`.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cardNumber" => Self::CardNumber,
            "expirationMonth" => Self::ExpirationMonth,
            "expirationYear" => Self::ExpirationYear,
            "expirationYear2" => Self::ExpirationYear2,
            "expirationYear4" => Self::ExpirationYear4,
            "cvv" | "cvc" => Self::Cvc,
            "accountNumber" => Self::AccountNumber,
            "routingNumber" => Self::RoutingNumber,
            "firstName" => Self::FirstName,
            "lastName" => Self::LastName,
            _ => return None,
        })
    }

    /// Position in [`Placeholder::ALL`], which is where [`Substitutions`] keeps the value.
    fn index(self) -> usize {
        match self {
            Self::CardNumber => 0,
            Self::ExpirationMonth => 1,
            Self::ExpirationYear => 2,
            Self::ExpirationYear2 => 3,
            Self::ExpirationYear4 => 4,
            Self::Cvc => 5,
            Self::AccountNumber => 6,
            Self::RoutingNumber => 7,
            Self::FirstName => 8,
            Self::LastName => 9,
        }
    }

    /// Short secrets (the CVC, an account number that may be 4 digits) cannot be found in a
    /// response by their digits alone without masking every amount and id that shares them, so
    /// templates must place them as whole values, where scrubbing recognises an echo.
    pub fn must_stand_alone(self) -> bool {
        matches!(self, Self::Cvc | Self::AccountNumber)
    }
}

/// Compatibility aliases, matched as whole words. `expirationYearPlaceholder2` must be tried
/// before `expirationYearPlaceholder`; the word-boundary rule makes that order safe either way.
const ALIASES: [(&str, Placeholder); 5] = [
    ("cardNumberPlaceholder", Placeholder::CardNumber),
    ("cvvPlaceholder", Placeholder::Cvc),
    ("expirationMonthPlaceholder", Placeholder::ExpirationMonth),
    ("expirationYearPlaceholder2", Placeholder::ExpirationYear2),
    ("expirationYearPlaceholder", Placeholder::ExpirationYear4),
];

/// What every alias contains.
const ALIAS_MARK: &str = "Placeholder";

/// The template used a `${…}` name that is not a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placeholder in template")]
pub struct UnknownPlaceholder;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value(Placeholder),
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// One part inline: most templates in a body are a whole placeholder, `"${cardNumber}"`.
    parts: SmallVec<[Part; 1]>,
}

impl Template {
    /// Splits `text` into literal runs and placeholders.
    ///
    /// # Errors
    /// [`UnknownPlaceholder`] when a closed `${…}` names no known value: sending it on unchanged
    /// would hide a typo until the processor declines the payment.
    pub fn parse(text: &str) -> Result<Self, UnknownPlaceholder> {
        Self::parse_inner(text, false, true)
    }

    /// Like [`Template::parse`], for a form body: also finds placeholders the caller's HTTP
    /// library percent-encoded (`%24%7BcardNumber%7D`), as form encoders do.
    ///
    /// # Errors
    /// [`UnknownPlaceholder`] as for [`Template::parse`].
    pub fn parse_form(text: &str) -> Result<Self, UnknownPlaceholder> {
        Self::parse_inner(text, true, true)
    }

    /// Like [`Template::parse`], but `None` for a text without a placeholder, which then costs
    /// no copy: most strings of a request (URLs, headers, a body's other values) are such.
    ///
    /// # Errors
    /// [`UnknownPlaceholder`] as for [`Template::parse`].
    pub fn parse_if_templated(text: &str) -> Result<Option<Self>, UnknownPlaceholder> {
        // Here only `${…}` and the aliases (each has `Placeholder` in it) are placeholders: a
        // text with neither, found by two searches instead of the byte-by-byte walk, has none.
        if !text.as_bytes().contains(&b'$') && !text.contains(ALIAS_MARK) {
            return Ok(None);
        }
        let template = Self::parse_inner(text, false, false)?;
        Ok((!template.parts.is_empty()).then_some(template))
    }

    /// The parts of `text`. A text without a placeholder is one literal part when
    /// `copy_literal`, else none.
    fn parse_inner(
        text: &str,
        percent_encoded: bool,
        copy_literal: bool,
    ) -> Result<Self, UnknownPlaceholder> {
        let mut parts = SmallVec::new();
        let mut literal_start = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        // Once no closing brace follows an opener, none follows any later opener either: stop
        // searching, so a body full of openers costs linear time, not quadratic.
        let (mut braces_closed, mut encoded_closed) = (true, true);
        while let Some(&byte) = bytes.get(i) {
            let found = if braces_closed && byte == b'$' && bytes.get(i + 1) == Some(&b'{') {
                match text[i + 2..].find('}') {
                    Some(end) => {
                        let name = &text[i + 2..i + 2 + end];
                        let placeholder = Placeholder::from_name(name).ok_or(UnknownPlaceholder)?;
                        Some((placeholder, end + 3))
                    }
                    None => {
                        braces_closed = false;
                        None
                    }
                }
            } else if percent_encoded
                && encoded_closed
                && let Some(after) = bytes
                    .get(i..)
                    .and_then(|here| strip_prefix_ignore_case(here, b"%24%7B"))
            {
                match find_ignore_case(after, b"%7D") {
                    Some(end) => {
                        let name = &text[i + 6..i + 6 + end];
                        let placeholder = Placeholder::from_name(name).ok_or(UnknownPlaceholder)?;
                        Some((placeholder, end + 9))
                    }
                    None => {
                        encoded_closed = false;
                        None
                    }
                }
            } else if is_word_start(bytes, i) {
                alias_at(text, i)
            } else {
                None
            };
            match found {
                Some((placeholder, len)) => {
                    if literal_start < i {
                        parts.push(Part::Literal(text[literal_start..i].to_owned()));
                    }
                    parts.push(Part::Value(placeholder));
                    i += len;
                    literal_start = i;
                }
                None => i += 1,
            }
        }
        if literal_start < text.len() && (copy_literal || !parts.is_empty()) {
            parts.push(Part::Literal(text[literal_start..].to_owned()));
        }
        Ok(Self { parts })
    }

    /// True when the text contains no placeholder (rendering returns it unchanged).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Value(v) => Some(*v),
            Part::Literal(_) => None,
        })
    }

    /// True when this text is exactly one placeholder and nothing else.
    pub fn is_exactly(&self, placeholder: Placeholder) -> bool {
        self.only_placeholder() == Some(placeholder)
    }

    /// The placeholder this text is, when it is exactly one and nothing else.
    pub fn only_placeholder(&self) -> Option<Placeholder> {
        match self.parts.as_slice() {
            [Part::Value(placeholder)] => Some(*placeholder),
            _ => None,
        }
    }

    /// True when every short secret (see [`Placeholder::must_stand_alone`]) is a whole value
    /// of the text: the entire text, or delimited as `"…"`, `'…'`, `>…<` or `=…` (up to `&`,
    /// `;`, a line end or the end) — where response scrubbing recognises it.
    pub fn short_secrets_stand_alone(&self) -> bool {
        self.parts.iter().enumerate().all(|(i, part)| {
            let Part::Value(p) = part else { return true };
            if !p.must_stand_alone() {
                return true;
            }
            let before = match i.checked_sub(1).and_then(|j| self.parts.get(j)) {
                None => None,
                Some(Part::Literal(text)) => text.chars().last(),
                Some(Part::Value(_)) => return false,
            };
            let after = match self.parts.get(i + 1) {
                None => None,
                Some(Part::Literal(text)) => text.chars().next(),
                Some(Part::Value(_)) => return false,
            };
            matches!(
                (before, after),
                (None, None)
                    | (Some('"'), Some('"'))
                    | (Some('\''), Some('\''))
                    | (Some('>'), Some('<'))
                    | (Some('='), None | Some('&' | ';' | '\r' | '\n'))
            )
        })
    }

    /// Appends the rendered text to `out`: literals as written, values escaped by `encoding`.
    ///
    /// Invariant: callers have checked with [`Substitutions::missing`] that every placeholder has
    /// a value; one without is rendered as nothing.
    pub fn render_into(&self, values: &Substitutions, encoding: Encoding, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Value(p) => {
                    if let Some(value) = values.get(*p) {
                        encoding.push_escaped(value, out);
                    }
                }
            }
        }
    }

    pub fn render(&self, values: &Substitutions, encoding: Encoding) -> String {
        let mut out = String::new();
        self.render_into(values, encoding, &mut out);
        out
    }
}

/// What follows `prefix` (ASCII, matched in any case) at the start of `bytes`.
fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

fn find_ignore_case(bytes: &[u8], needle: &[u8]) -> Option<usize> {
    bytes
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_word_start(bytes: &[u8], i: usize) -> bool {
    // The byte before is read only at a `c` or an `e`: this runs for every byte of a body.
    let follows_word = || {
        i.checked_sub(1)
            .and_then(|j| bytes.get(j))
            .is_some_and(|&b| is_word_byte(b))
    };
    matches!(bytes.get(i), Some(b'c' | b'e')) && !follows_word()
}

fn alias_at(text: &str, i: usize) -> Option<(Placeholder, usize)> {
    let rest = &text[i..];
    ALIASES.iter().find_map(|(alias, placeholder)| {
        let after = rest.strip_prefix(alias)?;
        match after.bytes().next() {
            Some(b) if is_word_byte(b) => None,
            _ => Some((*placeholder, alias.len())),
        }
    })
}

/// The values a template may use for one request, all in one buffer (one allocation a call
/// rather than one a value: docs/benchmarks.md, issue 17's thirty-first step), wiped when
/// dropped and whenever it moves to a larger one.
///
/// Invariant: one range per [`Placeholder`], at [`Placeholder::index`], so every lookup finds
/// its slot; each range lies within `text` on character boundaries (set whole, never cut).
pub struct Substitutions {
    text: SecretString,
    ranges: [Option<(usize, usize)>; Placeholder::ALL.len()],
}

impl Default for Substitutions {
    fn default() -> Self {
        Self {
            // A card's values are about 30 bytes, with a holder's names some more.
            text: SecretString::new(String::with_capacity(Self::USUAL_BYTES)),
            ranges: [None; Placeholder::ALL.len()],
        }
    }
}

impl Substitutions {
    const USUAL_BYTES: usize = 96;

    pub fn set(&mut self, placeholder: Placeholder, value: SecretString) {
        self.set_str(placeholder, value.expose_secret());
    }

    /// Sets `placeholder` to a copy of `value` (a value set before stays in the buffer,
    /// unreachable, until it is wiped).
    pub fn set_str(&mut self, placeholder: Placeholder, value: &str) {
        let Some(slot) = self.ranges.get_mut(placeholder.index()) else {
            return;
        };
        let text = self.text.expose_secret_mut();
        let needed = text.len() + value.len();
        if needed > text.capacity() {
            // Moved by hand, so the old buffer is wiped rather than freed with its contents.
            let mut larger = String::with_capacity(needed.max(2 * text.capacity()));
            larger.push_str(text);
            std::mem::replace(text, larger).zeroize();
        }
        *slot = Some((text.len(), needed));
        text.push_str(value);
    }

    pub fn get(&self, placeholder: Placeholder) -> Option<&str> {
        let (start, end) = (*self.ranges.get(placeholder.index())?)?;
        self.text.expose_secret().get(start..end)
    }

    pub fn has(&self, placeholder: Placeholder) -> bool {
        self.ranges
            .get(placeholder.index())
            .is_some_and(Option::is_some)
    }

    /// The first placeholder in `used` that has no value here.
    pub fn missing(&self, mut used: impl Iterator<Item = Placeholder>) -> Option<Placeholder> {
        used.find(|p| !self.has(*p))
    }

    /// Every value set, for scrubbing echoes out of a response.
    pub fn iter(&self) -> impl Iterator<Item = (Placeholder, &str)> {
        Placeholder::ALL
            .into_iter()
            .filter_map(|p| self.get(p).map(|v| (p, v)))
    }
}

#[cfg(test)]
mod tests;
