//! Sessions in this process's memory: the embedded default.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::{CvcError, CvcStore, StoredSession};

struct MemoryEntry {
    session: StoredSession,
    expires_at: Instant,
    /// Taken by a call that has not finished yet.
    held: bool,
}

/// Sessions in this process's memory: the embedded default. Expired entries are swept by a
/// background task so memory stays bounded by the live sessions.
#[derive(Default)]
pub struct MemoryCvcStore {
    entries: Mutex<HashMap<Uuid, MemoryEntry>>,
}

impl MemoryCvcStore {
    /// A store with its sweeper running every `interval` until the returned store is dropped.
    pub fn start(interval: Duration) -> Arc<Self> {
        let store = Arc::new(Self::default());
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(store) => store.sweep(Instant::now()),
                    None => break,
                }
            }
        });
        store
    }

    fn sweep(&self, now: Instant) {
        self.lock().retain(|_, entry| entry.expires_at > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, MemoryEntry>> {
        // A poisoned lock only means another thread panicked mid-update of a map of plain data.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CvcStore for MemoryCvcStore {
    async fn put(&self, id: Uuid, session: StoredSession, ttl: Duration) -> Result<(), CvcError> {
        let expires_at = Instant::now() + ttl;
        self.lock().insert(
            id,
            MemoryEntry {
                session,
                expires_at,
                held: false,
            },
        );
        Ok(())
    }

    async fn take(&self, id: Uuid, project_id: &str) -> Result<Option<StoredSession>, CvcError> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&id) else {
            return Ok(None);
        };
        if entry.session.project_id != project_id || entry.held {
            return Ok(None);
        }
        if entry.expires_at <= Instant::now() {
            entries.remove(&id);
            return Ok(None);
        }
        entry.held = !entry.session.reusable;
        Ok(Some(entry.session.clone()))
    }

    async fn release(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        if let Some(entry) = self.lock().get_mut(&id)
            && entry.session.project_id == project_id
        {
            entry.held = false;
        }
        Ok(())
    }

    async fn consume(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        let mut entries = self.lock();
        if entries
            .get(&id)
            .is_some_and(|e| e.session.project_id == project_id)
        {
            entries.remove(&id);
        }
        Ok(())
    }

    async fn delete(&self, id: Uuid, project_id: &str) -> Result<bool, CvcError> {
        let mut entries = self.lock();
        match entries.get(&id) {
            Some(entry) if entry.session.project_id == project_id => {
                let alive = entry.expires_at > Instant::now();
                entries.remove(&id);
                Ok(alive)
            }
            _ => Ok(false),
        }
    }
}
