//! A local HTTPS payment-processor stub with a generated certificate authority.
//!
//! Routes: `/charge` (200 JSON), `/decline` (402 JSON), `/echo` (answers with the request body
//! and content type), `/echo-in-json` (the request body as a JSON string value), `/echo-in-header`
//! (the request body in an `x-echo` header), `/slow?ms=N` (answers after N ms), `/text` (plain text), `/big?bytes=N`,
//! `/redirect?to=URL` (302). Every request is recorded.
//!
//! Used by the black-box tests and by `cargo run -p cardvault-server --example processor-stub`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request as the processor saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("stub received JSON")
    }
}

pub struct Stub {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(listen: &str) -> Self {
        Self::start_inner(listen, None).await
    }

    /// A stub that refuses any client without a certificate from its own client CA; returns
    /// that CA's client certificate and key (PEM) for the vault to present.
    pub async fn start_mutual_tls() -> (Self, String, String) {
        let client_ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "acquirer client CA");
        let client_ca = CertifiedIssuer::self_signed(params, client_ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "merchant 42");
        let client_cert = client_params.signed_by(&client_key, &client_ca).unwrap();
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(client_ca.der().to_vec()))
            .unwrap();
        let stub = Self::start_inner("127.0.0.1:0", Some(roots)).await;
        (stub, client_cert.pem(), client_key.serialize_pem())
    }

    async fn start_inner(
        listen: &str,
        client_roots: Option<tokio_rustls::rustls::RootCertStore>,
    ) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cardvault test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("stub-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier =
                    tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(listener, acceptor, recorded.clone()));
        Self {
            addr,
            ca_file,
            recorded,
            _dir: dir,
            task,
        }
    }

    /// `https://localhost:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the stub received a request")
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(path))
            .count()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let recorded = recorded.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(req, recorded.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let content_type = req.headers().get("content-type").cloned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    recorded.lock().unwrap().push(Recorded {
        method,
        path: path.clone(),
        headers,
        body: body.clone(),
    });

    let json = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-stub", "yes")
            .header("set-cookie", "session=secret")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let response = match path.split('?').next().unwrap_or("") {
        "/charge" => json(
            200,
            r#"{"id":"ch_123","object":"charge","status":"succeeded"}"#,
        ),
        "/decline" => json(402, r#"{"error":{"code":"card_declined"}}"#),
        "/echo" => {
            let mut builder = Response::builder().status(200);
            if let Some(ct) = content_type {
                builder = builder.header("content-type", ct);
            }
            builder.body(Full::new(Bytes::from(body))).unwrap()
        }
        "/echo-in-json" => {
            let text = String::from_utf8_lossy(&body);
            json(200, &serde_json::json!({"received": text}).to_string())
        }
        "/echo-in-header" => {
            let mut builder = Response::builder().status(200);
            if let Ok(value) = hyper::header::HeaderValue::from_bytes(&body) {
                builder = builder.header("x-echo", value);
            }
            builder.body(Full::new(Bytes::from_static(b"ok"))).unwrap()
        }
        "/slow" => {
            let ms = path
                .split("ms=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(200, r#"{"slow":true}"#)
        }
        "/big" => {
            let size: usize = query_param(&path, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024);
            Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(vec![b'x'; size])))
                .unwrap()
        }
        "/text" => Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"plain ok")))
            .unwrap(),
        "/redirect" => Response::builder()
            .status(302)
            .header(
                "location",
                query_param(&path, "to")
                    .unwrap_or_else(|| "http://127.0.0.1:9/internal".to_owned()),
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => json(404, r#"{"error":"no such route"}"#),
    };
    Ok(response)
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
