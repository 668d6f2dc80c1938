use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A document's template, read from its text as the proxy reads it.
fn template_of(value: &serde_json::Value) -> Result<JsonTemplate, JsonTemplateError> {
    JsonTemplate::read(&value.to_string())
}

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
        template_of(&json!({"c": "${cvv}", "n": "x${cardNumber}"}))
            .unwrap()
            .short_secrets_stand_alone()
    );
    assert!(
        !template_of(&json!({"c": "cvc ${cvv}"}))
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
fn values_past_the_buffers_first_size_and_values_set_again_read_back_whole() {
    let long = |p: Placeholder| format!("{p:?}-{}", "é".repeat(40));
    let mut values = Substitutions::default();
    for p in Placeholder::ALL {
        values.set_str(p, &long(p));
    }
    values.set_str(Placeholder::Cvc, "123");
    values.set_str(Placeholder::FirstName, "");
    for p in Placeholder::ALL {
        let expected = match p {
            Placeholder::Cvc => "123".to_owned(),
            Placeholder::FirstName => String::new(),
            p => long(p),
        };
        assert_eq!(values.get(p), Some(expected.as_str()), "{p:?}");
    }
}

#[test]
fn json_templates_render_string_values_only() {
    let template = template_of(&json!({
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
    let expected = json!({
        "amount": 2000,
        "source": {"number": "4242424242424242", "exp": "07/30", "cvc": "123"},
        "items": ["4242424242424242", true, null],
        "${cardNumber}": "key stays",
    });
    // The bytes are serde_json's own serialization of the filled-in document.
    assert_eq!(
        template.render_bytes(&card_values()).unwrap(),
        serde_json::to_vec(&expected).unwrap()
    );
    assert!(template_of(&json!({"a": ["${nope}"]})).is_err());
}

#[test]
fn a_text_without_a_placeholder_is_no_template_and_one_with_is_parsed_as_ever() {
    for literal in [
        "",
        "https://pay.example/v1/charges?x=$1{",
        "${cardNumber",
        "Bearer sk_1",
    ] {
        assert_eq!(Template::parse_if_templated(literal), Ok(None), "{literal}");
    }
    for templated in [
        "a ${cardNumber} b",
        "cvvPlaceholder",
        "x ${cvv}${expirationYear2} y",
    ] {
        assert_eq!(
            Template::parse_if_templated(templated),
            Ok(Some(Template::parse(templated).unwrap())),
            "{templated}"
        );
    }
    assert_eq!(
        Template::parse_if_templated("ok ${nope}"),
        Err(UnknownPlaceholder)
    );
    // Each alias is found, so none escapes the search for what every alias contains.
    for (alias, placeholder) in ALIASES {
        let template = Template::parse_if_templated(&format!("x {alias} y"))
            .unwrap()
            .unwrap();
        assert_eq!(
            template.placeholders().collect::<Vec<_>>(),
            [placeholder],
            "{alias}"
        );
    }
}

#[test]
fn a_template_read_from_text_renders_as_serde_json_writes_its_filled_in_value() {
    for text in [
        r#"{"amount": 2000, "currency": "usd", "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}"}, "metadata": {"order_id": "A-1001"}}"#,
        r#"[1, -2.50, 3e-7, 12345678901234567890.10, true, false, null, "\u00e9\n\"", {}, []]"#,
        r#"{"a": [{"b": "${lastName} and ${firstName}", "c": [null, "${cvv}"]}], "${cardNumber}": "x"}"#,
        r#" {"spaced" : [ 1 , "${routingNumber}" ] } "#,
        r#"{"z": 1, "a": 2, "m": {"y": "${expirationYear4}", "b": "y"}}"#,
    ] {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            JsonTemplate::read(text)
                .unwrap()
                .render_bytes(&card_values())
                .unwrap(),
            filled_in(&value).unwrap(),
            "{text}"
        );
    }
    // Numbers keep their digits and key order is kept, as serde_json's own `Value` keeps them.
    let read = JsonTemplate::read(r#"{"z": 18446744073709551616, "a": 0.10}"#).unwrap();
    assert_eq!(
        read.render_bytes(&card_values()).unwrap(),
        br#"{"z":18446744073709551616,"a":0.10}"#
    );
}

#[test]
fn a_template_text_that_is_not_json_or_repeats_a_key_is_invalid_json_first() {
    for text in [
        r#"{"a": 1, "a": 2}"#,
        r#"{"a": {"b": [{"c": 1, "\u0063": 2}]}}"#,
        r#"{"a": "${nope}", "a": 2}"#,
        r#"{"a": "${nope}", "b": }"#,
        r#"{"a": "\ud800"}"#,
        r#"{"a": 1} x"#,
        r#"{"a": {"$serde_json::private::Number": "x"}}"#,
        r#"{"a": {"$serde_json::private::Number": " 12"}}"#,
        "",
    ] {
        assert_eq!(
            JsonTemplate::read(text).unwrap_err(),
            JsonTemplateError::InvalidJson,
            "{text}"
        );
    }
    assert_eq!(
        JsonTemplate::read(r#"{"a": ["${nope}"], "b": "${cardNumber}"}"#).unwrap_err(),
        JsonTemplateError::UnknownPlaceholder
    );
    // As many keys as the duplicate check keeps in a set, the repeat near the end.
    let mut fields: Vec<String> = (0..100).map(|n| format!("\"k{n}\": {n}")).collect();
    assert!(JsonTemplate::read(&format!("{{{}}}", fields.join(","))).is_ok());
    fields.push("\"k3\": 0".to_owned());
    assert_eq!(
        JsonTemplate::read(&format!("{{{}}}", fields.join(","))).unwrap_err(),
        JsonTemplateError::InvalidJson
    );
}

/// JSON documents with placeholders (known and unknown) in their strings and keys.
fn json_document() -> impl Strategy<Value = serde_json::Value> {
    let text = prop_oneof![
        "[a-z \\\\\"\u{e9}]{0,8}",
        Just("${cardNumber}".to_owned()),
        Just("exp ${expirationMonth}/${expirationYear2}".to_owned()),
        Just("${cvv}".to_owned()),
        Just("${nope}".to_owned()),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        text.clone().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(text.clone(), inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Read from its text, compact or pretty, a document renders as `serde_json` writes its
    /// value with each string filled in; a document naming an unknown placeholder is refused.
    #[test]
    fn reading_a_document_renders_its_filled_in_value(value in json_document()) {
        let expected = filled_in(&value);
        for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap()] {
            match (JsonTemplate::read(&text), &expected) {
                (Ok(read), Some(expected)) => {
                    prop_assert_eq!(&read.render_bytes(&card_values()).unwrap(), expected);
                }
                (Err(e), None) => prop_assert_eq!(e, JsonTemplateError::UnknownPlaceholder),
                (read, expected) => prop_assert!(false, "{:?} {:?}", read.map(|_| ()), expected.is_some()),
            }
        }
    }
}

/// What a JSON template must send: `serde_json`'s serialization of the document with each
/// string filled in; `None` when a string names an unknown placeholder.
fn filled_in(value: &serde_json::Value) -> Option<Vec<u8>> {
    fn fill(value: &serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match value {
            Value::String(s) => Value::String(
                Template::parse(s)
                    .ok()?
                    .render(&card_values(), Encoding::Raw),
            ),
            Value::Array(items) => Value::Array(items.iter().map(fill).collect::<Option<_>>()?),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Some((k.clone(), fill(v)?)))
                    .collect::<Option<_>>()?,
            ),
            other => other.clone(),
        })
    }
    fill(value).map(|filled| serde_json::to_vec(&filled).unwrap())
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
        let template = template_of(&json!({"name": format!("{prefix}${{firstName}}")})).unwrap();
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
                let _ = JsonTemplate::read(input);
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
