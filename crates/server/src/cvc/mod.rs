//! CVC sessions: a security code held for a short time, never on disk, used once.
//!
//! [`CvcSessions`] encrypts and decrypts; a [`CvcStore`] only ever sees ciphertext bound (by AAD)
//! to the session id and project, so a store dump or a swapped entry reveals nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cardvault_core::card::Cvc;
use cardvault_core::secret::SecretString;
use uuid::Uuid;

use crate::crypto::{CryptoError, Keyring, aad};

mod memory;
mod redis;

pub use self::redis::RedisCvcStore;

/// Test-token CVC sessions live a year and are not consumed by use (API.md, `/test-tokens`).
pub const TEST_SESSION_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
pub use memory::MemoryCvcStore;

#[derive(Debug, thiserror::Error)]
pub enum CvcError {
    #[error("CVC session store unavailable")]
    Unavailable(#[source] ::redis::RedisError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A session as stored: who owns it, whether use consumes it, and the sealed code.
#[derive(Clone)]
pub struct StoredSession {
    pub project_id: String,
    /// Test sessions are not consumed by use.
    pub reusable: bool,
    pub sealed: Vec<u8>,
}

/// Where sealed sessions live; `take` must be atomic across every server sharing the store.
///
/// A single-use session is not removed by `take` but held: no other take gets it until the
/// taker either `consume`s it (the processor may have seen the code) or `release`s it (the call
/// ended before anything was sent), which makes it usable again with the TTL it had left.
#[async_trait]
pub trait CvcStore: Send + Sync {
    async fn put(&self, id: Uuid, session: StoredSession, ttl: Duration) -> Result<(), CvcError>;
    /// Returns the session if it exists, is alive, is not held and belongs to `project_id`;
    /// holds it unless it is reusable. Two concurrent takes never both get a single-use session.
    async fn take(&self, id: Uuid, project_id: &str) -> Result<Option<StoredSession>, CvcError>;
    /// Makes a held session usable again, its expiry unchanged; a session deleted or expired in
    /// the meantime stays gone.
    async fn release(&self, id: Uuid, project_id: &str) -> Result<(), CvcError>;
    /// Removes a held session for good.
    async fn consume(&self, id: Uuid, project_id: &str) -> Result<(), CvcError>;
    /// Removes the session if it belongs to `project_id`; false if there was none.
    async fn delete(&self, id: Uuid, project_id: &str) -> Result<bool, CvcError>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), CvcError> {
        Ok(())
    }
    /// Sessions held right now, when the store can tell cheaply (for the metrics). A shared
    /// store cannot (counting would scan every key), and says `None`.
    fn live_sessions(&self) -> Option<usize> {
        None
    }
}

/// Encrypting front of a [`CvcStore`].
#[derive(Clone)]
pub struct CvcSessions {
    store: Arc<dyn CvcStore>,
    keyring: Arc<Keyring>,
}

impl CvcSessions {
    pub fn new(store: Arc<dyn CvcStore>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    /// Stores `cvc` for `ttl` and returns the new session id.
    pub async fn create(
        &self,
        project_id: &str,
        cvc: &Cvc,
        ttl: Duration,
        reusable: bool,
    ) -> Result<Uuid, CvcError> {
        let id = self.keyring.random_uuid()?;
        let sealed = self.keyring.seal_session(
            cvc.expose_secret().as_bytes(),
            &aad::cvc_session(project_id, id),
        )?;
        let session = StoredSession {
            project_id: project_id.to_owned(),
            reusable,
            sealed,
        };
        self.store.put(id, session, ttl).await?;
        crate::metrics::cvc_session_created();
        Ok(id)
    }

    /// Takes the code out of the session. A single-use session is held by the returned
    /// [`CvcLease`] until the caller says whether the code may have reached the processor.
    pub async fn take(&self, id: Uuid, project_id: &str) -> Result<Option<CvcLease>, CvcError> {
        let Some(session) = self.store.take(id, project_id).await? else {
            return Ok(None);
        };
        let mut lease = CvcLease {
            code: None,
            held: (!session.reusable).then(|| HeldSession {
                store: self.store.clone(),
                id,
                project_id: project_id.to_owned(),
            }),
        };
        // On a failure to open, the lease is dropped and the session consumed: a session that
        // cannot be opened never will be.
        let plain = self
            .keyring
            .open_session(&session.sealed, &aad::cvc_session(project_id, id))?;
        let code = String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)?;
        lease.code = Some(Cvc::from_stored(SecretString::new(code)));
        Ok(Some(lease))
    }

    pub async fn delete(&self, id: Uuid, project_id: &str) -> Result<bool, CvcError> {
        self.store.delete(id, project_id).await
    }

    pub async fn ping(&self) -> Result<(), CvcError> {
        self.store.ping().await
    }

    /// See [`CvcStore::live_sessions`].
    pub fn live_sessions(&self) -> Option<usize> {
        self.store.live_sessions()
    }
}

/// A taken CVC. For a single-use session, the session stays held (unusable by anyone else)
/// until [`CvcLease::finish`] says whether the request was sent; a lease dropped without that
/// answer counts as sent, since nothing then proves the processor did not see the code.
pub struct CvcLease {
    code: Option<Cvc>,
    held: Option<HeldSession>,
}

struct HeldSession {
    store: Arc<dyn CvcStore>,
    id: Uuid,
    project_id: String,
}

impl CvcLease {
    pub fn code(&self) -> Option<&Cvc> {
        self.code.as_ref()
    }

    /// Consumes the session if the request may have reached the processor (`sent`), else makes
    /// it usable again for the merchant's retry.
    ///
    /// # Errors
    /// [`CvcError::Unavailable`] when the store cannot be reached; a held session then expires
    /// with its TTL, unused.
    pub async fn finish(mut self, sent: bool) -> Result<(), CvcError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        if sent {
            held.store.consume(held.id, &held.project_id).await
        } else {
            held.store.release(held.id, &held.project_id).await
        }
    }
}

impl Drop for CvcLease {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        // Dropped mid-call (the client went away, a later stage failed unexpectedly): whether
        // the code was sent is unknown, so the session is used up.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = held.store.consume(held.id, &held.project_id).await {
                    tracing::warn!(error = %e, "a held CVC session could not be removed; it expires with its TTL");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crypto::MasterKey;
    use cardvault_core::card::Brand;

    fn sessions() -> (CvcSessions, Arc<MemoryCvcStore>) {
        let master = MasterKey::generate().unwrap();
        let keyring = Arc::new(Keyring::new(&master, &[]).unwrap());
        let store = MemoryCvcStore::start(Duration::from_millis(20), 3);
        (CvcSessions::new(store.clone(), keyring), store)
    }

    fn cvc() -> Cvc {
        Cvc::parse("123", Brand::Visa, "cvv").unwrap()
    }

    #[tokio::test]
    async fn single_use_sessions_are_taken_once() {
        let (sessions, _) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_secs(60), false)
            .await
            .unwrap();
        assert!(
            sessions.take(id, "p2").await.unwrap().is_none(),
            "other project"
        );
        let lease = sessions.take(id, "p1").await.unwrap().unwrap();
        assert_eq!(lease.code().unwrap().expose_secret(), "123");
        assert!(
            sessions.take(id, "p1").await.unwrap().is_none(),
            "held by the first call"
        );
        lease.finish(true).await.unwrap();
        assert!(
            sessions.take(id, "p1").await.unwrap().is_none(),
            "second use"
        );
    }

    #[tokio::test]
    async fn a_session_released_unsent_is_usable_again_with_its_ttl() {
        let (sessions, _) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_millis(400), false)
            .await
            .unwrap();
        let lease = sessions.take(id, "p1").await.unwrap().unwrap();
        lease.finish(false).await.unwrap();
        let lease = sessions.take(id, "p1").await.unwrap().unwrap();
        assert_eq!(lease.code().unwrap().expose_secret(), "123");
        lease.finish(false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            sessions.take(id, "p1").await.unwrap().is_none(),
            "released, the session still expires when it was due to"
        );
    }

    #[tokio::test]
    async fn a_session_deleted_while_held_is_not_brought_back() {
        let (sessions, _) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_secs(60), false)
            .await
            .unwrap();
        let lease = sessions.take(id, "p1").await.unwrap().unwrap();
        assert!(sessions.delete(id, "p1").await.unwrap());
        lease.finish(false).await.unwrap();
        assert!(sessions.take(id, "p1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lease_dropped_unfinished_uses_the_session_up() {
        let (sessions, store) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_secs(60), false)
            .await
            .unwrap();
        drop(sessions.take(id, "p1").await.unwrap().unwrap());
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn reusable_sessions_survive_use_and_deletes_work() {
        let (sessions, _) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_secs(60), true)
            .await
            .unwrap();
        assert!(sessions.take(id, "p1").await.unwrap().is_some());
        assert!(sessions.take(id, "p1").await.unwrap().is_some());
        assert!(!sessions.delete(id, "p2").await.unwrap());
        assert!(sessions.delete(id, "p1").await.unwrap());
        assert!(sessions.take(id, "p1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn expired_sessions_are_gone_and_swept() {
        let (sessions, store) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_millis(30), false)
            .await
            .unwrap();
        sessions
            .create("p1", &cvc(), Duration::from_millis(30), false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.is_empty(), "the sweeper removed expired sessions");
        assert!(sessions.take(id, "p1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_takes_yield_one_winner() {
        let (sessions, _) = sessions();
        let id = sessions
            .create("p1", &cvc(), Duration::from_secs(60), false)
            .await
            .unwrap();
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let s = sessions.clone();
                tokio::spawn(async move { s.take(id, "p1").await.unwrap().is_some() })
            })
            .collect();
        let mut winners = 0;
        for h in handles {
            winners += usize::from(h.await.unwrap());
        }
        assert_eq!(winners, 1);
    }
}
