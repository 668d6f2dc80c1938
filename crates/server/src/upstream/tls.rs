//! TLS settings for processor connections: system roots plus operator-supplied ones, TLS 1.2 as
//! the floor, HTTP/2 offered by ALPN.

use std::path::Path;
use std::sync::Arc;

use super::UpstreamError;

pub(super) fn client_config(
    extra_ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let setup = |e: String| UpstreamError::Setup(e);
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
        let mut count = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| setup(format!("bad certificate in {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| setup(format!("unusable certificate in {}: {e}", path.display())))?;
            count += 1;
        }
        if count == 0 {
            return Err(setup(format!("no certificate in {}", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
