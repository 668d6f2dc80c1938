//! A local HTTPS payment-processor stub, for trying the proxy by hand (README, "Proxy modes").
//!
//! `cargo run -p cardvault-server --example processor-stub` listens on https://localhost:9443
//! (override with `STUB_LISTEN`), writes its CA certificate to `./processor-stub-ca.pem`, and
//! prints every request it receives, so you can see exactly what a processor would get.
//! It is a test double: it prints the card data it receives, as a processor would see it.
//! The stub itself is `cardvault-testkit`'s, the one the black-box tests run against.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cardvault_testkit::Stub;

#[tokio::main]
async fn main() {
    let listen = std::env::var("STUB_LISTEN").unwrap_or_else(|_| "127.0.0.1:9443".to_owned());
    let stub = Stub::start_on(&listen).await;
    std::fs::copy(&stub.ca_file, "processor-stub-ca.pem").expect("write ./processor-stub-ca.pem");
    println!("processor stub on {}", stub.url(""));
    println!(
        "routes: /charge /decline /v1/charges /echo /echo-in-json /echo-in-header /slow?ms=N /text /big?bytes=N /redirect?to=URL"
    );
    println!("CA certificate: ./processor-stub-ca.pem (give it to CARDVAULT_UPSTREAM_CA_FILE)");
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let requests = stub.requests();
        for r in &requests[seen..] {
            println!("\n--> {} {}", r.method, r.path);
            for (name, value) in &r.headers {
                println!("{name}: {value}");
            }
            println!("\n{}", String::from_utf8_lossy(&r.body));
        }
        seen = requests.len();
    }
}
