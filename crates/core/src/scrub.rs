//! Removing card data a processor echoes back, before the response reaches the caller.
//!
//! Two kinds of secret are looked for. Long digit strings (card and account numbers) are found
//! in the forms a processor may print them: plain, grouped with spaces, dashes or `+`,
//! percent-encoded (`%34%32…`, `4242%204242…`) or JSON-escaped (`\u0034…`), wherever they are,
//! even inside a longer run of digits (a caller could otherwise prefix a digit to a card number
//! and read the echo back whole). Short codes (the CVC, short account numbers) are three to seven
//! digits, which any body is full of, so they are masked where they are a whole value: `"739"`,
//! `'739'`, `>739<` (an XML text node) or `=739&` (a form value); templates may only place them
//! there (see `Template::short_secrets_stand_alone`).

/// A secret to look for and what to put in its place.
pub struct Echo<'a> {
    pub secret: &'a str,
    pub mask: String,
    pub kind: EchoKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoKind {
    /// A card or account number: every printed form, bounded by non-digits.
    Number,
    /// A security code: only where it is an entire quoted, element or form value.
    Code,
}

/// The text with every echo replaced, or `None` when nothing was found (the common case, which
/// then costs no allocation).
pub fn scrub_text(text: &str, echoes: &[Echo<'_>]) -> Option<String> {
    let mut current: Option<String> = None;
    for echo in echoes {
        if echo.secret.is_empty() {
            continue;
        }
        let source = current.as_deref().unwrap_or(text);
        let replaced = match echo.kind {
            EchoKind::Number => replace_numbers(source, echo),
            EchoKind::Code => replace_codes(source, echo),
        };
        if let Some(replaced) = replaced {
            current = Some(replaced);
        }
    }
    current
}

fn replace_numbers(text: &str, echo: &Echo<'_>) -> Option<String> {
    let bytes = text.as_bytes();
    let secret = echo.secret.as_bytes();
    replace_matches(text, &echo.mask, |i| match_number(&bytes[i..], secret))
}

fn replace_codes(text: &str, echo: &Echo<'_>) -> Option<String> {
    let bytes = text.as_bytes();
    let secret = echo.secret.as_bytes();
    replace_matches(text, &echo.mask, |i| {
        if i == 0 || !bytes[i..].starts_with(secret) {
            return None;
        }
        let after = bytes.get(i + secret.len()).copied();
        let whole_value = match bytes[i - 1] {
            b'"' => after == Some(b'"'),
            b'\'' => after == Some(b'\''),
            b'>' => after == Some(b'<'),
            b'=' => matches!(after, None | Some(b'&' | b';' | b'\r' | b'\n')),
            _ => false,
        };
        whole_value.then_some(secret.len())
    })
}

/// Copies `text`, replacing each span `matcher` reports (its length, from a start index).
fn replace_matches(
    text: &str,
    mask: &str,
    matcher: impl Fn(usize) -> Option<usize>,
) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        match matcher(i) {
            Some(len) => {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..i]);
                out.push_str(mask);
                i += len;
                copied = i;
            }
            None => i += 1,
        }
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// Length of the match of `secret` (ASCII digits) at the start of `bytes`, in any printed form.
fn match_number(bytes: &[u8], secret: &[u8]) -> Option<usize> {
    let mut at = 0;
    for (n, &digit) in secret.iter().enumerate() {
        if n > 0 {
            at += separator_len(&bytes[at..]);
        }
        at += digit_len(&bytes[at..], digit)?;
    }
    Some(at)
}

fn digit_len(bytes: &[u8], digit: u8) -> Option<usize> {
    let hex_digit = |b: &[u8]| b.len() == 1 && b[0] == digit;
    if bytes.first() == Some(&digit) {
        Some(1)
    } else if bytes.len() >= 3 && bytes[0] == b'%' && bytes[1] == b'3' && hex_digit(&bytes[2..3]) {
        Some(3)
    } else if bytes.len() >= 6
        && bytes[..5].eq_ignore_ascii_case(b"\\u003")
        && hex_digit(&bytes[5..6])
    {
        Some(6)
    } else {
        None
    }
}

fn separator_len(bytes: &[u8]) -> usize {
    match bytes {
        [b' ' | b'-' | b'+', ..] => 1,
        [b'%', b'2', b'0', ..] => 3,
        [b'\\', b'u', b'0', b'0', b'2', b'0', ..] => 6,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echoes() -> Vec<Echo<'static>> {
        vec![
            Echo {
                secret: "4242424242424242",
                mask: "424242******4242".into(),
                kind: EchoKind::Number,
            },
            Echo {
                secret: "739",
                mask: "***".into(),
                kind: EchoKind::Code,
            },
        ]
    }

    #[test]
    fn masks_card_numbers_in_every_printed_form() {
        for form in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "4242+4242+4242+4242",
            "4242%204242%204242%204242",
            "%34%32%34%32%34%32%34%32%34%32%34%32%34%32%34%32",
            "\\u0034\\u0032\\u0034\\u0032424242424242",
        ] {
            let text = format!("{{\"n\":\"{form}\"}}");
            assert_eq!(
                scrub_text(&text, &echoes()).unwrap(),
                "{\"n\":\"424242******4242\"}",
                "{form}"
            );
        }
    }

    #[test]
    fn masks_codes_only_as_whole_values() {
        let echoes = echoes();
        assert_eq!(
            scrub_text(r#"{"cvc":"739"}"#, &echoes).unwrap(),
            r#"{"cvc":"***"}"#
        );
        assert_eq!(
            scrub_text("<cvc>739</cvc>", &echoes).unwrap(),
            "<cvc>***</cvc>"
        );
        assert_eq!(
            scrub_text("a=1&cvc=739&b=2", &echoes).unwrap(),
            "a=1&cvc=***&b=2"
        );
        assert_eq!(scrub_text("cvc=739", &echoes).unwrap(), "cvc=***");
        assert_eq!(
            scrub_text("<x cvc='739'/>", &echoes).unwrap(),
            "<x cvc='***'/>"
        );
        for clean in [
            r#"{"amount":7390}"#,
            r#"{"amount":739}"#,
            "id=a739b",
            "ref 1739",
            "ch_739x",
        ] {
            assert_eq!(scrub_text(clean, &echoes), None, "{clean}");
        }
    }

    #[test]
    fn card_numbers_inside_longer_digit_runs_are_masked_too() {
        let echoes = echoes();
        // "0${cardNumber}" echoed back must not give the number away.
        assert_eq!(
            scrub_text("id 04242424242424242 ok", &echoes).unwrap(),
            "id 0424242******4242 ok"
        );
        assert_eq!(
            scrub_text("42424242424242421", &echoes).unwrap(),
            "424242******42421"
        );
        assert_eq!(scrub_text("nothing here, ünïcödé", &echoes), None);
    }
}
