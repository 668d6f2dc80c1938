//! HTTPS for the API itself: the certificate and key come from PEM files and are reloaded, without
//! a restart, when the files change or on SIGHUP. A reload that fails keeps the certificate in
//! use and logs why, so a renewal written half-way (certificate first, key a moment later) or a
//! typo in a path never takes the vault off the air.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a change (two `stat`s).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The certificate chain and private key files `serve` speaks HTTPS with.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate could not be loaded; names the file and never quotes a key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CertificateError {
    path: String,
    reason: String,
}

impl CertificateError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// The TLS side of the listener: an acceptor whose certificate can be swapped while it serves.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCertificate>,
    files: CertificateFiles,
    provider: Arc<CryptoProvider>,
    /// The files as they were when loaded at start: a change made before the watch first looks
    /// is still a change.
    loaded: FilesStamp,
}

impl ServerTls {
    /// Loads the files (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 offered by ALPN).
    ///
    /// # Errors
    /// [`CertificateError`] naming the file that is missing, unreadable or unusable, or saying
    /// that the key does not belong to the certificate.
    pub fn load(files: CertificateFiles) -> Result<Self, CertificateError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = FilesStamp::read(&files);
        let certified = load_certified_key(&files, &provider)?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CertificateError::new(&files.cert, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files,
            provider,
            loaded,
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the files again; on success new handshakes use the new certificate, on failure the
    /// old one stays.
    ///
    /// # Errors
    /// As [`ServerTls::load`].
    pub fn reload(&self) -> Result<(), CertificateError> {
        let certified = load_certified_key(&self.files, &self.provider)?;
        self.current.replace(certified);
        Ok(())
    }

    /// Reloads whenever either file changes (checked every second) and on SIGHUP, until the
    /// process ends.
    pub fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut seen = self.loaded.clone();
            loop {
                let forced = tokio::select! {
                    () = tokio::time::sleep(WATCH_INTERVAL) => false,
                    () = next_hangup(&mut hangup) => true,
                };
                let now = FilesStamp::read(&self.files);
                if !forced && now == seen {
                    continue;
                }
                // Stamped before reading: a write that lands during the reload changes the stamp
                // again, so it is picked up on the next look.
                seen = now;
                let why = if forced {
                    "SIGHUP"
                } else {
                    "the files changed"
                };
                match self.reload() {
                    Ok(()) => tracing::info!(reason = why, "TLS certificate reloaded"),
                    Err(e) => tracing::warn!(
                        reason = why,
                        error = %e,
                        "TLS certificate not reloaded: still serving the previous one"
                    ),
                }
            }
        });
    }
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl CurrentCertificate {
    fn replace(&self, certified: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn load_certified_key(
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertificateError> {
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CertificateError::new(&files.cert, "not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(CertificateError::new(&files.cert, "no certificate found"));
    }
    let key_pem = zeroize::Zeroizing::new(read(&files.key)?);
    // The parser's own errors could quote a line of the key, so they are not passed on.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| CertificateError::new(&files.key, "no usable PEM private key found"))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertificateError::new(&files.key, "unsupported private key"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        CertificateError::new(
            &files.key,
            format!(
                "this key does not belong to the certificate in {}",
                files.cert.display()
            ),
        )
    })?;
    Ok(certified)
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|e| CertificateError::new(path, e.to_string()))
}

/// What identifies the files' contents without reading them: replaced (renamed over) or
/// rewritten files both change it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilesStamp([Option<FileStamp>; 2]);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FilesStamp {
    fn read(files: &CertificateFiles) -> Self {
        Self([FileStamp::read(&files.cert), FileStamp::read(&files.key)])
    }
}

impl FileStamp {
    fn read(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

type Hangup = Option<tokio::signal::unix::Signal>;

fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: certificates reload on file changes only");
            None
        }
    }
}

async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
