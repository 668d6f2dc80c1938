//! Which master key a vault uses, chosen by settings, and the root secret it guards.
//!
//! The settings are read from the environment only (like `CARDVAULT_MASTER_KEY`), by the server
//! and by every command that opens the vault, so both always use the same key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::StartError;
use crate::crypto::{CryptoError, MasterKey, MasterKeyProvider, ROOT_SECRET_AAD, RootSecret};
use crate::store::{Store, StoreError};

use super::pkcs11::{Pkcs11Key, Pkcs11Settings};

/// `file` (default) or `pkcs11`.
pub const PROVIDER_ENV: &str = "CARDVAULT_KEY_PROVIDER";
pub const PKCS11_MODULE_ENV: &str = "CARDVAULT_PKCS11_MODULE";
pub const PKCS11_TOKEN_LABEL_ENV: &str = "CARDVAULT_PKCS11_TOKEN_LABEL";
pub const PKCS11_PIN_ENV: &str = "CARDVAULT_PKCS11_PIN";
pub const PKCS11_PIN_FILE_ENV: &str = "CARDVAULT_PKCS11_PIN_FILE";
pub const PKCS11_KEY_LABEL_ENV: &str = "CARDVAULT_PKCS11_KEY_LABEL";

/// The name of the stored root secret in `wrapped_secrets`.
pub const ROOT_SECRET_NAME: &str = "root";

/// Where the master key is.
pub enum ProviderSettings {
    /// `CARDVAULT_MASTER_KEY`, else `master.key` in the data directory.
    File {
        data_dir: PathBuf,
    },
    Pkcs11(Pkcs11Settings),
}

impl ProviderSettings {
    /// # Errors
    /// [`CryptoError::MasterKey`] naming the setting that is missing or wrong.
    pub fn from_env(data_dir: &Path) -> Result<Self, CryptoError> {
        match std::env::var(PROVIDER_ENV).as_deref() {
            Err(_) | Ok("file") => Ok(Self::File {
                data_dir: data_dir.to_path_buf(),
            }),
            Ok("pkcs11") => {
                let required = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        CryptoError::MasterKey(format!(
                            "{PROVIDER_ENV}=pkcs11 needs {name} to be set"
                        ))
                    })
                };
                Ok(Self::Pkcs11(Pkcs11Settings {
                    module: required(PKCS11_MODULE_ENV)?.into(),
                    token_label: required(PKCS11_TOKEN_LABEL_ENV)?,
                    pin: pin_from_env()?,
                    key_label: required(PKCS11_KEY_LABEL_ENV)?,
                }))
            }
            Ok(other) => Err(CryptoError::MasterKey(format!(
                "{PROVIDER_ENV} must be `file` or `pkcs11`, not `{other}`"
            ))),
        }
    }

    /// Opens the master key. `create`: a PKCS#11 key that is not in the token yet is generated
    /// there (a new vault, or a rewrap to a new key).
    ///
    /// # Errors
    /// [`CryptoError::MasterKey`] when the key cannot be had.
    pub fn open(&self, create: bool) -> Result<Arc<dyn MasterKeyProvider>, CryptoError> {
        Ok(match self {
            Self::File { data_dir } => Arc::new(MasterKey::load(data_dir)?),
            Self::Pkcs11(settings) => Arc::new(Pkcs11Key::open(settings, create)?),
        })
    }

    pub fn is_file(&self) -> bool {
        matches!(self, Self::File { .. })
    }
}

/// The PIN from `CARDVAULT_PKCS11_PIN`, else from the file `CARDVAULT_PKCS11_PIN_FILE` names.
pub fn pin_from_env() -> Result<Zeroizing<String>, CryptoError> {
    if let Ok(pin) = std::env::var(PKCS11_PIN_ENV) {
        return Ok(Zeroizing::new(pin));
    }
    let path = std::env::var(PKCS11_PIN_FILE_ENV).map_err(|_| {
        CryptoError::MasterKey(format!(
            "{PROVIDER_ENV}=pkcs11 needs {PKCS11_PIN_ENV} or {PKCS11_PIN_FILE_ENV} to be set"
        ))
    })?;
    read_pin_file(Path::new(&path))
}

/// A PIN kept in a file (its first line).
///
/// # Errors
/// [`CryptoError::MasterKey`] when it cannot be read.
pub fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, CryptoError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CryptoError::MasterKey(format!("cannot read the PIN file {}: {e}", path.display()))
    })?);
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or_default().to_owned(),
    ))
}

/// The root secret: stored wrapped by the master key, or (a vault made with a key file and never
/// rewrapped) the key file's own bytes. A new vault whose master key is not a file gets a fresh
/// one, stored wrapped.
///
/// # Errors
/// [`StartError::WrongMasterKey`] when the stored one does not open with `master`, or when the
/// vault's root is a key file's and `master` is not that file.
pub async fn load_root_secret(
    store: &dyn Store,
    master: &dyn MasterKeyProvider,
    new_vault: bool,
) -> Result<RootSecret, StartError> {
    let stored = match store.wrapped_secret(ROOT_SECRET_NAME).await? {
        Some(stored) => stored,
        None => match master.implicit_root() {
            Some(root) => return Ok(root),
            None if new_vault => {
                let root = RootSecret::generate()?;
                match store
                    .insert_wrapped_secret(
                        ROOT_SECRET_NAME,
                        &master.wrap(root.expose(), ROOT_SECRET_AAD)?,
                    )
                    .await
                {
                    // Another instance starting on the same new database stored its own first.
                    Err(StoreError::Conflict) => store
                        .wrapped_secret(ROOT_SECRET_NAME)
                        .await?
                        .ok_or(StoreError::NotFound)?,
                    other => return other.map(|()| root).map_err(StartError::from),
                }
            }
            None => return Err(StartError::WrongMasterKey),
        },
    };
    open_root(master, &stored)
}

fn open_root(master: &dyn MasterKeyProvider, stored: &[u8]) -> Result<RootSecret, StartError> {
    let raw = master
        .unwrap(stored, ROOT_SECRET_AAD)
        .map_err(wrong_key_on_decrypt)?;
    RootSecret::from_bytes(&raw).map_err(wrong_key_on_decrypt)
}

/// A secret that does not open was wrapped by another master key.
pub fn wrong_key_on_decrypt(e: CryptoError) -> StartError {
    match e {
        CryptoError::Decrypt => StartError::WrongMasterKey,
        other => other.into(),
    }
}
