//! An example merchant checkout on the vault's card element (README, "Collect cards in the
//! browser"): `cargo run --release --bin checkout` serves http://127.0.0.1:4242, with
//! `API_KEY` and `PUB_KEY` the project's keys, `CARDVAULT_URL` the vault (default
//! http://localhost:8081), `PROCESSOR_URL` where payments go (default the processor stub's
//! https://localhost:9443/v1/charges) and `CHECKOUT_LISTEN` its own address. The project must
//! allow the checkout's origin: `cardvault project origins --project … http://127.0.0.1:4242`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardvault_testkit::checkout::{MerchantSite, Settings};

fn setting(name: &str, default: Option<&str>) -> String {
    match (std::env::var(name), default) {
        (Ok(value), _) => value,
        (Err(_), Some(default)) => default.to_owned(),
        (Err(_), None) => {
            eprintln!("checkout: set {name} (the project's keys: API_KEY and PUB_KEY)");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let vault_url = setting("CARDVAULT_URL", Some("http://localhost:8081"));
    let settings = Settings {
        vault_api_url: vault_url.clone(),
        vault_url,
        api_key: setting("API_KEY", None),
        pub_key: setting("PUB_KEY", None),
        processor_url: setting("PROCESSOR_URL", Some("https://localhost:9443/v1/charges")),
    };
    let listen = setting("CHECKOUT_LISTEN", Some("127.0.0.1:4242"));
    let site = MerchantSite::start(&listen, settings).await;
    println!("example checkout on {}", site.url("/"));
    let _ = tokio::signal::ctrl_c().await;
}
