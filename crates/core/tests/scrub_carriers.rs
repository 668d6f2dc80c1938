//! A processor may answer with the body it received carried inside its own answer: as a JSON
//! string, a form value, XML text, percent-encoded, in a header, and nested up to three deep.
//! However it is carried, an echoed CVC or short account number never comes back, and numbers
//! that merely share its digits (a JSON amount, a decimal, a longer id) are left as they were.
//!
//! Each case builds the filled body twice, once with the secrets and once with their masks,
//! wraps both in the same carriers, and expects scrubbing the first to give exactly the second.
#![allow(clippy::unwrap_used)]

use cardvault_core::mask;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use proptest::prelude::*;

const PAN: &str = "4111111111111111";

#[derive(Debug, Clone, Copy)]
enum Secret {
    Cvc,
    Account,
    Pan,
}

/// A filled body as the vault would have sent it: literal text and secrets in whole-value
/// positions, in the shapes the template rules allow.
#[derive(Debug, Clone, Copy)]
enum Body {
    Json,
    Form,
    XmlElement,
    XmlAttribute,
    /// The header-only raw mode: the whole body is the value.
    Whole,
    BankJson,
    BankForm,
}

#[derive(Debug, Clone, Copy)]
enum Carrier {
    Raw,
    JsonString,
    FormValue,
    XmlText,
    /// XML text written by an encoder that also escapes quotes.
    XmlTextQuotesEscaped,
    PercentEncoded,
    /// A JSON string written by an encoder that escapes `<`, `>`, `&` as `\u003c` and so on.
    JsonStringHtmlSafe,
    Header,
}

struct Values {
    cvc: String,
    account: String,
}

impl Values {
    fn secret(&self, secret: Secret, masked: bool) -> String {
        match (secret, masked) {
            (Secret::Cvc, false) => self.cvc.clone(),
            (Secret::Cvc, true) => mask::CVC.to_owned(),
            (Secret::Account, false) => self.account.clone(),
            (Secret::Account, true) => mask::account_number(&self.account),
            (Secret::Pan, false) => PAN.to_owned(),
            (Secret::Pan, true) => mask::card_number(PAN),
        }
    }

    /// The body, with `amount` the CVC's or account number's digits where they are ordinary data.
    fn body(&self, body: Body, masked: bool) -> String {
        let cvc = self.secret(Secret::Cvc, masked);
        let pan = self.secret(Secret::Pan, masked);
        let account = self.secret(Secret::Account, masked);
        let amount = &self.cvc;
        let long_amount = &self.account;
        match body {
            Body::Json => format!(
                r#"{{"amount":{amount},"card":{{"number":"{pan}","cvc":"{cvc}"}},"items":[{amount},{{"qty": {amount}}}],"ref":"a{amount}b"}}"#
            ),
            Body::Form => {
                format!("amount={amount}.00&card[number]={pan}&card[cvc]={cvc}&ref=ch_{amount}x")
            }
            Body::XmlElement => format!(
                "<pay amount=\"{amount}.50\"><card><number>{pan}</number><cvc>{cvc}</cvc></card><qty>{amount}0</qty></pay>"
            ),
            Body::XmlAttribute => format!(
                "<card number='{pan}' cvc=\"{cvc}\" qty=\"x{amount}\"><amount>{amount}.00</amount></card>"
            ),
            Body::Whole => cvc,
            Body::BankJson => format!(
                r#"{{"account":"{account}","routing":"110000000","amount":{long_amount},"fee":{long_amount}.5}}"#
            ),
            Body::BankForm => {
                format!("amount={long_amount}.00&account={account}&memo=r{long_amount}")
            }
        }
    }
}

fn carry(text: &str, carrier: Carrier) -> String {
    match carrier {
        Carrier::Raw => text.to_owned(),
        Carrier::JsonString => {
            format!(r#"{{"received":{}}}"#, serde_json::to_string(text).unwrap())
        }
        Carrier::JsonStringHtmlSafe => {
            let escaped = serde_json::to_string(text)
                .unwrap()
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
                .replace('=', "\\u003d");
            format!(r#"{{"received":{escaped}}}"#)
        }
        Carrier::FormValue => {
            let value: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
            format!("status=ok&echo={value}&n=1")
        }
        Carrier::XmlText => format!(
            "<echo>{}</echo>",
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        Carrier::XmlTextQuotesEscaped => format!(
            "<echo>{}</echo>",
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;")
        ),
        Carrier::PercentEncoded => text
            .bytes()
            .map(|b| {
                // encodeURIComponent's unreserved set.
                if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
        // A header value: the text as is (the vault also masks a value that is exactly a secret).
        Carrier::Header => text.to_owned(),
    }
}

fn carried(text: String, carriers: &[Carrier]) -> String {
    carriers.iter().fold(text, |text, c| carry(&text, *c))
}

fn echoes(values: &Values) -> Vec<Echo<'_>> {
    vec![
        Echo {
            secret: PAN,
            mask: mask::card_number(PAN),
            kind: EchoKind::Number,
        },
        Echo {
            secret: &values.account,
            mask: mask::account_number(&values.account),
            kind: EchoKind::Code,
        },
        Echo {
            secret: &values.cvc,
            mask: mask::CVC.to_owned(),
            kind: EchoKind::Code,
        },
    ]
}

fn body_strategy() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::Json),
        Just(Body::Form),
        Just(Body::XmlElement),
        Just(Body::XmlAttribute),
        Just(Body::Whole),
        Just(Body::BankJson),
        Just(Body::BankForm),
    ]
}

fn carrier_strategy() -> impl Strategy<Value = Carrier> {
    prop_oneof![
        Just(Carrier::Raw),
        Just(Carrier::JsonString),
        Just(Carrier::JsonStringHtmlSafe),
        Just(Carrier::FormValue),
        Just(Carrier::XmlText),
        Just(Carrier::XmlTextQuotesEscaped),
        Just(Carrier::PercentEncoded),
        Just(Carrier::Header),
    ]
}

/// Digits that never occur in the PAN or the routing number, so a match is always ours.
fn digits(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just('2'), Just('3'), Just('5'), Just('7')], len)
        .prop_map(|d| d.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn echoes_never_come_back_however_they_are_carried(
        cvc in digits(3..=4),
        account in digits(4..=7),
        body in body_strategy(),
        carriers in proptest::collection::vec(carrier_strategy(), 0..=3),
    ) {
        prop_assume!(cvc != account);
        let values = Values { cvc, account };
        let echoed = carried(values.body(body, false), &carriers);
        let expected = carried(values.body(body, true), &carriers);
        let scrubbed = scrub_text(&echoed, &echoes(&values)).unwrap_or(echoed);
        prop_assert_eq!(scrubbed, expected);
    }
}

#[test]
fn every_carrier_three_deep_over_every_body() {
    let all = [
        Carrier::Raw,
        Carrier::JsonString,
        Carrier::JsonStringHtmlSafe,
        Carrier::FormValue,
        Carrier::XmlText,
        Carrier::XmlTextQuotesEscaped,
        Carrier::PercentEncoded,
        Carrier::Header,
    ];
    let bodies = [
        Body::Json,
        Body::Form,
        Body::XmlElement,
        Body::XmlAttribute,
        Body::Whole,
        Body::BankJson,
        Body::BankForm,
    ];
    let values = Values {
        cvc: "123".into(),
        account: "12345".into(),
    };
    for body in bodies {
        for a in all {
            for b in all {
                for c in all {
                    let carriers = [a, b, c];
                    let echoed = carried(values.body(body, false), &carriers);
                    let expected = carried(values.body(body, true), &carriers);
                    let scrubbed = scrub_text(&echoed, &echoes(&values)).unwrap_or(echoed);
                    assert_eq!(scrubbed, expected, "{body:?} in {carriers:?}");
                }
            }
        }
    }
}
