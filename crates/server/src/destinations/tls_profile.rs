//! A project's TLS settings for a destination host, opened once per cache period: the sealed
//! client key is decrypted when the project's settings are loaded, never per call.

use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Keyring, aad};
use crate::store::DestinationTls;
use crate::upstream::TlsProfile;

/// Opens the stored settings into a profile the upstream client can build a connection with.
///
/// # Errors
/// [`CryptoError`] when the sealed client key does not open (or is not text).
pub fn open(
    keyring: &Keyring,
    project_id: &str,
    tls: DestinationTls,
) -> Result<TlsProfile, CryptoError> {
    let client_key_pem = match &tls.client_key {
        Some(sealed) => {
            let plain = keyring.open(sealed, &aad::tls_client_key(project_id, &tls.host))?;
            let text = String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)?;
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
