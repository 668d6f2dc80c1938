//! A lean HTTPS processor stub for load: keep-alive, HTTP/1.1 and HTTP/2, a fixed small JSON
//! answer after a configurable delay, nothing recorded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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

const ANSWER: &[u8] = br#"{"id":"ch_3PqK2xLkdIwHu7ix0abc","object":"charge","amount":2000,"currency":"usd","status":"succeeded","paid":true}"#;

pub struct Stub {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Stub {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

/// Starts the stub on its own single-threaded runtime (its own OS thread), so its work does not
/// share a runtime with the load generator.
pub fn start(delay: Duration) -> Stub {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("stub runtime");
        runtime.block_on(async move {
            let (stub, acceptor, listener) = bind().await;
            tx.send(stub).expect("report the stub");
            serve(listener, acceptor, delay).await;
        });
    });
    rx.recv().expect("the stub started")
}

async fn bind() -> (Stub, TlsAcceptor, TcpListener) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A CA name distinct from the leaf's, or OpenSSL (nginx) takes the leaf for self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cardvault bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("stub-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (
        Stub {
            addr,
            ca_file,
            _dir: dir,
        },
        TlsAcceptor::from(Arc::new(config)),
        listener,
    )
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, delay: Duration) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| answer(req, delay));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(ANSWER)))
        .unwrap_or_default())
}
