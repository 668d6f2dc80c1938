//! A local HTTPS payment-processor stub with a certificate authority of its own.
//!
//! It serves HTTP/1.1 and HTTP/2 (ALPN) over TLS with keep-alive, through the routes in
//! [`routes`], and runs in one of two ways:
//!
//! - **recording** ([`Stub::start`], [`Stub::start_on`], [`Stub::start_mutual_tls`],
//!   [`Stub::start_http1_only`]): on the caller's tokio runtime; every request is kept so a test
//!   can see exactly what the processor received. For the black-box tests and the
//!   `processor-stub` example.
//! - **lean** ([`Stub::start_lean`]): on a thread and a single-threaded runtime of its own, so its
//!   work never shares a runtime with a load generator; records nothing (no lock, no copy per
//!   request) and answers `/v1/charges` after a fixed delay. For the load benchmark.
//!
//! The stub stops when it is dropped.

mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ServerConfig, crypto};

use crate::certs::{Authority, ServerIdentity};

/// One request as the processor saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The path with its query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    fn new(parts: &hyper::http::request::Parts, body: &[u8]) -> Self {
        Self {
            method: parts.method.to_string(),
            version: format!("{:?}", parts.version),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("stub received JSON")
    }
}

/// A running stub. Invariant: `ca_file` holds the PEM of the authority that signed the stub's
/// certificate (valid for `localhost` and `127.0.0.1`) for as long as the stub lives.
pub struct Stub {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    /// `None` for a lean stub.
    recorded: Option<Arc<Mutex<Vec<Recorded>>>>,
    connections: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    task: AbortHandle,
}

impl Drop for Stub {
    fn drop(&mut self) {
        // Also ends a lean stub's thread: it runs until this task ends.
        self.task.abort();
    }
}

impl Stub {
    /// A recording stub on `127.0.0.1`, any free port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// A recording stub on `listen` (`HOST:PORT`).
    pub async fn start_on(listen: &str) -> Self {
        Self::start_with(Options::recording(listen)).await.0
    }

    /// A recording stub that refuses any client without a certificate from its own client CA;
    /// returns that CA's client certificate and key (PEM) for the vault to present.
    pub async fn start_mutual_tls() -> (Self, String, String) {
        let client_ca = Authority::new("acquirer client CA");
        let client = client_ca.client_identity("merchant 42");
        let mut roots = RootCertStore::empty();
        roots.add(client_ca.der()).unwrap();
        let mut options = Options::recording("127.0.0.1:0");
        options.client_roots = Some(roots);
        let (stub, _) = Self::start_with(options).await;
        (stub, client.cert_pem, client.key_pem)
    }

    /// A recording stub that offers only HTTP/1.1 by ALPN, as some processors do.
    pub async fn start_http1_only() -> Self {
        let mut options = Options::recording("127.0.0.1:0");
        options.http2 = false;
        Self::start_with(options).await.0
    }

    /// A lean stub for load on `127.0.0.1`, any free port: its own thread and single-threaded
    /// runtime, nothing recorded, `/v1/charges` answered after `charge_delay`.
    pub fn start_lean(charge_delay: Duration) -> Self {
        let options = Options {
            listen: "127.0.0.1:0".to_owned(),
            client_roots: None,
            record: false,
            charge_delay,
            http2: true,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            runtime.block_on(async move {
                let (stub, task) = Self::start_with(options).await;
                tx.send(stub).expect("report the stub");
                // This runtime serves until the stub is dropped, which aborts the task.
                let _ = task.await;
            });
        });
        rx.recv().expect("the stub started")
    }

    /// Starts serving on the current runtime; the task ends when the stub is dropped.
    async fn start_with(options: Options) -> (Self, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("cardvault test CA");
        let ca_file = dir.path().join("stub-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let acceptor = tls_acceptor(ca.server_identity(), options.client_roots, options.http2);

        let listener = TcpListener::bind(&options.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = options.record.then(|| Arc::new(Mutex::new(Vec::new())));
        let behaviour = Arc::new(Behaviour {
            recorded: recorded.clone(),
            charge_delay: options.charge_delay,
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            behaviour,
            connections.clone(),
        ));
        let stub = Self {
            addr,
            ca_file,
            recorded,
            connections,
            _dir: dir,
            task: task.abort_handle(),
        };
        (stub, task)
    }

    /// `https://localhost:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Every request received so far, oldest first (always empty for a lean stub).
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The latest request; panics if there is none.
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the stub received a request")
    }

    /// How many TLS connections the stub has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many requests had a path (with query) starting with `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(path))
            .count()
    }
}

/// How a stub is started.
struct Options {
    listen: String,
    /// Client certificates must chain to one of these, when set.
    client_roots: Option<RootCertStore>,
    record: bool,
    charge_delay: Duration,
    /// Offers `h2` by ALPN (else HTTP/1.1 only).
    http2: bool,
}

impl Options {
    fn recording(listen: &str) -> Self {
        Self {
            listen: listen.to_owned(),
            client_roots: None,
            record: true,
            charge_delay: Duration::ZERO,
            http2: true,
        }
    }
}

/// What every request handler shares.
struct Behaviour {
    recorded: Option<Arc<Mutex<Vec<Recorded>>>>,
    charge_delay: Duration,
}

fn tls_acceptor(
    identity: ServerIdentity,
    client_roots: Option<RootCertStore>,
    http2: bool,
) -> TlsAcceptor {
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
        ),
    };
    let mut config = builder
        .with_single_cert(identity.chain, identity.key)
        .unwrap();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    TlsAcceptor::from(Arc::new(config))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    behaviour: Arc<Behaviour>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        // Small answers go out at once instead of waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let behaviour = behaviour.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            connections.fetch_add(1, Ordering::Relaxed);
            let service = hyper::service::service_fn(move |req| handle(req, behaviour.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    behaviour: Arc<Behaviour>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(recorded) = &behaviour.recorded {
        recorded.lock().unwrap().push(Recorded::new(&parts, &body));
    }
    Ok(routes::answer(&parts, body, behaviour.charge_delay).await)
}

/// `body` in the content coding `coding` (`gzip`, `deflate` or `br`; unchanged for any other):
/// what a processor that compresses its answers sends.
pub fn compressed(coding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            e.write_all(body).unwrap();
            e.into_inner()
        }
        _ => body.to_vec(),
    }
}

#[cfg(test)]
mod tests;
