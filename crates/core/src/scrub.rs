//! Removing card data a processor echoes back before the response reaches the caller.

/// A secret to look for and what to put in its place.
pub struct Echo<'a> {
    pub secret: &'a str,
    pub mask: String,
}

/// Replaces every occurrence of each secret in `text`, in the forms a processor may echo:
/// plain, and for long digit strings also grouped with spaces or dashes (`4242 4242 4242 4242`).
/// A digit string is only replaced where it is not part of a longer run of digits, so an
/// amount or an id that happens to contain the digits is left alone.
pub fn scrub_text(text: &str, echoes: &[Echo<'_>]) -> Option<String> {
    let mut current: Option<String> = None;
    for echo in echoes {
        if echo.secret.is_empty() {
            continue;
        }
        let source = current.as_deref().unwrap_or(text);
        if let Some(replaced) = replace_bounded(source, echo) {
            current = Some(replaced);
        }
    }
    current
}

fn replace_bounded(text: &str, echo: &Echo<'_>) -> Option<String> {
    let digits_only = echo.secret.bytes().all(|b| b.is_ascii_digit());
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if digits_only && i > 0 && bytes[i - 1].is_ascii_digit() {
            i += 1;
            continue;
        }
        let matched = match_at(bytes, i, echo.secret.as_bytes(), digits_only);
        match matched {
            Some(len) if !(digits_only && bytes.get(i + len).is_some_and(u8::is_ascii_digit)) => {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..i]);
                out.push_str(&echo.mask);
                i += len;
                copied = i;
            }
            _ => i += 1,
        }
    }
    let mut out = out?;
    out.push_str(&text[copied..]);
    Some(out)
}

/// The length of the secret found at `at`; digit secrets of 12+ digits may be grouped by single
/// spaces or dashes, as card numbers are printed.
fn match_at(bytes: &[u8], at: usize, secret: &[u8], digits_only: bool) -> Option<usize> {
    if bytes[at..].starts_with(secret) {
        return Some(secret.len());
    }
    if !digits_only || secret.len() < 12 {
        return None;
    }
    let mut i = at;
    let mut matched = 0;
    let mut separator: Option<u8> = None;
    while matched < secret.len() {
        let b = *bytes.get(i)?;
        if b == secret[matched] {
            matched += 1;
            i += 1;
        } else if matched > 0 && (b == b' ' || b == b'-') && separator.is_none_or(|s| s == b) {
            separator = Some(b);
            i += 1;
        } else {
            return None;
        }
    }
    Some(i - at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan_echo() -> Echo<'static> {
        Echo {
            secret: "4242424242424242",
            mask: "424242******4242".into(),
        }
    }

    #[test]
    fn masks_plain_and_grouped_card_numbers() {
        let echoes = [pan_echo()];
        assert_eq!(
            scrub_text(
                r#"{"n":"4242424242424242","m":"4242 4242 4242 4242","d":"4242-4242-4242-4242"}"#,
                &echoes
            )
            .unwrap(),
            r#"{"n":"424242******4242","m":"424242******4242","d":"424242******4242"}"#
        );
    }

    #[test]
    fn leaves_longer_digit_runs_and_clean_text_alone() {
        let echoes = [pan_echo()];
        assert_eq!(scrub_text("id 14242424242424242 ok", &echoes), None);
        assert_eq!(scrub_text("nothing here", &echoes), None);
    }
}
