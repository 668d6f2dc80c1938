//! Browser collection: the card is typed into the vault's own frames, and the merchant's page
//! only ever gets a token. This module holds the rules; `api::collect` the HTTP side.
//!
//! - **Allowed origins**: the web origins that may embed a project's frames (their CSP
//!   `frame-ancestors`) and on whose behalf the tokenizer frame may tokenize.
//! - **Tokenization sessions**: the merchant's backend mints, with its secret key, a short-lived
//!   *wax key* bound to one checkout (`tokenization_session_id`). The browser tokenizes with the
//!   publishable key and that wax key, never a secret key, at most `max_tokenize_calls` times.
//!   Only the wax key's keyed hash is stored; the count is kept in the database, so it holds
//!   across instances, atomically.
//! - **Assets**: the SDK and the frames, plain files compiled into the binary.

pub mod assets;

use std::sync::Arc;
use std::time::Duration;

use cardvault_core::origin::{OriginPattern, is_allowed};

use crate::cache::TtlCache;
use crate::clock::now_unix;
use crate::crypto::{CryptoError, Keyring};
use crate::store::{CollectSession, Project, Store, StoreError};

pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 15 * 60;
/// As the compatible SDK's default.
pub const DEFAULT_MAX_TOKENIZE_CALLS: u32 = 3;
/// A checkout that needs more than this is not a checkout.
pub const MAX_TOKENIZE_CALLS: u32 = 100;
/// Longest tokenization session id accepted (a UUID is 36).
const MAX_SESSION_ID_LEN: usize = 128;
/// Bound on projects whose origins are cached.
const MAX_CACHED_PROJECTS: u64 = 100_000;

/// A freshly minted wax key: shown once, to the merchant's backend.
pub struct Minted {
    pub wax_key: secrecy::SecretString,
    pub expires_at: i64,
}

/// Why a browser may not tokenize; the API tells the caller no more than that.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Unknown, revoked, expired or used-up key, or one bound to another checkout or project.
    #[error("client session expired or not found")]
    SessionNotFound,
    /// The embedding page's origin is not one the project allows.
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::SessionNotFound,
            other => Self::Store(other),
        }
    }
}

/// A browser's right to one tokenization, checked but not yet used.
pub struct Grant {
    key_hash: Vec<u8>,
}

pub struct Collect {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    session_ttl: Duration,
    origins: TtlCache<String, Arc<Vec<OriginPattern>>>,
}

impl Collect {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        session_ttl: Duration,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            store,
            keyring,
            session_ttl,
            origins: TtlCache::new(cache_ttl, MAX_CACHED_PROJECTS),
        }
    }

    /// Whether `id` can name a checkout: 1 to 128 letters, digits, `-` or `_`.
    pub fn is_valid_session_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_SESSION_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// Mints a wax key for one checkout of `project`, good for `calls` tokenizations.
    pub async fn mint(
        &self,
        project: &Project,
        tokenization_session_id: &str,
        calls: u32,
    ) -> Result<Minted, MintError> {
        let wax_key = format!(
            "wax_{}_{}",
            project.mode.as_str(),
            self.keyring.random_hex(24)?
        );
        let ttl = i64::try_from(self.session_ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = now_unix().saturating_add(ttl);
        self.store
            .insert_collect_session(&CollectSession {
                key_hash: self.keyring.key_hash(&wax_key),
                project_id: project.id.clone(),
                tokenization_session_id: tokenization_session_id.to_owned(),
                remaining_calls: calls,
                expires_at,
            })
            .await?;
        Ok(Minted {
            wax_key: secrecy::SecretString::from(wax_key),
            expires_at,
        })
    }

    /// Revokes every wax key of one checkout.
    pub async fn revoke(
        &self,
        project_id: &str,
        tokenization_session_id: &str,
    ) -> Result<(), StoreError> {
        self.store
            .revoke_collect_session(project_id, tokenization_session_id)
            .await
    }

    /// Drops this instance's cached origins of the project (after it changed them).
    pub fn forget_origins(&self, project_id: &str) {
        self.origins.remove(project_id);
    }

    /// The project's allowed origins (cached for `cache_ttl_ms`).
    pub async fn origins(&self, project_id: &str) -> Result<Arc<Vec<OriginPattern>>, StoreError> {
        if let Some(origins) = self.origins.get(project_id) {
            return Ok(origins);
        }
        let stored = self.store.allowed_origins(project_id).await?;
        // Patterns were checked when set; one that no longer parses is left out, never widened.
        let origins: Arc<Vec<OriginPattern>> = Arc::new(
            stored
                .iter()
                .filter_map(|o| OriginPattern::parse(o).ok())
                .collect(),
        );
        self.origins.insert(project_id.to_owned(), origins.clone());
        Ok(origins)
    }

    /// Checks that a browser on `origin` may tokenize for `project` with this wax key, in this
    /// checkout. Nothing is used up yet: see [`Collect::take`].
    pub async fn authorize(
        &self,
        project: &Project,
        wax_key: &str,
        tokenization_session_id: &str,
        origin: &str,
    ) -> Result<Grant, Refusal> {
        let key_hash = self.keyring.key_hash(wax_key);
        let session = self.store.collect_session(&key_hash, now_unix()).await?;
        if session.project_id != project.id
            || session.tokenization_session_id != tokenization_session_id
        {
            return Err(Refusal::SessionNotFound);
        }
        if !is_allowed(&self.origins(&project.id).await?, origin) {
            return Err(Refusal::OriginNotAllowed);
        }
        Ok(Grant { key_hash })
    }

    /// Uses one of the session's calls (atomically: two racing calls cannot both have the last).
    pub async fn take(&self, grant: Grant) -> Result<(), Refusal> {
        self.store
            .take_collect_call(&grant.key_hash, now_unix())
            .await
            .map_err(Refusal::from)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

#[cfg(test)]
mod tests {
    use super::Collect;

    #[test]
    fn session_ids_are_short_plain_identifiers() {
        assert!(Collect::is_valid_session_id(
            "0b6f2c1e-54f6-4d7e-9a3a-2b1f8a7c9d10"
        ));
        assert!(Collect::is_valid_session_id("checkout_42"));
        for bad in ["", "a b", "<script>", "ü", &"x".repeat(129)] {
            assert!(!Collect::is_valid_session_id(bad), "{bad}");
        }
    }
}
