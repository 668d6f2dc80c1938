//! Micro-benchmarks of the pure hot path: validation, rendering per format, scrubbing.
//! `cargo bench -p cardvault-core`; CI runs them once in test mode to keep them compiling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use cardvault_core::card::{Expiry, Pan};
use cardvault_core::date::YearMonth;
use cardvault_core::scrub::{Echo, EchoKind, scrub_text};
use cardvault_core::secret::SecretString;
use cardvault_core::template::{
    Encoding, FormTemplate, JsonTemplate, Placeholder, Substitutions, Template,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

fn values() -> Substitutions {
    let mut v = Substitutions::default();
    for (p, s) in [
        (Placeholder::CardNumber, "4242424242424242"),
        (Placeholder::ExpirationMonth, "07"),
        (Placeholder::ExpirationYear, "2031"),
        (Placeholder::ExpirationYear2, "31"),
        (Placeholder::Cvc, "123"),
        (Placeholder::FirstName, "Jane & Sons"),
    ] {
        v.set(p, SecretString::new(s.to_owned()));
    }
    v
}

fn stripe_body() -> Value {
    json!({"amount": 2000, "currency": "usd", "capture": true,
           "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}", "exp_year": "${expirationYear}", "cvc": "${cvv}"},
           "metadata": {"order_id": "A-1001"}})
}

/// A ~4 KB JSON body: the card block plus a realistic order.
fn json_4k() -> Value {
    let items: Vec<Value> = (0..30)
        .map(|i| json!({"sku": format!("SKU-{i:05}"), "name": "Widget deluxe edition", "quantity": i % 5 + 1, "price": "19.99"}))
        .collect();
    json!({"payment": stripe_body(), "customer": {"name": "${firstName}", "email": "jane@example.com"}, "items": items})
}

/// A ~16 KB SOAP envelope with the card in the middle.
fn soap_16k() -> String {
    let filler: String = (0..150)
        .map(|i| {
            format!("<Line n=\"{i}\"><Sku>SKU-{i:05}</Sku><Qty>1</Qty><Price>19.99</Price></Line>")
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><Pay>\
         <Card><Number>${{cardNumber}}</Number><Exp>${{expirationMonth}}/${{expirationYear2}}</Exp><Cvv>${{cvv}}</Cvv>\
         <Holder>${{firstName}}</Holder></Card><Order>{filler}</Order></Pay></soap:Body></soap:Envelope>"
    )
}

fn validation(c: &mut Criterion) {
    let today = YearMonth {
        year: 2026,
        month: 11,
    };
    c.bench_function("validate/card_number", |b| {
        b.iter(|| Pan::parse(black_box("4242 4242 4242 4242")).unwrap())
    });
    c.bench_function("validate/expiry", |b| {
        b.iter(|| Expiry::parse(black_box("7"), black_box("2031"), today).unwrap())
    });
}

fn rendering(c: &mut Criterion) {
    let v = values();
    let stripe = stripe_body();
    // Read from the request's text, as the proxy reads `request_data`.
    let stripe_text = stripe.to_string();
    let mut group = c.benchmark_group("render");
    group.bench_function("json_stripe_small", |b| {
        b.iter(|| {
            JsonTemplate::read(black_box(&stripe_text))
                .unwrap()
                .render_bytes(&v)
                .unwrap()
        })
    });
    let big = json_4k();
    let big_text = big.to_string();
    group.throughput(Throughput::Bytes(big_text.len() as u64));
    group.bench_function("json_4k", |b| {
        b.iter(|| {
            JsonTemplate::read(black_box(&big_text))
                .unwrap()
                .render_bytes(&v)
                .unwrap()
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("form_stripe_small", |b| {
        b.iter(|| {
            FormTemplate::from_json(black_box(&stripe))
                .unwrap()
                .render(&v)
        })
    });
    let soap = soap_16k();
    group.throughput(Throughput::Bytes(soap.len() as u64));
    group.bench_function("xml_soap_16k", |b| {
        b.iter(|| {
            let t = Template::parse(black_box(&soap)).unwrap();
            let out = t.render(&v, Encoding::Xml);
            assert!(cardvault_core::xml::is_well_formed(&out));
            out
        })
    });
    group.finish();
}

fn scrubbing(c: &mut Criterion) {
    let body = soap_16k()
        .replace("${cardNumber}", "4242 4242 4242 4242")
        .replace("${cvv}", "123");
    let echoes = [
        Echo {
            secret: "4242424242424242",
            mask: "424242******4242".into(),
            kind: EchoKind::Number,
        },
        Echo {
            secret: "123",
            mask: "***".into(),
            kind: EchoKind::Code,
        },
    ];
    let mut group = c.benchmark_group("scrub");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("16k_with_echo", |b| {
        b.iter(|| scrub_text(black_box(&body), &echoes))
    });
    let clean = soap_16k();
    group.bench_function("16k_clean", |b| {
        b.iter(|| scrub_text(black_box(&clean), &echoes))
    });
    group.finish();
}

criterion_group!(benches, validation, rendering, scrubbing);
criterion_main!(benches);
