//! The audit log: who did what with which token, as a tamper-evident record.
//!
//! Every process that writes (a server instance, a CLI run) starts a chain of its own, so
//! instances never contend for one chain head. Within a process one writer task links and
//! commits records in groups: a call's record is committed before the call is answered, and
//! the calls in flight at once share one commit. When the log cannot be written, the call
//! fails with 503 instead of being answered unaudited.

pub mod chain;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use chain::{AuditRow, Break, Head};

use crate::crypto::Keyring;
use crate::store::{AuditStore, StoreError};

/// Records linked and committed together at most.
const MAX_GROUP: usize = 512;
/// Records waiting for the writer at most; past it a call waits for room.
const QUEUE: usize = 8192;

/// What happened, as a handler describes it (no chain fields yet).
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub request_id: String,
    pub project_id: String,
    pub application_id: String,
    pub action: &'static str,
    /// `ok`, or what went wrong (`refused`, `failed`, an HTTP status…).
    pub outcome: String,
    pub token: String,
    /// A JSON object with more about the event; never card data, keys or full URLs.
    pub detail: Value,
}

impl Entry {
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            outcome: "ok".to_owned(),
            detail: Value::Object(serde_json::Map::new()),
            ..Self::default()
        }
    }
}

/// The log could not be written; the call that needed it must not be answered as done.
#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be written")]
pub struct AuditUnavailable;

struct Pending {
    entry: Entry,
    done: oneshot::Sender<Result<(), AuditUnavailable>>,
}

/// A handle on this process's chain; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts a new chain (its first record says what started it) and its writer task.
    ///
    /// # Errors
    /// The store's, when the first record cannot be written.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        keyring: Arc<Keyring>,
        started_by: &'static str,
    ) -> Result<Self, StoreError> {
        let mut writer = Writer {
            store,
            keyring,
            chain: uuid::Uuid::now_v7().to_string(),
            seq: 0,
            prev: chain::GENESIS.to_vec(),
            resync: false,
        };
        let mut first = Entry::new("chain.start");
        first.detail =
            serde_json::json!({"started_by": started_by, "version": env!("CARGO_PKG_VERSION")});
        writer.commit(vec![first]).await?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(writer.run(receiver));
        Ok(Self { queue })
    }

    /// Records `entry`, returning once it is committed.
    ///
    /// # Errors
    /// [`AuditUnavailable`] when it could not be.
    pub async fn record(&self, entry: Entry) -> Result<(), AuditUnavailable> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending { entry, done })
            .await
            .map_err(|_| AuditUnavailable)?;
        committed.await.map_err(|_| AuditUnavailable)?
    }
}

struct Writer {
    store: Arc<dyn AuditStore>,
    keyring: Arc<Keyring>,
    chain: String,
    /// The last committed record's number and hash.
    seq: i64,
    prev: Vec<u8>,
    /// After a failed commit, whether it landed is unknown: read the head back first.
    resync: bool,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Pending>) {
        while let Some(first) = receiver.recv().await {
            // The first record's sender woke this task into its worker's next slot, so it would
            // commit that one record alone while the other calls ready to run wait behind it.
            // One turn at the back of the queue lets them add theirs: under load a group is
            // ~7 records instead of ~2 (docs/benchmarks.md), and a commit costs the same.
            tokio::task::yield_now().await;
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let (entries, waiting): (Vec<Entry>, Vec<_>) =
                group.into_iter().map(|p| (p.entry, p.done)).unzip();
            let outcome = match self.commit(entries).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "audit log write failed: the calls waiting on it answer 503");
                    Err(AuditUnavailable)
                }
            };
            for done in waiting {
                let _ = done.send(match &outcome {
                    Ok(()) => Ok(()),
                    Err(_) => Err(AuditUnavailable),
                });
            }
        }
    }

    async fn commit(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        if self.resync {
            if let Some((seq, hash)) = self.store.audit_head(&self.chain).await? {
                self.seq = seq;
                self.prev = hash;
            }
            self.resync = false;
        }
        let at_ms = crate::clock::now_unix_ms();
        let mut seq = self.seq;
        let mut prev = self.prev.clone();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            let mut row = AuditRow {
                id: 0,
                chain: self.chain.clone(),
                seq,
                at_ms,
                request_id: entry.request_id,
                project_id: entry.project_id,
                application_id: entry.application_id,
                action: entry.action.to_owned(),
                outcome: entry.outcome,
                token: entry.token,
                detail: entry.detail.to_string(),
                prev_hash: prev,
                hash: Vec::new(),
            };
            row.hash = chain::hash(&self.keyring, &row);
            prev = row.hash.clone();
            rows.push(row);
        }
        match self.store.append_audit(&rows).await {
            Ok(()) => {
                self.seq = seq;
                self.prev = prev;
                Ok(())
            }
            Err(e) => {
                self.resync = true;
                Err(e)
            }
        }
    }
}
