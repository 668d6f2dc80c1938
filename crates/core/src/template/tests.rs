use proptest::prelude::*;
use serde_json::json;

use super::*;

fn card_values() -> Substitutions {
    let mut v = Substitutions::default();
    v.set(
        Placeholder::CardNumber,
        SecretString::new("4242424242424242".into()),
    );
    v.set(Placeholder::ExpirationMonth, SecretString::new("07".into()));
    v.set(
        Placeholder::ExpirationYear,
        SecretString::new("2030".into()),
    );
    v.set(Placeholder::ExpirationYear2, SecretString::new("30".into()));
    v.set(
        Placeholder::ExpirationYear4,
        SecretString::new("2030".into()),
    );
    v.set(Placeholder::Cvc, SecretString::new("123".into()));
    v
}

#[test]
fn finds_every_placeholder_and_alias() {
    let t = Template::parse(
        "${cardNumber}|${expirationMonth}|${expirationYear}|${expirationYear2}|${expirationYear4}|${cvv}|${cvc}",
    )
    .unwrap();
    assert_eq!(
        t.render(&card_values(), Encoding::Raw),
        "4242424242424242|07|2030|30|2030|123|123"
    );

    let t = Template::parse(
        "n=cardNumberPlaceholder c=cvvPlaceholder m=expirationMonthPlaceholder y=expirationYearPlaceholder y2=expirationYearPlaceholder2",
    )
    .unwrap();
    assert_eq!(
        t.render(&card_values(), Encoding::Raw),
        "n=4242424242424242 c=123 m=07 y=2030 y2=30"
    );
}

#[test]
fn aliases_match_whole_words_only() {
    let text = "xcardNumberPlaceholder cardNumberPlaceholderX cardNumberPlaceholder_1";
    let t = Template::parse(text).unwrap();
    assert!(t.is_literal());
    assert_eq!(t.render(&card_values(), Encoding::Raw), text);
}

#[test]
fn unknown_placeholders_are_refused_and_unclosed_ones_are_text() {
    assert_eq!(Template::parse("${cardnumber}"), Err(UnknownPlaceholder));
    assert_eq!(Template::parse("${}"), Err(UnknownPlaceholder));
    assert_eq!(Template::parse("a ${pan} b"), Err(UnknownPlaceholder));
    let t = Template::parse("price $5 and ${ unclosed").unwrap();
    assert!(t.is_literal());
}

#[test]
fn form_templates_also_find_percent_encoded_placeholders() {
    let t =
        Template::parse_form("number=%24%7BcardNumber%7D&cvc=%24%7bcvv%7D&m=${expirationMonth}")
            .unwrap();
    assert_eq!(
        t.render(&card_values(), Encoding::Form),
        "number=4242424242424242&cvc=123&m=07"
    );
    assert_eq!(
        Template::parse_form("x=%24%7Bnope%7D"),
        Err(UnknownPlaceholder)
    );
    assert!(
        Template::parse("x=%24%7BcardNumber%7D")
            .unwrap()
            .is_literal()
    );
}

#[test]
fn substituted_values_are_never_expanded_again() {
    let mut v = Substitutions::default();
    v.set(
        Placeholder::FirstName,
        SecretString::new("${cvv} cvvPlaceholder".into()),
    );
    v.set(Placeholder::Cvc, SecretString::new("999".into()));
    let t = Template::parse("${firstName}").unwrap();
    assert_eq!(t.render(&v, Encoding::Raw), "${cvv} cvvPlaceholder");
}

#[test]
fn values_are_escaped_for_their_format() {
    let mut v = Substitutions::default();
    v.set(
        Placeholder::FirstName,
        SecretString::new("A&B <\"x'> 50% = é\n".into()),
    );
    let t = Template::parse("${firstName}").unwrap();
    assert_eq!(t.render(&v, Encoding::Json), "A&B <\\\"x'> 50% = é\\n");
    assert_eq!(
        t.render(&v, Encoding::Xml),
        "A&amp;B &lt;&quot;x&apos;&gt; 50% = é\n"
    );
    assert_eq!(
        t.render(&v, Encoding::Form),
        "A%26B+%3C%22x%27%3E+50%25+%3D+%C3%A9%0A"
    );
}

#[test]
fn short_secrets_must_stand_alone() {
    for ok in [
        "${cvv}",
        "{\"cvc\":\"${cvv}\"}",
        "<cvc>${cvv}</cvc>",
        "<c v='${cvv}'/>",
        "a=1&cvc=${cvv}&b=2",
        "cvc=${cvv}",
        "n=${cardNumber}7",
    ] {
        assert!(
            Template::parse(ok).unwrap().short_secrets_stand_alone(),
            "{ok}"
        );
    }
    for bad in [
        "0${cvv}",
        "cvc ${cvv}",
        "\"${cvv}${cvv}\"",
        "\"${expirationMonth}${cvv}\"",
        "<a>x${accountNumber}</a>",
        "=${cvv}0",
    ] {
        assert!(
            !Template::parse(bad).unwrap().short_secrets_stand_alone(),
            "{bad}"
        );
    }
    assert!(
        JsonTemplate::parse(json!({"c": "${cvv}", "n": "x${cardNumber}"}))
            .unwrap()
            .short_secrets_stand_alone()
    );
    assert!(
        !JsonTemplate::parse(json!({"c": "cvc ${cvv}"}))
            .unwrap()
            .short_secrets_stand_alone()
    );
    assert!(
        FormTemplate::from_json(&json!({"card": {"cvc": "${cvv}"}}))
            .unwrap()
            .short_secrets_stand_alone()
    );
    assert!(
        !FormTemplate::from_json(&json!({"card": {"cvc": "0${cvv}"}}))
            .unwrap()
            .short_secrets_stand_alone()
    );
}

#[test]
fn parsing_many_unclosed_openers_stays_linear() {
    let text = "${".repeat(200_000) + &"%24%7B".repeat(100_000);
    // Quadratic parsing would take minutes here; linear parsing takes milliseconds.
    assert!(Template::parse_form(&text).unwrap().is_literal());
}

#[test]
fn missing_reports_the_first_value_not_held() {
    let t = Template::parse("${cardNumber} ${accountNumber}").unwrap();
    assert_eq!(
        card_values().missing(t.placeholders()),
        Some(Placeholder::AccountNumber)
    );
}

#[test]
fn each_placeholder_has_its_own_slot() {
    for (i, p) in Placeholder::ALL.into_iter().enumerate() {
        assert_eq!(p.index(), i, "{p:?}");
    }
    let mut values = Substitutions::default();
    for p in Placeholder::ALL {
        values.set(p, SecretString::new(format!("{p:?}")));
    }
    for p in Placeholder::ALL {
        assert_eq!(values.get(p), Some(format!("{p:?}").as_str()));
    }
}

#[test]
fn json_templates_render_string_values_only() {
    let template = JsonTemplate::parse(json!({
        "amount": 2000,
        "source": {"number": "${cardNumber}", "exp": "${expirationMonth}/${expirationYear2}", "cvc": "${cvv}"},
        "items": ["${cardNumber}", true, null],
        "${cardNumber}": "key stays",
    }))
    .unwrap();
    let used: Vec<_> = template.placeholders().collect();
    assert_eq!(
        used,
        vec![
            Placeholder::CardNumber,
            Placeholder::ExpirationMonth,
            Placeholder::ExpirationYear2,
            Placeholder::Cvc
        ]
    );
    assert_eq!(
        template.render(&card_values()),
        json!({
            "amount": 2000,
            "source": {"number": "4242424242424242", "exp": "07/30", "cvc": "123"},
            "items": ["4242424242424242", true, null],
            "${cardNumber}": "key stays",
        })
    );
    assert!(JsonTemplate::parse(json!({"a": ["${nope}"]})).is_err());
    // Written straight from the parsed tree, the bytes are serde_json's own serialization.
    assert_eq!(
        template.render_bytes(&card_values()).unwrap(),
        serde_json::to_vec(&template.render(&card_values())).unwrap()
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,64}") {
        let _ = Template::parse(&text);
    }

    #[test]
    fn json_rendering_places_values_exactly(value in "\\PC{0,32}", prefix in "[a-z ]{0,8}") {
        let mut v = Substitutions::default();
        v.set(Placeholder::FirstName, SecretString::new(value.clone()));
        let template = JsonTemplate::parse(json!({"name": format!("{prefix}${{firstName}}")})).unwrap();
        let bytes = template.render_bytes(&v).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(parsed["name"].as_str().unwrap(), format!("{prefix}{value}"));
    }

    #[test]
    fn json_escaping_roundtrips(value in "\\PC{0,32}") {
        let mut v = Substitutions::default();
        v.set(Placeholder::LastName, SecretString::new(value.clone()));
        let rendered = Template::parse("{\"n\":\"${lastName}\"}").unwrap().render(&v, Encoding::Json);
        let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        prop_assert_eq!(parsed["n"].as_str().unwrap(), value.as_str());
    }
}

/// Holder-name-like text: any printable character, never a control character (tokenization
/// refuses those, and XML could not carry most of them).
const PRINTABLE: &str = "\\PC{0,24}";

fn named(first: &str, last: &str) -> Substitutions {
    let mut v = Substitutions::default();
    v.set(Placeholder::FirstName, SecretString::new(first.to_owned()));
    v.set(Placeholder::LastName, SecretString::new(last.to_owned()));
    v
}

/// Attribute value and text of the root element, unescaped by a real XML parser.
fn parse_xml(doc: &str) -> (String, String) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    let (mut attr, mut text) = (String::new(), String::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                for a in e.attributes() {
                    attr = a
                        .unwrap()
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned();
                }
            }
            Event::Text(t) => text.push_str(&t),
            Event::GeneralRef(r) => text.push(match &*r {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                other => panic!("unexpected entity {other}"),
            }),
            Event::Eof => break,
            _ => {}
        }
    }
    (attr, text)
}

proptest! {
    #[test]
    fn form_rendering_places_values_exactly(first in PRINTABLE, last in PRINTABLE) {
        let values = named(&first, &last);
        let template = FormTemplate::from_json(&json!({"a": {"b": "x${firstName}y"}, "c": ["${lastName}"]})).unwrap();
        let rendered = template.render(&values);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(rendered.as_bytes()).into_owned().collect();
        prop_assert_eq!(pairs, vec![
            ("a[b]".to_owned(), format!("x{first}y")),
            ("c[0]".to_owned(), last.clone()),
        ]);
        let raw = Template::parse_form("k=${firstName}&l=%24%7BlastName%7D").unwrap().render(&values, Encoding::Form);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
        prop_assert_eq!(pairs, vec![("k".to_owned(), first), ("l".to_owned(), last)]);
    }

    #[test]
    fn xml_rendering_places_values_exactly(first in PRINTABLE, last in PRINTABLE) {
        let doc = Template::parse("<r a=\"${firstName}\">${lastName}</r>").unwrap().render(&named(&first, &last), Encoding::Xml);
        prop_assert!(crate::xml::is_well_formed(&doc), "{}", doc);
        prop_assert_eq!(parse_xml(&doc), (first, last));
    }

    /// The fuzz targets of the pure parsers, run on every test pass: no input panics them.
    #[test]
    fn parsers_never_panic(text in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let lossy = String::from_utf8_lossy(&bytes);
        for input in [text.as_str(), lossy.as_ref()] {
            let _ = Template::parse_form(input);
            let _ = crate::xml::is_well_formed(input);
            let echoes = [
                crate::scrub::Echo { secret: "4242424242424242", mask: "x".into(), kind: crate::scrub::EchoKind::Number },
                crate::scrub::Echo { secret: "739", mask: "***".into(), kind: crate::scrub::EchoKind::Code },
            ];
            let _ = crate::scrub::scrub_text(input, &echoes);
            let _ = crate::destination::DestinationRules::default().check_url(input);
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(input) {
                let _ = FormTemplate::from_json(&value);
                let _ = JsonTemplate::parse(value);
            }
        }
    }

    #[test]
    fn scrubbing_removes_every_grouping(sep in "[ +-]|%20", groups in proptest::collection::vec(1usize..6, 1..5)) {
        let pan = "4242424242424242";
        let mut printed = String::new();
        let mut at = 0;
        for size in groups.iter().chain(std::iter::once(&16)) {
            let end = (at + size).min(pan.len());
            if at > 0 && at < end { printed.push_str(&sep); }
            printed.push_str(&pan[at..end]);
            at = end;
        }
        let echoes = [crate::scrub::Echo { secret: pan, mask: "MASK".into(), kind: crate::scrub::EchoKind::Number }];
        let text = format!("x {printed} y");
        prop_assert_eq!(crate::scrub::scrub_text(&text, &echoes), Some("x MASK y".to_owned()));
    }
}
