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
fn missing_reports_the_first_value_not_held() {
    let t = Template::parse("${cardNumber} ${accountNumber}").unwrap();
    assert_eq!(
        card_values().missing(t.placeholders()),
        Some(Placeholder::AccountNumber)
    );
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
        let bytes = template.render_bytes(&v);
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
