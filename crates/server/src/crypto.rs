//! All cryptography of the vault, behind one module: envelope encryption of stored records,
//! keyed hashes for fingerprints and API keys, and random identifiers.
//!
//! The master key (32 bytes, from `CARDVAULT_MASTER_KEY` or `master.key` in the data dir) never
//! encrypts data itself: it wraps per-version data keys kept in the database, and sub-keys for
//! hashing are derived from it with HKDF so one secret is the root of everything.

use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroizing;

/// The environment variable that may carry the master key (hex), instead of the key file.
pub const MASTER_KEY_ENV: &str = "CARDVAULT_MASTER_KEY";
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key unavailable: {0}")]
    MasterKey(String),
    #[error("a ciphertext failed authentication")]
    Decrypt,
    #[error("no data key with version {0}")]
    UnknownKeyVersion(u32),
    #[error("the system random generator failed")]
    Random,
    #[error("a sub-key could not be derived from the master key")]
    KeyDerivation,
    #[error("a plaintext could not be serialized")]
    Serialize,
}

/// The root secret.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| CryptoError::Random)?;
        Ok(Self(key))
    }

    /// Reads the key from the environment if set, else from `data_dir/master.key`.
    ///
    /// # Errors
    /// [`CryptoError::MasterKey`] when neither holds 64 hex digits.
    pub fn load(data_dir: &Path) -> Result<Self, CryptoError> {
        let text = match std::env::var(MASTER_KEY_ENV) {
            Ok(value) => Zeroizing::new(value),
            Err(_) => {
                let path = data_dir.join(MASTER_KEY_FILE);
                Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                    CryptoError::MasterKey(format!("cannot read {}: {e}", path.display()))
                })?)
            }
        };
        Self::from_hex(text.trim())
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, key.as_mut())
            .map_err(|_| CryptoError::MasterKey("the master key must be 64 hex digits".into()))?;
        Ok(Self(key))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// A sub-key for one purpose. HKDF only fails for an output longer than 255 hash lengths,
    /// which 32 bytes never is; were it to fail, the error stops the start rather than leaving
    /// an all-zero key in use.
    fn derive(&self, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cardvault/v1");
        let prk = salt.extract(self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        let info = [label];
        prk.expand(&info, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(out.as_mut()))
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(out)
    }

    fn aead(&self, label: &[u8]) -> Result<LessSafeKey, CryptoError> {
        aead_key(self.derive(label)?.as_ref())
    }
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::MasterKey("bad key length".into()))
}

/// A record encrypted under one data key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_version: u32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A data key as stored: wrapped (encrypted) by the master key.
#[derive(Debug, Clone)]
pub struct WrappedDataKey {
    pub version: u32,
    pub wrapped: Vec<u8>,
}

/// The keys a running vault uses, derived from the master key and the stored data keys.
pub struct Keyring {
    current_version: u32,
    data_keys: HashMap<u32, LessSafeKey>,
    fingerprint_key: hmac::Key,
    api_key_pepper: hmac::Key,
    audit_key: hmac::Key,
    session_key: LessSafeKey,
    rng: SystemRandom,
}

impl Keyring {
    /// Unwraps the stored data keys; the highest version encrypts new records.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] when a data key was not wrapped by this master key.
    pub fn new(master: &MasterKey, wrapped: &[WrappedDataKey]) -> Result<Self, CryptoError> {
        let wrapping = master.aead(b"data-key-wrapping")?;
        let mut data_keys = HashMap::new();
        for key in wrapped {
            let raw = open(&wrapping, &key.wrapped, &wrap_aad(key.version))?;
            data_keys.insert(key.version, aead_key(&raw)?);
        }
        let current_version = data_keys.keys().copied().max().unwrap_or(0);
        Ok(Self {
            current_version,
            data_keys,
            fingerprint_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                master.derive(b"fingerprint")?.as_ref(),
            ),
            api_key_pepper: hmac::Key::new(
                hmac::HMAC_SHA256,
                master.derive(b"api-key-pepper")?.as_ref(),
            ),
            audit_key: hmac::Key::new(hmac::HMAC_SHA256, master.derive(b"audit-chain")?.as_ref()),
            session_key: master.aead(b"cvc-session")?,
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts new records under `version` instead of the newest key: during a rotation every
    /// instance keeps writing with the old key until all of them can read the new one.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKeyVersion`] when the database holds no such key.
    pub fn with_active_version(mut self, version: u32) -> Result<Self, CryptoError> {
        if !self.data_keys.contains_key(&version) {
            return Err(CryptoError::UnknownKeyVersion(version));
        }
        self.current_version = version;
        Ok(self)
    }

    /// A fresh data key, wrapped for storage.
    pub fn wrap_new_data_key(
        master: &MasterKey,
        version: u32,
    ) -> Result<WrappedDataKey, CryptoError> {
        let wrapping = master.aead(b"data-key-wrapping")?;
        let mut raw = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| CryptoError::Random)?;
        let wrapped = seal(
            &SystemRandom::new(),
            &wrapping,
            raw.as_ref(),
            &wrap_aad(version),
        )?;
        Ok(WrappedDataKey { version, wrapped })
    }

    pub fn has_data_key(&self) -> bool {
        !self.data_keys.is_empty()
    }

    /// Encrypts `plaintext` under the current data key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
        let key = self
            .data_keys
            .get(&self.current_version)
            .ok_or(CryptoError::UnknownKeyVersion(self.current_version))?;
        let combined = seal(&self.rng, key, plaintext, aad)?;
        let (nonce, ciphertext) = combined.split_at(NONCE_LEN);
        Ok(Sealed {
            key_version: self.current_version,
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Decrypts a record; fails closed if it was altered or moved to another `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key = self
            .data_keys
            .get(&sealed.key_version)
            .ok_or(CryptoError::UnknownKeyVersion(sealed.key_version))?;
        let mut combined = Vec::with_capacity(sealed.nonce.len() + sealed.ciphertext.len());
        combined.extend_from_slice(&sealed.nonce);
        combined.extend_from_slice(&sealed.ciphertext);
        open(key, &combined, aad)
    }

    /// Encrypts a CVC session value (nonce prepended) with the session key.
    pub fn seal_session(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(&self.rng, &self.session_key, plaintext, aad)
    }

    pub fn open_session(
        &self,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open(&self.session_key, sealed, aad)
    }

    /// A keyed hash of card data, scoped to a project: equal inside it, useless outside.
    pub fn fingerprint(&self, project_id: &str, data: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.fingerprint_key);
        ctx.update(project_id.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        ctx.sign().as_ref().to_vec()
    }

    /// The stored form of an API or publishable key.
    pub fn key_hash(&self, key: &str) -> Vec<u8> {
        hmac::sign(&self.api_key_pepper, key.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// The audit chain's link: a keyed hash, so rewriting the log takes the master key too.
    pub fn audit_mac(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.audit_key, data).as_ref().to_vec()
    }

    pub fn random_hex(&self, bytes: usize) -> Result<String, CryptoError> {
        let mut buf = Zeroizing::new(vec![0u8; bytes]);
        self.rng.fill(&mut buf).map_err(|_| CryptoError::Random)?;
        Ok(hex::encode(buf.as_slice()))
    }
}

/// Associated data: what each ciphertext is bound to, so a ciphertext moved to another row,
/// project or purpose no longer opens. Every format the vault uses is here, versioned.
pub mod aad {
    /// A token's sealed card or bank data, bound to its row.
    pub fn token(project_id: &str, token_id: &str) -> Vec<u8> {
        format!("cardvault:token:v1:{project_id}:{token_id}").into_bytes()
    }

    /// A CVC session's sealed code, bound to the session and its project.
    pub fn cvc_session(project_id: &str, session: uuid::Uuid) -> Vec<u8> {
        format!("cardvault:cvc:v1:{project_id}:{session}").into_bytes()
    }

    /// A project's sealed TLS client key, bound to the project and the host it is for.
    pub fn tls_client_key(project_id: &str, host: &str) -> Vec<u8> {
        format!("cardvault:tls-key:v1:{project_id}:{host}").into_bytes()
    }
}

fn wrap_aad(version: u32) -> Vec<u8> {
    format!("cardvault data key v{version}").into_bytes()
}

fn seal(
    rng: &SystemRandom,
    key: &LessSafeKey,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Decrypt)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open(key: &LessSafeKey, combined: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if combined.len() < NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ciphertext) = combined.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        let master = MasterKey::generate().unwrap();
        let wrapped = Keyring::wrap_new_data_key(&master, 1).unwrap();
        Keyring::new(&master, &[wrapped]).unwrap()
    }

    #[test]
    fn sealed_records_open_only_with_their_aad() {
        let ring = keyring();
        let sealed = ring.seal(b"4242424242424242", b"proj_a:tok_a").unwrap();
        assert_eq!(sealed.key_version, 1);
        assert!(matches!(
            keyring().with_active_version(2),
            Err(CryptoError::UnknownKeyVersion(2))
        ));
        assert_eq!(
            ring.open(&sealed, b"proj_a:tok_a").unwrap().as_slice(),
            b"4242424242424242"
        );
        assert!(matches!(
            ring.open(&sealed, b"proj_a:tok_b"),
            Err(CryptoError::Decrypt)
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open(&tampered, b"proj_a:tok_a"),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn data_keys_need_their_master_key() {
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let wrapped = Keyring::wrap_new_data_key(&master, 1).unwrap();
        assert!(Keyring::new(&other, &[wrapped]).is_err());
    }

    #[test]
    fn fingerprints_are_scoped_to_a_project() {
        let ring = keyring();
        assert_eq!(
            ring.fingerprint("p1", b"4242"),
            ring.fingerprint("p1", b"4242")
        );
        assert_ne!(
            ring.fingerprint("p1", b"4242"),
            ring.fingerprint("p2", b"4242")
        );
    }
}
