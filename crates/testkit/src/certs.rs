//! Certificates made for one run: a certificate authority, a server certificate for the stub,
//! client identities for mutual TLS. Nothing is reused between runs, so no test depends on a
//! checked-in key or on a certificate that expires.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names every stub certificate is valid for: the stub's URLs use `localhost`, and
/// `127.0.0.1` lets a client that dials the address verify it too.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A self-signed certificate authority.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new authority named `common_name`.
    ///
    /// The name must differ from its certificates' subjects, or OpenSSL (nginx, in the benchmark)
    /// takes a leaf signed by it for a self-signed certificate.
    pub fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The authority's certificate, PEM (what a client is told to trust).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The authority's certificate, DER (for a rustls root store).
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and `127.0.0.1`, signed by this authority.
    pub fn server_identity(&self) -> ServerIdentity {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        ServerIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` with its key, PEM: what the vault's
    /// own HTTPS settings (`CARDVAULT_TLS_CERT_FILE`, `CARDVAULT_TLS_KEY_FILE`) take.
    pub fn server_identity_pem(&self) -> PemIdentity {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        PemIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate named `common_name`, signed by this authority.
    pub fn client_identity(&self, common_name: &str) -> PemIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        PemIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A server's certificate chain and private key, as rustls takes them.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A certificate and its private key, PEM (as the vault's settings take them).
pub struct PemIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh private key (PEM) that belongs to no certificate: a key that does not match.
pub fn unmatched_key_pem() -> String {
    KeyPair::generate().unwrap().serialize_pem()
}
