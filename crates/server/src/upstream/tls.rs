//! TLS settings for processor connections: system roots plus operator-supplied ones, TLS 1.2 as
//! the floor, HTTP/2 offered by ALPN, and per-project profiles (extra roots, a client
//! certificate for processors that require mutual TLS).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::UpstreamError;

/// A project's TLS settings for one processor host.
pub struct TlsProfile {
    /// Identifies the profile and its version: a changed profile gets a new client and pool.
    pub cache_key: String,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for TlsProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProfile")
            .field("cache_key", &self.cache_key)
            .finish_non_exhaustive()
    }
}

/// The system's roots plus those in `extra_ca_file`.
pub(super) fn roots(extra_ca_file: Option<&Path>) -> Result<rustls::RootCertStore, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| UpstreamError::Setup(format!("cannot read {}: {e}", path.display())))?;
        add_pem_roots(&mut roots, &pem)
            .map_err(|e| UpstreamError::Setup(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Parses PEM certificates into `roots`; fails if there is none or one is unusable.
pub fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &str) -> Result<(), String> {
    let certs = certificates(pem)?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate: {e}"))?;
    }
    Ok(())
}

// PEM is read line by line as a stream (`pem_reader_iter`, not `pem_slice_iter`): that is how
// rustls-pemfile read it, so the same text is accepted and refused with the same messages.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_reader_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate: {}", pem_error_text(e)))?;
    if certs.is_empty() {
        return Err("no certificate found".to_owned());
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in `pem`. Its errors say nothing more: the
/// parser's could quote a line of the key.
fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_reader(pem.as_bytes()) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err("no private key found".to_owned()),
        Err(_) => Err("unreadable private key".to_owned()),
    }
}

/// A malformed certificate PEM, in the words rustls-pemfile used (a section's marker line is
/// quoted as text, not as bytes).
fn pem_error_text(error: pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "section end {:?} missing",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "illegal section start: {:?}",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(reason) => reason,
        pem::Error::Io(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

/// Checks a client certificate chain and key can be used together (at configuration time).
pub fn check_client_identity(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let roots = rustls::RootCertStore::empty();
    client_config_with(&roots, None, Some((cert_pem, key_pem))).map(drop)
}

pub(super) fn client_config(
    base_roots: &rustls::RootCertStore,
    profile: Option<&TlsProfile>,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let extra_roots = profile.and_then(|p| p.ca_pem.as_deref());
    let identity = profile.and_then(|p| match (&p.client_cert_pem, &p.client_key_pem) {
        (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
        _ => None,
    });
    client_config_with(base_roots, extra_roots, identity).map_err(UpstreamError::Setup)
}

fn client_config_with(
    base_roots: &rustls::RootCertStore,
    extra_roots: Option<&str>,
    identity: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = base_roots.clone();
    if let Some(pem) = extra_roots {
        add_pem_roots(&mut roots, pem)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = certificates(cert_pem)?;
            let key = private_key(key_pem)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key do not work together: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["client.test".to_owned()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    #[test]
    fn reads_certificate_chains_and_their_key() {
        let (cert, key) = identity();
        assert_eq!(certificates(&format!("{cert}{cert}")).unwrap().len(), 2);
        let mut roots = rustls::RootCertStore::empty();
        assert_eq!(add_pem_roots(&mut roots, &cert), Ok(()));
        assert_eq!(roots.len(), 1);
        assert_eq!(check_client_identity(&cert, &key), Ok(()));
    }

    #[test]
    fn malformed_certificates_are_refused_with_the_same_words_as_before() {
        // The messages rustls-pemfile 2.2 gave for these inputs.
        for (pem, error) in [
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n",
                "bad certificate: section end \"CERTIFICATE\" missing",
            ),
            (
                "-----BEGIN CERTIFICATE----\n",
                "bad certificate: illegal section start: \"-----BEGIN CERTIFICATE----\\n\"",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
                "bad certificate: InvalidCharacter(37)",
            ),
            ("", "no certificate found"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no certificate found",
            ),
        ] {
            assert_eq!(certificates(pem).unwrap_err(), error, "{pem:?}");
        }
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let (cert, key) = identity();
        let truncated = key.replace("-----END PRIVATE KEY-----", "");
        let garbled = key.replacen("\n", "\n%", 1);
        for bad in [truncated, garbled] {
            assert_eq!(
                check_client_identity(&cert, &bad),
                Err("unreadable private key".to_owned())
            );
        }
        assert_eq!(
            check_client_identity(&cert, &cert),
            Err("no private key found".to_owned())
        );
    }
}
