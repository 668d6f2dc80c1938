//! The project's TLS settings for a destination, opened for one call.

use url::Url;
use zeroize::Zeroizing;

use crate::api::{ApiError, ProjectDestinations};
use crate::crypto::Keyring;
use crate::store::DestinationTls;
use crate::upstream::TlsProfile;

/// Binds a sealed client key to its project and host.
pub fn key_aad(project_id: &str, host: &str) -> Vec<u8> {
    format!("cardvault:tls-key:v1:{project_id}:{host}").into_bytes()
}

/// The settings whose host pattern matches `url` (exact hosts are listed before wildcards).
pub fn for_destination(
    keyring: &Keyring,
    project_id: &str,
    destinations: &ProjectDestinations,
    url: &Url,
) -> Result<Option<TlsProfile>, ApiError> {
    for (rule, tls) in &destinations.tls {
        if rule.permits(url) {
            return open(keyring, project_id, tls.clone()).map(Some);
        }
    }
    Ok(None)
}

fn open(keyring: &Keyring, project_id: &str, tls: DestinationTls) -> Result<TlsProfile, ApiError> {
    let client_key_pem = match &tls.client_key {
        Some(sealed) => {
            let plain = keyring.open(sealed, &key_aad(project_id, &tls.host))?;
            let text = String::from_utf8(plain.to_vec())
                .map_err(|_| ApiError::Internal("client key is not UTF-8".into()))?;
            Some(Zeroizing::new(text))
        }
        None => None,
    };
    Ok(TlsProfile {
        cache_key: format!("{project_id}:{}:{}", tls.host, tls.updated_at_ms),
        ca_pem: tls.ca_pem,
        client_cert_pem: tls.client_cert_pem,
        client_key_pem,
    })
}
