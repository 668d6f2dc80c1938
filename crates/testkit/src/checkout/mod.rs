//! A tiny merchant site, as a merchant would build one on cardvault: a checkout page with the
//! vault's card element, a route that mints the wax key with the secret API key, and a route
//! that takes the token and charges it through `/proxy/transaction`. The `checkout` binary runs
//! it for people (README, quick start); the browser tests run it and read what it received, to
//! show that no card data ever reached it.
//!
//! Plain HTTP on loopback: it is an example and a test double, not a template for production.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("checkout.js");
const STYLE: &str = include_str!("checkout.css");

/// What the site needs to know about the vault and the processor.
#[derive(Clone)]
pub struct Settings {
    /// The vault's base URL as the browser reaches it (`http://localhost:8081`).
    pub vault_url: String,
    /// The vault's base URL as this server reaches it (often the same).
    pub vault_api_url: String,
    pub api_key: String,
    pub pub_key: String,
    /// Where `/api/pay` sends the charge (`https://localhost:9443/v1/charges`).
    pub processor_url: String,
}

/// How `/api/mint-wax` answers: as a merchant should, or with a key the vault must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaxKeys {
    /// A key for the checkout the page asked for.
    Minted,
    /// A key minted for another checkout (tokenization session id).
    ForAnotherCheckout,
    /// A key revoked right after minting.
    Revoked,
}

/// One request the site received: what a merchant's server would see and could log.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: String,
    pub body: String,
}

struct Site {
    settings: Settings,
    http: reqwest::Client,
    wax_keys: Mutex<WaxKeys>,
    received: Mutex<Vec<Received>>,
}

/// A running merchant site; it stops when dropped.
pub struct MerchantSite {
    pub addr: SocketAddr,
    site: Arc<Site>,
    task: AbortHandle,
}

impl Drop for MerchantSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MerchantSite {
    /// Serves on `listen` (`127.0.0.1:0` for any free port).
    pub async fn start(listen: &str, settings: Settings) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let site = Arc::new(Site {
            settings,
            http: reqwest::Client::new(),
            wax_keys: Mutex::new(WaxKeys::Minted),
            received: Mutex::new(Vec::new()),
        });
        let serving = site.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let site = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let site = site.clone();
                        async move { Ok::<_, std::convert::Infallible>(site.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            site,
            task: task.abort_handle(),
        }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.site.received.lock().unwrap().clone()
    }

    pub fn hand_out(&self, keys: WaxKeys) {
        *self.site.wax_keys.lock().unwrap() = keys;
    }
}

impl Site {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        self.received.lock().unwrap().push(Received {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/") => {
                let page = PAGE
                    .replace("{{VAULT_URL}}", &self.settings.vault_url)
                    .replace("{{PUB_KEY}}", &self.settings.pub_key)
                    .replace("{{SDK_INTEGRITY}}", &sdk_integrity());
                respond(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            (&Method::GET, "/checkout.js") => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
            }
            (&Method::GET, "/checkout.css") => {
                respond(StatusCode::OK, "text/css; charset=utf-8", STYLE)
            }
            (&Method::POST, "/api/mint-wax") => self.mint_wax(&json_body()).await,
            (&Method::POST, "/api/pay") => self.pay(&json_body()).await,
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
        }
    }

    /// Mints a wax key for the page's checkout with the secret API key (which never leaves
    /// this server).
    async fn mint_wax(&self, request: &Value) -> Response<Full<Bytes>> {
        let Some(session) = request["tokenizationSessionId"].as_str() else {
            return respond_json(StatusCode::BAD_REQUEST, &json!({"error": "no session id"}));
        };
        let mode = *self.wax_keys.lock().unwrap();
        let minted_for = match mode {
            WaxKeys::ForAnotherCheckout => format!("{session}-other"),
            WaxKeys::Minted | WaxKeys::Revoked => session.to_owned(),
        };
        let minted = self
            .vault_call(
                Method::POST,
                "/collect/sessions",
                Some(json!({"tokenization_session_id": minted_for, "max_tokenize_calls": 3})),
            )
            .await;
        if mode == WaxKeys::Revoked {
            self.vault_call(
                Method::DELETE,
                &format!("/collect/sessions/{minted_for}"),
                None,
            )
            .await;
        }
        match minted["wax_key"].as_str() {
            Some(key) => respond_json(StatusCode::OK, &json!({"waxKey": key})),
            None => respond_json(StatusCode::BAD_GATEWAY, &minted),
        }
    }

    /// Charges the token through the vault's proxy; the processor gets the card, this server
    /// only the processor's answer.
    async fn pay(&self, request: &Value) -> Response<Full<Bytes>> {
        let charge = json!({
            "token": request["token"],
            "cvc_session_id": request["cvcSession"],
            "proxy_url": self.settings.processor_url,
            "request_data": {
                "amount": 2000, "currency": "usd",
                "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}",
                           "exp_year": "${expirationYear}", "cvc": "${cvv}"}
            },
            "http_headers": {"Authorization": "Bearer sk_test_example"}
        });
        let answer = self
            .vault_call(Method::POST, "/proxy/transaction", Some(charge))
            .await;
        let processor = &answer["proxy_response"];
        let ok = processor["status_code"] == 200;
        respond_json(
            StatusCode::OK,
            &json!({
                "ok": ok,
                "charge": processor["body"]["id"],
                "message": answer["message"],
            }),
        )
    }

    async fn vault_call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.settings.vault_api_url);
        let mut call = self
            .http
            .request(method, url)
            .header("X-API-Key", &self.settings.api_key);
        if let Some(body) = body {
            call = call.json(&body);
        }
        match call.send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(e) => json!({"message": format!("the vault did not answer: {e}")}),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn respond_json(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

/// The SDK as this repository holds it, which the vault serves byte for byte.
const SDK: &[u8] = include_bytes!("../../../server/assets/collect/v1/cardvault.js");

/// The Subresource Integrity value of the SDK (`sha384-…`), as a merchant page pins it.
pub fn sdk_integrity() -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, SDK);
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}
