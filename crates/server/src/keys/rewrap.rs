//! Master-key rotation: every data key and the root secret are unwrapped with the current master
//! key and wrapped by the new one, in one transaction. No record is touched (the data keys stay
//! the same), so it takes a moment whatever the vault holds.
//!
//! Running instances keep the data keys they unwrapped at start and go on serving; each must be
//! restarted with the new master key's settings before the next data-key rotation, which they
//! could not follow otherwise.

use crate::crypto::{self, CryptoError, MasterKeyProvider, ROOT_SECRET_AAD, RootSecret};
use crate::store::{Store, StoreError};

use super::master::ROOT_SECRET_NAME;
use super::rotation::{self, RotationError};

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error("the stored keys do not open with the current master key ({0}); check its settings")]
    WrongCurrentKey(String),
    #[error("the vault has no data keys yet: start it (or `cardvault init`) first")]
    Empty,
    #[error(
        "the data keys changed while they were being rewrapped; nothing was changed, run it again"
    )]
    Changed,
    #[error(transparent)]
    Lease(#[from] RotationError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RewrapError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Changed,
            other => Self::Store(other),
        }
    }
}

/// Moves what `from` wraps to `to`; returns how many data keys moved. Holds the key-job lease,
/// so no rotation adds a key wrapped by the old master key meanwhile.
///
/// # Errors
/// See [`RewrapError`]; on any error nothing stored has changed.
pub async fn rewrap(
    store: &dyn Store,
    from: &dyn MasterKeyProvider,
    to: &dyn MasterKeyProvider,
) -> Result<usize, RewrapError> {
    let owner = rotation::claim(store).await?;
    let outcome = rewrap_holding(store, from, to).await;
    let released = store.release_key_job(rotation::JOB, &owner).await;
    let moved = outcome?;
    released?;
    Ok(moved)
}

async fn rewrap_holding(
    store: &dyn Store,
    from: &dyn MasterKeyProvider,
    to: &dyn MasterKeyProvider,
) -> Result<usize, RewrapError> {
    let wrong_key = |e: CryptoError| match e {
        CryptoError::Decrypt => RewrapError::WrongCurrentKey(from.describe()),
        other => other.into(),
    };
    let keys = store.data_keys().await?;
    if keys.is_empty() {
        return Err(RewrapError::Empty);
    }
    let stored_root = store.wrapped_secret(ROOT_SECRET_NAME).await?;
    let root = match &stored_root {
        Some(wrapped) => {
            RootSecret::from_bytes(&from.unwrap(wrapped, ROOT_SECRET_AAD).map_err(wrong_key)?)
                .map_err(wrong_key)?
        }
        None => from
            .implicit_root()
            .ok_or_else(|| RewrapError::WrongCurrentKey(from.describe()))?,
    };
    let mut moved = Vec::with_capacity(keys.len());
    for key in keys {
        let new = crypto::rewrap_data_key(from, to, &key).map_err(wrong_key)?;
        moved.push((key, new));
    }
    let new_root = to.wrap(root.expose(), ROOT_SECRET_AAD)?;
    if to.unwrap(&new_root, ROOT_SECRET_AAD)?.as_slice() != root.expose() {
        return Err(CryptoError::Decrypt.into());
    }
    store
        .rewrap(&moved, ROOT_SECRET_NAME, stored_root.as_deref(), &new_root)
        .await?;
    Ok(moved.len())
}
