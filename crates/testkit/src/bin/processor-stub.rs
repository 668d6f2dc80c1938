//! A local HTTPS payment-processor stub, for trying the proxy by hand (README, "Quick start").
//!
//! `cargo run --release --bin processor-stub` listens on https://localhost:9443
//! (override with `STUB_LISTEN`), writes its CA certificate to `./processor-stub-ca.pem` once it
//! is listening, and prints every request it receives, so you can see exactly what a processor
//! would get. It is a test double: it prints the card data it receives, as a processor would
//! see it. The stub itself is `cardvault-testkit`'s, the one the black-box tests run against.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cardvault_testkit::Stub;
use tokio::signal::unix::{SignalKind, signal};

const CA_FILE: &str = "processor-stub-ca.pem";

#[tokio::main]
async fn main() {
    let listen = std::env::var("STUB_LISTEN").unwrap_or_else(|_| "127.0.0.1:9443".to_owned());
    let stub = Stub::start_on(&listen).await;
    // Written whole under a temporary name and renamed: whoever waits for the file (the
    // README's walkthrough does) never reads half a certificate, nor one before the stub listens.
    let partial = format!("{CA_FILE}.partial");
    std::fs::copy(&stub.ca_file, &partial).expect("write the CA certificate");
    std::fs::rename(&partial, CA_FILE).expect("write ./processor-stub-ca.pem");
    println!("processor stub on {}", stub.url(""));
    println!(
        "routes: /charge /decline /v1/charges /echo /echo-in-json /echo-in-header /slow?ms=N /text /big?bytes=N /redirect?to=URL"
    );
    println!("CA certificate: ./{CA_FILE} (give it to CARDVAULT_UPSTREAM_CA_FILE)");
    let mut terminate = signal(SignalKind::terminate()).expect("listen for SIGTERM");
    let mut printed = 0;
    loop {
        let stopping = tokio::select! {
            _ = tokio::signal::ctrl_c() => true,
            _ = terminate.recv() => true,
            () = tokio::time::sleep(Duration::from_millis(200)) => false,
        };
        let requests = stub.requests();
        for r in requests.iter().skip(printed) {
            println!("\n--> {} {}", r.method, r.path);
            for (name, value) in &r.headers {
                println!("{name}: {value}");
            }
            println!("\n{}", String::from_utf8_lossy(&r.body));
        }
        printed = requests.len();
        if stopping {
            break;
        }
    }
}
