//! Micro-benchmarks of the vault's cryptography: sealing and opening a token, hashing an API key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use cardvault_core::card::{Expiry, Pan};
use cardvault_server::crypto::{Keyring, MasterKey};
use cardvault_server::tokens::{Holder, TokenData};
use criterion::{Criterion, criterion_group, criterion_main};

fn crypto(c: &mut Criterion) {
    let master = MasterKey::generate().unwrap();
    let keyring =
        Keyring::new(&master, &[Keyring::wrap_new_data_key(&master, 1).unwrap()]).unwrap();
    let data = TokenData::Card {
        pan: Pan::parse("4242424242424242").unwrap(),
        expiry: Expiry::from_stored("07".into(), "2031".into()),
        holder: Holder {
            first_name: Some("Jane".into()),
            last_name: None,
        },
    };
    c.bench_function("token/seal", |b| {
        b.iter(|| {
            data.seal(&keyring, black_box("proj_1"), black_box("tok_1"))
                .unwrap()
        })
    });
    let sealed = data.seal(&keyring, "proj_1", "tok_1").unwrap();
    c.bench_function("token/open", |b| {
        b.iter(|| TokenData::open(&keyring, black_box(&sealed), "proj_1", "tok_1").unwrap())
    });
    c.bench_function("token/open_and_substitutions", |b| {
        b.iter(|| {
            TokenData::open(&keyring, black_box(&sealed), "proj_1", "tok_1")
                .unwrap()
                .substitutions()
        })
    });
    let key =
        "key_default_test_pvt_2b334553d62bf195a524caa5b67c2eb78ec724a5c5c0db0c29dd2a05b83c81c7";
    c.bench_function("api_key/hash", |b| {
        b.iter(|| keyring.key_hash(black_box(key)))
    });
    c.bench_function("fingerprint", |b| {
        b.iter(|| keyring.fingerprint("proj_1", black_box(b"4242424242424242")))
    });
}

criterion_group!(benches, crypto);
criterion_main!(benches);
