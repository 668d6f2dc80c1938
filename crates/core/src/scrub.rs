//! Removing card data a processor echoes back, before the response reaches the caller.
//!
//! Two kinds of secret are looked for. Long digit strings (card and account numbers) are found
//! in the forms a processor may print them: plain, grouped with spaces, dashes or `+`,
//! percent-encoded (`%34%32…`, `4242%204242…`) or JSON-escaped (`\u0034…`), wherever they are,
//! even inside a longer run of digits (a caller could otherwise prefix a digit to a card number
//! and read the echo back whole). Short codes (the CVC, short account numbers) are three to seven
//! digits, which any body is full of, so they are masked where they are a whole value: between
//! `"…"`, `'…'`, `>…<`, after `=` up to `&`, `;`, a line end or the end of the text, or the whole
//! text; templates may only place them there (see `Template::short_secrets_stand_alone`).
//!
//! A processor may carry the body it received inside its own answer: as a JSON string (where
//! `"` arrives as `\"`, `\\\"` one level deeper, or `\u0022`), percent-encoded (`%22`, `%2522`),
//! as XML text (`&quot;`, `&amp;quot;`) or any nesting of these. The delimiters around a short
//! code are therefore read through those escapes, so the whole-value rule holds however deep the
//! echo is carried; the digits themselves are never escaped by any of these encodings.

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
    scrub_trying(text, echoes, first_bytes)
}

/// Where a match may start: at a byte of the set only, or (for tests to compare against)
/// anywhere.
#[derive(Clone, Copy)]
enum Starts {
    One(u8),
    Three(u8, u8, u8),
    #[cfg(test)]
    Anywhere,
}

/// The bytes a match of a secret starting with `first` can start with: the byte itself, and
/// for a number also the escapes its first digit may be written in (`%3…`, `\u003…`). A
/// response is mostly bytes that can start nothing, which `memchr` skips many at a time.
fn first_bytes(kind: EchoKind, first: u8) -> Starts {
    match kind {
        EchoKind::Number => Starts::Three(first, b'%', b'\\'),
        EchoKind::Code => Starts::One(first),
    }
}

fn scrub_trying(
    text: &str,
    echoes: &[Echo<'_>],
    starts: fn(EchoKind, u8) -> Starts,
) -> Option<String> {
    let mut current: Option<String> = None;
    for echo in echoes {
        let Some(&first) = echo.secret.as_bytes().first() else {
            continue;
        };
        let source = current.as_deref().unwrap_or(text);
        let starts = starts(echo.kind, first);
        let replaced = match echo.kind {
            EchoKind::Number => replace_numbers(source, echo, starts),
            EchoKind::Code => replace_codes(source, echo, starts),
        };
        if let Some(replaced) = replaced {
            current = Some(replaced);
        }
    }
    current
}

fn replace_numbers(text: &str, echo: &Echo<'_>, starts: Starts) -> Option<String> {
    let bytes = text.as_bytes();
    let secret = echo.secret.as_bytes();
    replace_matches(text, &echo.mask, starts, |i| {
        bytes.get(i..).and_then(|rest| match_number(rest, secret))
    })
}

fn replace_codes(text: &str, echo: &Echo<'_>, starts: Starts) -> Option<String> {
    let bytes = text.as_bytes();
    let secret = echo.secret.as_bytes();
    replace_matches(text, &echo.mask, starts, |i| {
        let end = i + secret.len();
        let whole_value = bytes.get(i..).is_some_and(|rest| rest.starts_with(secret))
            && opens_value(bytes, i)
            && closes_value(bytes, end);
        whole_value.then_some(secret.len())
    })
}

/// Characters that may stand right before a whole value: a quote, the end of an XML start tag,
/// a form key's `=`.
const OPENERS: &[u8] = b"\"'>=";
/// Characters that may stand right after one: a quote, an XML end tag, the end of a form value.
const CLOSERS: &[u8] = b"\"'<&;\r\n";
/// How many escapes may be nested around one delimiter: three carriers deep, each of which may
/// escape the escape character of the one inside it, with room to spare.
const MAX_ESCAPE_DEPTH: usize = 6;

/// Whether the text before `at` ends in an opening delimiter (however escaped) or is empty.
fn opens_value(bytes: &[u8], at: usize) -> bool {
    match char_before(bytes, at, 0) {
        None => true,
        Some((c, _)) => OPENERS.contains(&c),
    }
}

/// Whether the text from `at` starts with a closing delimiter (however escaped) or is empty.
/// JSON escapes a quote as `\"`, so backslashes (themselves escaped one level deeper) are
/// skipped; `\n` and `\r` are the escaped line ends.
fn closes_value(bytes: &[u8], mut at: usize) -> bool {
    let mut escaped = false;
    for _ in 0..=MAX_ESCAPE_DEPTH * 2 {
        match char_after(bytes, at) {
            None => return true,
            Some((b'\\', next)) => {
                escaped = true;
                at = next;
            }
            Some((c, _)) => {
                return CLOSERS.contains(&c) || (escaped && matches!(c, b'n' | b'r'));
            }
        }
    }
    false
}

/// The character that ends at `end`, decoded through percent-encoding (`%22`, `%2522`), JSON
/// unicode escapes (`\u0022`) and XML entities (`&quot;`, `&#34;`, `&amp;quot;`), with the
/// index where its encoded form starts. `None` at the start of the text.
fn char_before(bytes: &[u8], end: usize, depth: usize) -> Option<(u8, usize)> {
    let (c, start) = escape_before(bytes, end, depth)?;
    if c == b';'
        && depth < MAX_ESCAPE_DEPTH
        && let Some(decoded) = entity_before(bytes, start, depth + 1)
    {
        return Some(decoded);
    }
    Some((c, start))
}

/// A percent or `\u00XX` escape ending at `end`, else the literal byte there.
fn escape_before(bytes: &[u8], end: usize, depth: usize) -> Option<(u8, usize)> {
    let last = end.checked_sub(1)?;
    if depth < MAX_ESCAPE_DEPTH && end >= 3 {
        let hex_start = end - 2;
        if let Some(value) = bytes.get(hex_start..end).and_then(hex_pair) {
            // `%HH`, where the `%` may itself be encoded (`%25HH`).
            if let Some((b'%', start)) = char_before(bytes, hex_start, depth + 1) {
                return Some((value, start));
            }
            // `\u00HH`, where the backslash may itself be encoded (`%5Cu00HH`).
            if hex_start >= 4
                && bytes
                    .get(hex_start - 3..hex_start)
                    .is_some_and(|u| u.eq_ignore_ascii_case(b"u00"))
                && let Some((b'\\', start)) = char_before(bytes, hex_start - 3, depth + 1)
            {
                return Some((value, start));
            }
        }
    }
    bytes.get(last).map(|&c| (c, last))
}

/// XML entities for the delimiters and for `&` itself; numeric ones follow a `#`.
const NAMED_ENTITIES: [(&[u8], u8); 5] = [
    (b"quot", b'"'),
    (b"apos", b'\''),
    (b"gt", b'>'),
    (b"lt", b'<'),
    (b"amp", b'&'),
];
const NUMERIC_ENTITIES: [(&[u8], u8); 10] = [
    (b"34", b'"'),
    (b"39", b'\''),
    (b"62", b'>'),
    (b"61", b'='),
    (b"38", b'&'),
    (b"x22", b'"'),
    (b"x27", b'\''),
    (b"x3e", b'>'),
    (b"x3d", b'='),
    (b"x26", b'&'),
];

/// The entity whose `;` starts at `semicolon`: its character and where its `&` starts.
fn entity_before(bytes: &[u8], semicolon: usize, depth: usize) -> Option<(u8, usize)> {
    let before = bytes.get(..semicolon)?;
    let ends_with = |name: &[u8]| {
        before
            .len()
            .checked_sub(name.len())
            .and_then(|start| before.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(name))
    };
    let ampersand = |at: usize| match char_before(bytes, at, depth) {
        Some((b'&', start)) => Some(start),
        _ => None,
    };
    for (name, value) in NAMED_ENTITIES {
        if ends_with(name)
            && let Some(start) = ampersand(semicolon - name.len())
        {
            return Some((value, start));
        }
    }
    for (name, value) in NUMERIC_ENTITIES {
        if ends_with(name)
            && let Some((b'#', hash)) = char_before(bytes, semicolon - name.len(), depth)
            && let Some(start) = ampersand(hash)
        {
            return Some((value, start));
        }
    }
    None
}

/// The character that starts at `at`, decoded through percent-encoding and `\u00XX` (whose
/// backslash may itself be percent-encoded), with the index after its encoded form. An XML
/// entity starts with `&`, which is a closer already.
fn char_after(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let first = *bytes.get(at)?;
    let (c, next) = match first {
        b'%' => percent_after(bytes, at).unwrap_or((first, at + 1)),
        _ => (first, at + 1),
    };
    if c == b'\\'
        && let Some(value) = bytes
            .get(next..next + 3)
            .filter(|u| u.eq_ignore_ascii_case(b"u00"))
            .and_then(|_| bytes.get(next + 3..next + 5))
            .and_then(hex_pair)
    {
        return Some((value, next + 5));
    }
    Some((c, next))
}

/// `%HH` at `at`, where `%25` followed by two more hex digits is an encoded `%` (any depth).
fn percent_after(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let mut value = bytes.get(at + 1..at + 3).and_then(hex_pair)?;
    let mut end = at + 3;
    while value == b'%'
        && let Some(inner) = bytes.get(end..end + 2).and_then(hex_pair)
    {
        value = inner;
        end += 2;
    }
    Some((value, end))
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    match pair {
        [high, low] => u8::try_from(digit(*high)? * 16 + digit(*low)?).ok(),
        _ => None,
    }
}

/// Copies `text`, replacing each span `matcher` reports (its length, from a start index).
fn replace_matches(
    text: &str,
    mask: &str,
    starts: Starts,
    matcher: impl Fn(usize) -> Option<usize>,
) -> Option<String> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = next_start(text.as_bytes(), i, starts) {
        i = at;
        // A start byte is ASCII or a secret's first byte, always a character's start; only
        // the tests' every-position scan lands inside one.
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

/// The first index from `from` on where a match may start.
fn next_start(bytes: &[u8], from: usize, starts: Starts) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let found = match starts {
        Starts::One(a) => memchr::memchr(a, rest),
        Starts::Three(a, b, c) => memchr::memchr3(a, b, c, rest),
        #[cfg(test)]
        Starts::Anywhere => (!rest.is_empty()).then_some(0),
    };
    found.map(|at| from + at)
}

/// Length of the match of `secret` (ASCII digits) at the start of `bytes`, in any printed form.
fn match_number(bytes: &[u8], secret: &[u8]) -> Option<usize> {
    let mut at = 0;
    for (n, &digit) in secret.iter().enumerate() {
        if n > 0 {
            at += bytes.get(at..).map_or(0, separator_len);
        }
        at += digit_len(bytes.get(at..)?, digit)?;
    }
    Some(at)
}

/// Length of `digit` (an ASCII digit) at the start of `bytes`, as itself or escaped: `4` is
/// also matched as `%34` and `\u0034` (or `\U0034`).
fn digit_len(bytes: &[u8], digit: u8) -> Option<usize> {
    match bytes {
        [first, ..] if *first == digit => Some(1),
        [b'%', b'3', d, ..] if *d == digit => Some(3),
        [b'\\', b'u' | b'U', b'0', b'0', b'3', d, ..] if *d == digit => Some(6),
        _ => None,
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
    use proptest::prelude::*;

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
    fn codes_are_masked_however_their_delimiters_are_escaped() {
        let echoes = echoes();
        for (echoed, masked) in [
            (
                r#"{"body":"{\"c\":\"739\"}"}"#,
                r#"{"body":"{\"c\":\"***\"}"}"#,
            ),
            (
                r#""{\\\"c\\\":\\\"739\\\"}""#,
                r#""{\\\"c\\\":\\\"***\\\"}""#,
            ),
            (
                r#"{"b":"card[cvc]=739&x=1"}"#,
                r#"{"b":"card[cvc]=***&x=1"}"#,
            ),
            (r#"{"b":"card[cvc]=739"}"#, r#"{"b":"card[cvc]=***"}"#),
            ("card%5Bcvc%5D%3D739%26x%3D1", "card%5Bcvc%5D%3D***%26x%3D1"),
            (
                "%257B%2522c%2522%253A%2522739%2522%257D",
                "%257B%2522c%2522%253A%2522***%2522%257D",
            ),
            (
                r#"{"b":"\u003ccvc\u003e739\u003c/cvc\u003e"}"#,
                r#"{"b":"\u003ccvc\u003e***\u003c/cvc\u003e"}"#,
            ),
            (
                "<b>&lt;x cvc=&quot;739&quot;/&gt;</b>",
                "<b>&lt;x cvc=&quot;***&quot;/&gt;</b>",
            ),
            (
                "<b>&amp;lt;cvc&amp;gt;739&amp;lt;/cvc&amp;gt;</b>",
                "<b>&amp;lt;cvc&amp;gt;***&amp;lt;/cvc&amp;gt;</b>",
            ),
            ("<b>a=1&amp;cvc=739</b>", "<b>a=1&amp;cvc=***</b>"),
            ("x=%26%2334%3B739%26%2334%3B", "x=%26%2334%3B***%26%2334%3B"),
            (r#"{"b":"cvc=739\r\nb"}"#, r#"{"b":"cvc=***\r\nb"}"#),
            ("739", "***"),
        ] {
            assert_eq!(
                scrub_text(echoed, &echoes).as_deref(),
                Some(masked),
                "{echoed}"
            );
        }
        for clean in [
            r#"{"body":"{\"amount\":739,\"n\":[739]}"}"#,
            "%7B%22amount%22%3A739%7D",
            "&quot;amount&quot;: 739,",
            "%22a739%22",
            "%227390%22",
            "u00739",
            "%25%25739x",
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

    /// Bodies made of the pieces an echo and its escapes are built from, non-ASCII included.
    fn echo_like_text() -> impl Strategy<Value = String> {
        let pieces = [
            "4", "2", "7", "3", "9", "0", " ", "-", "+", "%", "3", "4", "%34", "%2520", "%20",
            "\\", "\\u0034", "\\U0032", "u00", "\"", "'", "<", ">", "=", "&", ";", "&quot;",
            "&#34;", "%22", "\\\"", "\n", "é", "ü", "x",
        ];
        proptest::collection::vec(proptest::sample::select(pieces.to_vec()), 0..64)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Trying a match only where its first character can start finds exactly what trying
        /// at every position finds.
        #[test]
        fn trying_only_where_a_match_can_start_finds_what_trying_everywhere_finds(
            text in echo_like_text(),
            number in "[0-9]{12,19}",
            code in "[0-9]{3,4}",
        ) {
            let mask = "*".repeat(number.len());
            let echoes = [
                Echo { secret: &number, mask, kind: EchoKind::Number },
                Echo { secret: &code, mask: "***".into(), kind: EchoKind::Code },
            ];
            let (first, rest) = number.split_at(1);
            let with_echoes = format!(
                "{text}{number}{text}%3{first}{rest}{text}\\u003{first}{rest}{text}\"{code}\"{text}"
            );
            for text in [text.as_str(), with_echoes.as_str()] {
                prop_assert_eq!(
                    scrub_text(text, &echoes),
                    scrub_trying(text, &echoes, |_, _| Starts::Anywhere)
                );
            }
        }
    }
}
