//! A card tokenized again in a project that deduplicates keeps its token: the token's sealed
//! data is refreshed (a new expiry date or name replaces the old), its expiry becomes the later
//! of the two, and its rule on where it may be sent becomes the new one when the new submission
//! names one. `POST /tokenize` and `cardvault import` both go through here, so a card keeps the
//! same token with the same options whichever way it came in.

use super::{AllowedDestinations, TokenData, expiry};
use crate::crypto::{CryptoError, Keyring};
use crate::store::{Store, StoreError};

/// The token a card was deduplicated to, as it is stored after the refresh.
pub struct Refreshed {
    pub token_id: String,
    pub expires_at: Option<i64>,
    pub allowed: Option<AllowedDestinations>,
}

/// Refreshes the project's live token holding `fingerprint` with `data`; `None` when the
/// project holds none (a deleted or expired token is none, and so is one that expired or was
/// deleted between the read and the write). A submission without a rule (a browser checkout,
/// say) never lifts a rule set earlier.
///
/// # Errors
/// The store's, or opening the token's sealed data.
pub async fn refresh_held_token<E: From<StoreError> + From<CryptoError>>(
    store: &dyn Store,
    keyring: &Keyring,
    project_id: &str,
    data: &TokenData,
    fingerprint: &[u8],
    expires_at: Option<i64>,
    allowed: Option<AllowedDestinations>,
) -> Result<Option<Refreshed>, E> {
    let existing = match store.token_by_fingerprint(project_id, fingerprint).await {
        Ok(existing) => existing,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let allowed = match allowed {
        Some(allowed) => Some(allowed),
        None => TokenData::open_with_rule(keyring, &existing.sealed, project_id, &existing.id)?.1,
    };
    let sealed = data.seal_with_rule(allowed.as_ref(), keyring, project_id, &existing.id)?;
    let expires_at = expiry::later(existing.expires_at, expires_at);
    match store
        .update_token_data(project_id, &existing.id, &sealed, expires_at)
        .await
    {
        Ok(()) => Ok(Some(Refreshed {
            token_id: existing.id,
            expires_at,
            allowed,
        })),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
