//! Browser collection in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver): a shopper types a card into the vault's frames on a merchant page,
//! pays, and the processor stub gets the card while the merchant's page and server never see it.
//!
//! The merchant site runs on `http://127.0.0.1:PORT`, the vault on `http://localhost:PORT`: two
//! origins, as in production. These tests never skip: without Chromium they fail saying how to
//! install it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cardvault_testkit::checkout::{MerchantSite, Settings, WaxKeys};
use cardvault_testkit::process::{Process, wait_for_port};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TAB: char = '\u{E004}';
const ENTER: char = '\u{E007}';
const EXPIRY: &str = "1230";

/// A headless Chromium session; [`Browser::close`] ends it (dropping it kills the driver).
struct Browser {
    client: Client,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "the browser tests need Debian's {package} ({path}): apt-get install chromium chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Process::spawn(
            std::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            "chromedriver",
        );
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "chromedriver did not start"
        );
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps trying Google's hosts, which
        // this machine's closed network refuses.
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=800,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Runs `script` in the current document and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits up to 15 s for `script` to return `true`.
    async fn until(&self, script: &str) -> bool {
        for _ in 0..150 {
            if self.eval(script).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Types `text` into the input of the frame mounted in `container` (a CSS selector).
    async fn type_into(&self, container: &str, text: &str) {
        let frame = self
            .client
            .find(Locator::Css(&format!("{container} iframe")))
            .await
            .unwrap();
        frame.enter_frame().await.unwrap();
        let input = self.client.find(Locator::Css("input")).await.unwrap();
        input.send_keys(text).await.unwrap();
        self.client.enter_parent_frame().await.unwrap();
    }

    /// The text and `aria-invalid` of the frame in `container`, after blurring it.
    async fn frame_state(&self, container: &str) -> (String, Option<String>) {
        let frame = self
            .client
            .find(Locator::Css(&format!("{container} iframe")))
            .await
            .unwrap();
        frame.enter_frame().await.unwrap();
        self.eval("document.activeElement && document.activeElement.blur(); return true")
            .await;
        let input = self.client.find(Locator::Css("input")).await.unwrap();
        let invalid = input.attr("aria-invalid").await.unwrap();
        let text = self.eval("return document.body.innerText").await;
        self.client.enter_parent_frame().await.unwrap();
        (text.as_str().unwrap_or("").to_owned(), invalid)
    }

    /// Key presses sent to whatever has focus, as a keyboard would (across frames).
    async fn press(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".into());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(actions).await.unwrap();
    }
}

/// The vault, the processor stub and a merchant site allowed to embed the fields.
struct Shop {
    stub: Stub,
    vault: Vault,
    site: MerchantSite,
}

impl Shop {
    async fn open() -> Self {
        let stub = Stub::start().await;
        let vault = Vault::start(&stub).await;
        let vault_url = format!("http://localhost:{}", vault.addr.port());
        let site = MerchantSite::start(
            "127.0.0.1:0",
            Settings {
                vault_url: vault_url.clone(),
                vault_api_url: vault_url,
                api_key: vault.keys.api_key.clone(),
                pub_key: vault.keys.publishable_key.clone(),
                processor_url: stub.url("/v1/charges"),
            },
        )
        .await;
        allow_origin(&vault, &site.url(""));
        Self { stub, vault, site }
    }

    /// Opens the checkout and waits for the element to be ready.
    async fn checkout(&self, browser: &Browser) {
        browser.client.goto(&self.site.url("/")).await.unwrap();
        assert!(
            browser
                .until("return window.checkout && window.checkout.ready === true")
                .await,
            "the card element never became ready: {}",
            browser.eval("return JSON.stringify(window.checkout)").await
        );
    }
}

fn allow_origin(vault: &Vault, origin: &str) {
    let dir = vault.data_dir();
    let out = vault
        .cli()
        .args(["project", "origins", "--data-dir", dir.to_str().unwrap()])
        .args(["--project", &vault.keys.project_id, origin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Card data as the shopper typed it, in every form a leak could take.
fn card_data_in(text: &str) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = [VISA, "4242 4242 4242 4242", "4242-4242"]
        .into_iter()
        .filter(|secret| text.contains(secret))
        .collect();
    // Three digits appear by chance inside ids and timestamps: only a CVC standing alone counts.
    let alone = text.match_indices(CVC).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + CVC.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    });
    if alone {
        found.push(CVC);
    }
    found
}

#[tokio::test]
async fn a_card_typed_in_the_element_is_charged_and_the_merchant_never_sees_it() {
    let shop = Shop::open().await;
    let browser = Browser::start().await;
    shop.checkout(&browser).await;

    browser.type_into("#card-number", VISA).await;
    browser.type_into("#card-expiry", EXPIRY).await;
    browser.type_into("#card-cvv", CVC).await;
    save_screenshot(&browser).await;
    browser
        .client
        .find(Locator::Id("pay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        browser.until("return window.checkout.paid !== null").await,
        "no payment: {}",
        browser.eval("return JSON.stringify(window.checkout)").await
    );
    let status = browser
        .eval("return document.getElementById('status').innerText")
        .await;
    assert!(
        status
            .as_str()
            .unwrap()
            .contains("visa ending in 4242: ch_"),
        "{status}"
    );

    // The processor got the card, in full.
    let charge = shop.stub.last();
    let sent = charge.json();
    assert_eq!(sent["source"]["number"], VISA);
    assert_eq!(sent["source"]["cvc"], CVC);
    assert_eq!(sent["source"]["exp_month"], "12");

    // The merchant's page: its DOM, its script's state and every global it can read.
    let dom = browser
        .eval("return document.documentElement.outerHTML")
        .await;
    let globals = browser
        .eval(
            "const seen = [];
             for (const name of Object.getOwnPropertyNames(window)) {
               try { seen.push(name + '=' + JSON.stringify(window[name])); } catch (e) {}
             }
             return seen.join('\\n') + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)
               + document.cookie + location.href;",
        )
        .await;
    for (what, text) in [("DOM", dom.to_string()), ("globals", globals.to_string())] {
        assert!(
            card_data_in(&text).is_empty(),
            "card data in the page's {what}"
        );
    }
    assert!(
        globals.to_string().contains("checkout="),
        "the globals were not read"
    );
    // The merchant's server: every request it received, headers and bodies.
    let received = shop.site.received();
    assert!(received.iter().any(|r| r.path == "/api/pay"));
    for request in &received {
        let text = format!(
            "{} {}\n{}\n{}",
            request.method, request.path, request.headers, request.body
        );
        assert!(
            card_data_in(&text).is_empty(),
            "card data reached the merchant: {text}"
        );
    }
    browser.close().await;
}

/// Keeps a picture of the filled-in element: under `target/tmp/` always, and as the README's
/// `docs/img/card-element.png` when `CARDVAULT_UPDATE_SCREENSHOT=1`.
async fn save_screenshot(browser: &Browser) {
    let form = browser.client.find(Locator::Id("card")).await.unwrap();
    let png = form.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Cargo's scratch directory for integration tests: it exists wherever the target dir is.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("card-element.png");
    std::fs::write(&target, &png).unwrap();
    if std::env::var("CARDVAULT_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        std::fs::write(manifest.join("../../docs/img/card-element.png"), &png).unwrap();
    }
}

#[tokio::test]
async fn an_invalid_number_is_shown_inline_and_nothing_is_sent() {
    let shop = Shop::open().await;
    let browser = Browser::start().await;
    shop.checkout(&browser).await;

    browser.type_into("#card-number", "4242424242424241").await;
    let (text, invalid) = browser.frame_state("#card-number").await;
    assert_eq!(invalid.as_deref(), Some("true"));
    assert!(text.contains("invalid"), "{text}");
    browser.type_into("#card-expiry", EXPIRY).await;
    browser.type_into("#card-cvv", CVC).await;
    browser
        .client
        .find(Locator::Id("pay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        browser
            .until("return window.checkout.lastError !== null")
            .await
    );
    let error = browser.eval("return window.checkout.lastError").await;
    assert_eq!(error["errorCode"], "validation", "{error}");
    // Nothing reached the vault's tokenize route, nor the merchant's payment route.
    assert_eq!(shop.vault.token_count().await, 0);
    assert!(shop.site.received().iter().all(|r| r.path != "/api/pay"));
    // The change events the page got carried state, never digits.
    let changes = browser
        .eval("return JSON.stringify(window.checkout.changes)")
        .await;
    assert!(
        changes.as_str().unwrap().contains("\"complete\""),
        "{changes}"
    );
    assert!(
        card_data_in(changes.as_str().unwrap()).is_empty(),
        "{changes}"
    );
    browser.close().await;
}

#[tokio::test]
async fn the_whole_checkout_works_from_the_keyboard_alone() {
    let shop = Shop::open().await;
    let browser = Browser::start().await;
    shop.checkout(&browser).await;

    browser
        .client
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A person's pace: each Tab lands (focus moves into another frame's process) before the
    // next keys, and each field is complete before moving on.
    for (keys, field) in [
        (VISA, "cardNumber"),
        (EXPIRY, "expirationDate"),
        (CVC, "cvv"),
    ] {
        browser.press(&TAB.to_string()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.press(keys).await;
        let complete = format!(
            "return window.checkout.changes.some(c => c.elementType === '{field}' && c.complete)"
        );
        assert!(
            browser.until(&complete).await,
            "{field} was not completed from the keyboard"
        );
    }
    browser.press(&TAB.to_string()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.press(&ENTER.to_string()).await;
    assert!(
        browser.until("return window.checkout.paid !== null").await,
        "no payment from the keyboard: {}",
        browser.eval("return JSON.stringify(window.checkout)").await
    );
    assert_eq!(shop.stub.last().json()["source"]["number"], VISA);
    browser.close().await;
}

#[tokio::test]
async fn a_refused_wax_key_fails_the_payment_with_the_vaults_message() {
    let shop = Shop::open().await;
    let browser = Browser::start().await;
    for keys in [WaxKeys::ForAnotherCheckout, WaxKeys::Revoked] {
        shop.site.hand_out(keys);
        shop.checkout(&browser).await;
        browser.type_into("#card-number", VISA).await;
        browser.type_into("#card-expiry", EXPIRY).await;
        browser.type_into("#card-cvv", CVC).await;
        browser
            .client
            .find(Locator::Id("pay"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(
            browser
                .until("return window.checkout.lastError !== null")
                .await,
            "{keys:?}"
        );
        let error = browser.eval("return window.checkout.lastError").await;
        assert_eq!(error["errorCode"], "auth", "{keys:?}: {error}");
        assert_eq!(
            error["raw"], "Client session expired or not found",
            "{keys:?}: {error}"
        );
    }
    assert_eq!(shop.vault.token_count().await, 0);
    browser.close().await;
}

#[tokio::test]
async fn a_page_on_an_origin_not_in_the_list_cannot_frame_the_element() {
    let shop = Shop::open().await;
    // A second site on another origin, with the same keys: the vault does not list it.
    let rogue = MerchantSite::start(
        "127.0.0.1:0",
        Settings {
            vault_url: format!("http://localhost:{}", shop.vault.addr.port()),
            vault_api_url: shop.vault.url(""),
            api_key: shop.vault.keys.api_key.clone(),
            pub_key: shop.vault.keys.publishable_key.clone(),
            processor_url: shop.stub.url("/v1/charges"),
        },
    )
    .await;
    let browser = Browser::start().await;
    browser.client.goto(&rogue.url("/")).await.unwrap();
    assert!(
        browser
            .until("return window.checkout && window.checkout.loadError === true")
            .await
    );
    assert_eq!(
        browser.eval("return window.checkout.ready").await,
        json!(false)
    );

    // Even a page that claims to be the allowed origin is refused by the browser itself: the
    // frame's CSP frame-ancestors names only the allowed origins.
    let frame = format!(
        "http://localhost:{}/collect/v1/card-number.html?pk={}&origin={}&vault=rogue",
        shop.vault.addr.port(),
        shop.vault.keys.publishable_key,
        shop.site.url("")
    );
    let injected = format!(
        "const f = document.createElement('iframe'); f.id = 'lying'; f.src = {};
         document.body.appendChild(f); return true;",
        json!(frame)
    );
    browser.eval(&injected).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lying = browser.client.find(Locator::Id("lying")).await.unwrap();
    lying.enter_frame().await.unwrap();
    let inputs = browser
        .client
        .find_all(Locator::Css("input"))
        .await
        .unwrap();
    assert!(
        inputs.is_empty(),
        "the frame rendered on a page it does not allow"
    );
    browser.client.enter_parent_frame().await.unwrap();
    // The same frame on the allowed origin renders.
    shop.checkout(&browser).await;
    browser.close().await;
}
