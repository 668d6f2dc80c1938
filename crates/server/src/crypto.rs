//! All cryptography of the vault, behind one module: envelope encryption of stored records,
//! keyed hashes for fingerprints and API keys, and random identifiers.
//!
//! The master key never encrypts data itself: it wraps per-version data keys kept in the
//! database, and the root secret from which the keys for hashing (fingerprints, API keys, the
//! audit chain) and CVC sessions are derived with HKDF. It lives behind a
//! [`MasterKeyProvider`]: a key file or `CARDVAULT_MASTER_KEY` ([`MasterKey`]), or a PKCS#11
//! token that never lets it out (`keys::pkcs11`). A vault made with a key file and never
//! rewrapped stores no root secret: the key file's bytes are its root, as they always were.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
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

/// Where the master key lives. It wraps secrets for storage and unwraps them, and never hands
/// itself out.
pub trait MasterKeyProvider: Send + Sync {
    /// For messages: which key this is, without any secret.
    fn describe(&self) -> String;
    /// Encrypts `secret` bound to `aad`.
    fn wrap(&self, secret: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// Decrypts what [`wrap`](Self::wrap) made; [`CryptoError::Decrypt`] when this key did not
    /// wrap it (or it was altered, or moved to another `aad`).
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
    /// The root secret of a vault that stores none: only a key file has one (its own bytes).
    fn implicit_root(&self) -> Option<RootSecret> {
        None
    }
}

/// The secret the hashing and session keys are derived from. It outlives master keys: a rewrap
/// wraps it anew, so fingerprints, API key hashes and the audit chain stay valid.
pub struct RootSecret(Zeroizing<[u8; 32]>);

impl RootSecret {
    pub fn generate() -> Result<Self, CryptoError> {
        random_32().map(Self)
    }

    /// # Errors
    /// [`CryptoError::Decrypt`] when `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(CryptoError::Decrypt);
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn derive(&self, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        hkdf_32(&self.0, label)
    }

    fn aead(&self, label: &[u8]) -> Result<LessSafeKey, CryptoError> {
        aead_key(self.derive(label)?.as_ref())
    }
}

/// The associated data a wrapped root secret is bound to.
pub const ROOT_SECRET_AAD: &[u8] = b"cardvault root secret v1";

/// A master key held in memory: from a key file or `CARDVAULT_MASTER_KEY`.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        random_32().map(Self)
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

    fn wrapping_key(&self) -> Result<LessSafeKey, CryptoError> {
        aead_key(hkdf_32(&self.0, b"data-key-wrapping")?.as_ref())
    }
}

impl MasterKeyProvider for MasterKey {
    fn describe(&self) -> String {
        "the master key file (or CARDVAULT_MASTER_KEY)".into()
    }

    fn wrap(&self, secret: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(&SystemRandom::new(), &self.wrapping_key()?, secret, aad)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open(&self.wrapping_key()?, wrapped, aad)
    }

    fn implicit_root(&self) -> Option<RootSecret> {
        Some(RootSecret(self.0.clone()))
    }
}

fn random_32() -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(key.as_mut())
        .map_err(|_| CryptoError::Random)?;
    Ok(key)
}

/// A sub-key for one purpose. HKDF only fails for an output longer than 255 hash lengths, which
/// 32 bytes never is; were it to fail, the error stops the start rather than leaving an all-zero
/// key in use.
fn hkdf_32(secret: &[u8; 32], label: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"cardvault/v1");
    let prk = salt.extract(secret);
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [label];
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .map_err(|_| CryptoError::KeyDerivation)?;
    Ok(out)
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub version: u32,
    pub wrapped: Vec<u8>,
    /// Whether it may seal new records. A rotation adds a key inactive, so every instance can
    /// open what it seals before any instance seals with it.
    pub active: bool,
}

/// The data keys in use: every version that still opens records, and the newest active one.
struct DataKeys {
    sealing_version: u32,
    keys: HashMap<u32, LessSafeKey>,
}

/// The keys a running vault uses, derived from the master key and the stored data keys.
pub struct Keyring {
    /// Swapped whole when a rotation adds, activates or retires a data key.
    data: ArcSwap<DataKeys>,
    /// `CARDVAULT_ACTIVE_KEY_VERSION`: seals with this version whatever the database says.
    pinned_version: Option<u32>,
    /// Opens data keys added while the vault runs, and wraps new ones.
    master: Arc<dyn MasterKeyProvider>,
    fingerprint_key: hmac::Key,
    api_key_pepper: hmac::Key,
    audit_key: hmac::Key,
    session_key: LessSafeKey,
    rng: SystemRandom,
}

impl Keyring {
    /// The key ring of a vault whose master key is a key file and whose root secret is that
    /// key (one never rewrapped).
    ///
    /// # Errors
    /// As [`Keyring::with_master`].
    pub fn new(master: &MasterKey, wrapped: &[WrappedDataKey]) -> Result<Self, CryptoError> {
        let root = RootSecret(master.0.clone());
        Self::with_master(Arc::new(master.clone()), &root, wrapped)
    }

    /// Unwraps the stored data keys with `master`; the newest active one seals new records.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] when a data key was not wrapped by this master key.
    pub fn with_master(
        master: Arc<dyn MasterKeyProvider>,
        root: &RootSecret,
        wrapped: &[WrappedDataKey],
    ) -> Result<Self, CryptoError> {
        let data = unwrap_data_keys(master.as_ref(), wrapped)?;
        Ok(Self {
            data: ArcSwap::from_pointee(data),
            pinned_version: None,
            master,
            fingerprint_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                root.derive(b"fingerprint")?.as_ref(),
            ),
            api_key_pepper: hmac::Key::new(
                hmac::HMAC_SHA256,
                root.derive(b"api-key-pepper")?.as_ref(),
            ),
            audit_key: hmac::Key::new(hmac::HMAC_SHA256, root.derive(b"audit-chain")?.as_ref()),
            session_key: root.aead(b"cvc-session")?,
            rng: SystemRandom::new(),
        })
    }

    /// Encrypts new records under `version` whatever the database says is active.
    ///
    /// # Errors
    /// [`CryptoError::UnknownKeyVersion`] when the database holds no such key.
    pub fn with_active_version(mut self, version: u32) -> Result<Self, CryptoError> {
        if !self.data.load().keys.contains_key(&version) {
            return Err(CryptoError::UnknownKeyVersion(version));
        }
        self.pinned_version = Some(version);
        Ok(self)
    }

    /// Takes the stored data keys as they are now: keys added by a rotation open records from
    /// now on, the newest active one seals them, retired ones are forgotten.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] when a stored key was not wrapped by this master key; the keys
    /// in use stay as they were.
    pub fn refresh(&self, wrapped: &[WrappedDataKey]) -> Result<(), CryptoError> {
        let current = self.data.load();
        let unchanged = wrapped.len() == current.keys.len()
            && wrapped
                .iter()
                .all(|k| current.keys.contains_key(&k.version))
            && sealing_version_of(wrapped) == current.sealing_version;
        if unchanged {
            return Ok(());
        }
        let data = unwrap_data_keys(self.master.as_ref(), wrapped)?;
        if data.sealing_version != current.sealing_version && self.pinned_version.is_none() {
            tracing::info!(
                version = data.sealing_version,
                "new records are sealed with another data key version"
            );
        }
        self.data.store(std::sync::Arc::new(data));
        Ok(())
    }

    /// The data key version sealing new records.
    pub fn sealing_version(&self) -> u32 {
        self.pinned_version
            .unwrap_or_else(|| self.data.load().sealing_version)
    }

    /// A fresh data key, wrapped for storage by `master`.
    pub fn wrap_new_data_key(
        master: &dyn MasterKeyProvider,
        version: u32,
    ) -> Result<WrappedDataKey, CryptoError> {
        let raw = random_32()?;
        Ok(WrappedDataKey {
            version,
            wrapped: master.wrap(raw.as_ref(), &wrap_aad(version))?,
            active: true,
        })
    }

    /// A fresh data key wrapped by this vault's master key (a rotation adding a version).
    pub fn new_data_key(&self, version: u32) -> Result<WrappedDataKey, CryptoError> {
        Self::wrap_new_data_key(self.master.as_ref(), version)
    }

    pub fn has_data_key(&self) -> bool {
        !self.data.load().keys.is_empty()
    }

    /// Encrypts `plaintext` under the sealing data key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
        // One snapshot of the keys: the version chosen is one this snapshot holds.
        let data = self.data.load();
        let version = self.pinned_version.unwrap_or(data.sealing_version);
        self.seal_in(&data, version, plaintext, aad)
    }

    /// Encrypts `plaintext` under data key `version` (a rotation moving records to it).
    pub fn seal_with(
        &self,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, CryptoError> {
        self.seal_in(&self.data.load(), version, plaintext, aad)
    }

    fn seal_in(
        &self,
        data: &DataKeys,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Sealed, CryptoError> {
        let key = data
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let combined = seal(&self.rng, key, plaintext, aad)?;
        let (nonce, ciphertext) = combined.split_at(NONCE_LEN);
        Ok(Sealed {
            key_version: version,
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Decrypts a record; fails closed if it was altered or moved to another `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let data = self.data.load();
        let key = data
            .keys
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

    /// A random (version 4) UUID from the operating system's generator, for ids that act as
    /// capabilities (CVC sessions): uuid's own `new_v4` draws from a generator in the process
    /// (its `fast-rng`, kept for request and chain ids, which are not secrets).
    pub fn random_uuid(&self) -> Result<uuid::Uuid, CryptoError> {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
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
    /// A token's sealed card or bank data, bound to its row. (Joined, not `format!`ted: every
    /// proxy call opens a token.)
    pub fn token(project_id: &str, token_id: &str) -> Vec<u8> {
        ["cardvault:token:v1:", project_id, ":", token_id]
            .concat()
            .into_bytes()
    }

    /// A CVC session's sealed code, bound to the session and its project.
    pub fn cvc_session(project_id: &str, session: uuid::Uuid) -> Vec<u8> {
        format!("cardvault:cvc:v1:{project_id}:{session}").into_bytes()
    }

    /// A kept answer to a call made with an idempotency key, bound to the project and the key.
    pub fn idempotent_answer(project_id: &str, key_hash: &[u8]) -> Vec<u8> {
        let mut aad = format!("cardvault:idempotent-answer:v1:{project_id}:").into_bytes();
        aad.extend_from_slice(hex::encode(key_hash).as_bytes());
        aad
    }

    /// A project's sealed TLS client key, bound to the project and the host it is for.
    pub fn tls_client_key(project_id: &str, host: &str) -> Vec<u8> {
        format!("cardvault:tls-key:v1:{project_id}:{host}").into_bytes()
    }
}

/// The version that seals new records: the newest active one (before rotations existed every
/// key was active, so the newest one).
fn sealing_version_of(wrapped: &[WrappedDataKey]) -> u32 {
    wrapped
        .iter()
        .filter(|k| k.active)
        .map(|k| k.version)
        .max()
        .or_else(|| wrapped.iter().map(|k| k.version).max())
        .unwrap_or(0)
}

fn unwrap_data_keys(
    master: &dyn MasterKeyProvider,
    wrapped: &[WrappedDataKey],
) -> Result<DataKeys, CryptoError> {
    let mut keys = HashMap::new();
    for key in wrapped {
        let raw = unwrap_data_key(master, key)?;
        keys.insert(key.version, aead_key(&raw)?);
    }
    Ok(DataKeys {
        sealing_version: sealing_version_of(wrapped),
        keys,
    })
}

/// The raw bytes of a stored data key (a rewrap moving it to another master key).
pub fn unwrap_data_key(
    master: &dyn MasterKeyProvider,
    key: &WrappedDataKey,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    master.unwrap(&key.wrapped, &wrap_aad(key.version))
}

/// `key` wrapped by `to` instead of `from` (a rewrap), read back through `to` before it is
/// returned: a key that wraps but does not unwrap (a misbehaving token) must not strand the
/// vault.
pub fn rewrap_data_key(
    from: &dyn MasterKeyProvider,
    to: &dyn MasterKeyProvider,
    key: &WrappedDataKey,
) -> Result<WrappedDataKey, CryptoError> {
    let raw = unwrap_data_key(from, key)?;
    let moved = WrappedDataKey {
        wrapped: to.wrap(&raw, &wrap_aad(key.version))?,
        ..key.clone()
    };
    if unwrap_data_key(to, &moved)? != raw {
        return Err(CryptoError::Decrypt);
    }
    Ok(moved)
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
    fn random_uuids_are_version_4_and_differ() {
        let ring = keyring();
        let ids: std::collections::HashSet<uuid::Uuid> =
            (0..64).map(|_| ring.random_uuid().unwrap()).collect();
        assert_eq!(ids.len(), 64);
        for id in ids {
            assert_eq!(id.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
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

    #[test]
    fn a_refreshed_keyring_opens_added_keys_seals_with_the_newest_active_and_forgets_retired_ones()
    {
        let master = MasterKey::generate().unwrap();
        let v1 = Keyring::wrap_new_data_key(&master, 1).unwrap();
        let ring = Keyring::new(&master, std::slice::from_ref(&v1)).unwrap();
        let old = ring.seal(b"4242424242424242", b"a").unwrap();

        // Added, not active: it opens what a rotation seals with it, nothing else changes.
        let mut v2 = Keyring::wrap_new_data_key(&master, 2).unwrap();
        v2.active = false;
        ring.refresh(&[v1.clone(), v2.clone()]).unwrap();
        assert_eq!(ring.sealing_version(), 1);
        let moved = ring.seal_with(2, b"4242424242424242", b"a").unwrap();
        assert_eq!(
            ring.open(&moved, b"a").unwrap().as_slice(),
            b"4242424242424242"
        );

        // Activated: new records are sealed with it; old ones still open.
        v2.active = true;
        ring.refresh(&[v1.clone(), v2.clone()]).unwrap();
        assert_eq!(ring.seal(b"x", b"a").unwrap().key_version, 2);
        assert!(ring.open(&old, b"a").is_ok());

        // Retired: gone.
        ring.refresh(std::slice::from_ref(&v2)).unwrap();
        assert!(matches!(
            ring.open(&old, b"a"),
            Err(CryptoError::UnknownKeyVersion(1))
        ));

        // A key wrapped by another master key is refused and changes nothing.
        let foreign = Keyring::wrap_new_data_key(&MasterKey::generate().unwrap(), 3).unwrap();
        assert!(ring.refresh(&[v2, foreign]).is_err());
        assert_eq!(ring.sealing_version(), 2);
    }

    #[test]
    fn a_pinned_version_seals_whatever_the_database_makes_active() {
        let master = MasterKey::generate().unwrap();
        let v1 = Keyring::wrap_new_data_key(&master, 1).unwrap();
        let v2 = Keyring::wrap_new_data_key(&master, 2).unwrap();
        let ring = Keyring::new(&master, &[v1.clone(), v2.clone()])
            .unwrap()
            .with_active_version(1)
            .unwrap();
        assert_eq!(ring.seal(b"x", b"a").unwrap().key_version, 1);
        ring.refresh(&[v1, v2]).unwrap();
        assert_eq!(ring.sealing_version(), 1);
    }
}
