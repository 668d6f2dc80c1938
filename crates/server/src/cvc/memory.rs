//! Sessions in this process's memory: the embedded default.

use std::collections::{HashMap, VecDeque};
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

#[derive(Default)]
struct Sessions {
    entries: HashMap<Uuid, MemoryEntry>,
    /// Each project's reusable (test) sessions, oldest first, for the per-project cap.
    reusable: HashMap<String, VecDeque<Uuid>>,
}

impl Sessions {
    fn remove(&mut self, id: &Uuid) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        if entry.session.reusable
            && let Some(order) = self.reusable.get_mut(&entry.session.project_id)
        {
            order.retain(|other| other != id);
            if order.is_empty() {
                self.reusable.remove(&entry.session.project_id);
            }
        }
    }
}

/// Sessions in this process's memory: the embedded default. Expired entries are swept by a
/// background task, and a project keeps at most `max_reusable_per_project` test sessions (they
/// live a year), the oldest going first, so memory stays bounded.
pub struct MemoryCvcStore {
    sessions: Mutex<Sessions>,
    max_reusable_per_project: usize,
}

impl MemoryCvcStore {
    /// A store with its sweeper running every `interval` until the returned store is dropped.
    pub fn start(interval: Duration, max_reusable_per_project: usize) -> Arc<Self> {
        let store = Arc::new(Self {
            sessions: Mutex::new(Sessions::default()),
            max_reusable_per_project: max_reusable_per_project.max(1),
        });
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
        let mut sessions = self.lock();
        let expired: Vec<Uuid> = sessions
            .entries
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            sessions.remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A poisoned lock only means another thread panicked mid-update of a map of plain data.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CvcStore for MemoryCvcStore {
    async fn put(&self, id: Uuid, session: StoredSession, ttl: Duration) -> Result<(), CvcError> {
        let expires_at = Instant::now() + ttl;
        let mut sessions = self.lock();
        if session.reusable {
            let order = sessions
                .reusable
                .entry(session.project_id.clone())
                .or_default();
            order.push_back(id);
            let excess = order.len().saturating_sub(self.max_reusable_per_project);
            let evicted: Vec<Uuid> = order.drain(..excess).collect();
            for old in evicted {
                sessions.entries.remove(&old);
            }
        }
        sessions.entries.insert(
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
        let mut sessions = self.lock();
        let Some(entry) = sessions.entries.get_mut(&id) else {
            return Ok(None);
        };
        if entry.session.project_id != project_id || entry.held {
            return Ok(None);
        }
        if entry.expires_at <= Instant::now() {
            sessions.remove(&id);
            return Ok(None);
        }
        entry.held = !entry.session.reusable;
        Ok(Some(entry.session.clone()))
    }

    async fn release(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        if let Some(entry) = self.lock().entries.get_mut(&id)
            && entry.session.project_id == project_id
        {
            entry.held = false;
        }
        Ok(())
    }

    async fn consume(&self, id: Uuid, project_id: &str) -> Result<(), CvcError> {
        let mut sessions = self.lock();
        if sessions
            .entries
            .get(&id)
            .is_some_and(|e| e.session.project_id == project_id)
        {
            sessions.remove(&id);
        }
        Ok(())
    }

    async fn delete(&self, id: Uuid, project_id: &str) -> Result<bool, CvcError> {
        let mut sessions = self.lock();
        match sessions.entries.get(&id) {
            Some(entry) if entry.session.project_id == project_id => {
                let alive = entry.expires_at > Instant::now();
                sessions.remove(&id);
                Ok(alive)
            }
            _ => Ok(false),
        }
    }

    /// Expired sessions count until the next sweep (within a second).
    fn live_sessions(&self) -> Option<usize> {
        Some(self.len())
    }
}
