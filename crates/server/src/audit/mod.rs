//! The audit log: who did what with which token, as a tamper-evident record.
//!
//! Every process that writes (a server instance, a CLI run) starts a chain of its own, so
//! instances never contend for one chain head; a server whose calls run on serving threads
//! keeps one per thread (see `Chains`). A chain's writer task links and commits records in
//! groups: a call's record is committed before the call is answered, and the calls in flight
//! at once share one commit. When the log cannot be written, the call
//! fails with 503 instead of being answered unaudited.

pub mod chain;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use thread_local::ThreadLocal;
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
    /// More about the event; never card data, keys or full URLs.
    pub detail: Detail,
}

impl Entry {
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            outcome: "ok".to_owned(),
            ..Self::default()
        }
    }
}

/// An entry's detail, stored as a JSON object with its fields in the order they were first
/// set. A list rather than a map: a record has a handful of fields, which a map's hashing and
/// owned keys made ~1.5 % of a proxy call's instructions (docs/benchmarks.md, issue 17).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail(Vec<(Cow<'static, str>, Value)>);

impl Detail {
    /// Sets `key`, in its place if it was set before.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((Cow::Borrowed(key), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The fields of a JSON object (the CLI's details); anything else is kept whole under
    /// `value`.
    pub fn from_json(value: Value) -> Self {
        match value {
            Value::Object(fields) => Self(
                fields
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), v))
                    .collect(),
            ),
            other => Self(vec![(Cow::Borrowed("value"), other)]),
        }
    }
}

impl Serialize for Detail {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
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

/// A handle on this process's chains; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    chains: Arc<Chains>,
}

/// The process's chain, or with [`ChainPerThread`] a chain per thread that records, each with
/// its writer task on that thread: a call's record is linked and committed where the call
/// runs, without waking another thread (on a serving thread, see [`crate::serving_threads`], a
/// hand-off to a writer elsewhere was two wake-ups per call). Chains are independent by design
/// (one per process already), and `verify` checks them all.
struct Chains {
    store: Arc<dyn AuditStore>,
    keyring: Arc<Keyring>,
    started_by: &'static str,
    queues: Queues,
}

/// Where each thread's records go.
enum Queues {
    /// The writer queue of the process's one chain.
    One(mpsc::Sender<Pending>),
    /// The writer queue of each thread's chain; replaced if its writer is gone (its runtime
    /// stopped).
    PerThread(Box<ThreadLocal<RefCell<Option<mpsc::Sender<Pending>>>>>),
}

impl AuditLog {
    /// Starts a chain (its first record says what started it) and its writer task; with
    /// [`ChainPerThread`]`(true)` it is this thread's, and other threads start theirs when they
    /// first record.
    ///
    /// # Errors
    /// The store's, when the first record cannot be written: a log that cannot be written
    /// stops the process from starting.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        keyring: Arc<Keyring>,
        started_by: &'static str,
        ChainPerThread(per_thread): ChainPerThread,
    ) -> Result<Self, StoreError> {
        let mut writer = new_writer(&store, &keyring, started_by);
        writer.commit(Vec::new()).await?;
        let first = spawn_writer(writer);
        let queues = if per_thread {
            let queues = ThreadLocal::new();
            queues.get_or(|| RefCell::new(Some(first)));
            Queues::PerThread(Box::new(queues))
        } else {
            Queues::One(first)
        };
        Ok(Self {
            chains: Arc::new(Chains {
                store,
                keyring,
                started_by,
                queues,
            }),
        })
    }

    /// Records `entry`, returning once it is committed.
    ///
    /// # Errors
    /// [`AuditUnavailable`] when it could not be.
    pub async fn record(&self, mut entry: Entry) -> Result<(), AuditUnavailable> {
        // A token as the caller named it may hold anything; a control character (a NUL, which
        // PostgreSQL's text refuses) would fail the whole group's commit, every other call's
        // record with it.
        if entry.token.contains(char::is_control) {
            entry.token = entry.token.replace(char::is_control, "\u{FFFD}");
        }
        let (done, committed) = oneshot::channel();
        let queue = self.chains.queue_here();
        queue
            .send(Pending { entry, done })
            .await
            .map_err(|_| AuditUnavailable)?;
        committed.await.map_err(|_| AuditUnavailable)?
    }
}

/// Whether each thread that records keeps a chain of its own (serving threads) or the process
/// keeps one.
#[derive(Debug, Clone, Copy)]
pub struct ChainPerThread(pub bool);

/// A writer for a new chain, whose first commit starts with the `chain.start` record.
fn new_writer(
    store: &Arc<dyn AuditStore>,
    keyring: &Arc<Keyring>,
    started_by: &'static str,
) -> Writer {
    let mut first = Entry::new("chain.start");
    first.detail.set("started_by", started_by);
    first.detail.set("version", env!("CARGO_PKG_VERSION"));
    Writer {
        store: store.clone(),
        keyring: keyring.clone(),
        chain: uuid::Uuid::now_v7().to_string(),
        seq: 0,
        prev: chain::GENESIS.to_vec(),
        resync: false,
        start: Some(first),
    }
}

/// Runs `writer` on this thread's runtime; its queue.
fn spawn_writer(writer: Writer) -> mpsc::Sender<Pending> {
    let (queue, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(writer.run(receiver));
    queue
}

impl Chains {
    /// The queue of the chain this thread records into; with a chain per thread, this
    /// thread's chain is started if it has none (or its writer is gone: its runtime stopped).
    fn queue_here(&self) -> mpsc::Sender<Pending> {
        let queues = match &self.queues {
            Queues::One(queue) => return queue.clone(),
            Queues::PerThread(queues) => queues,
        };
        let slot = queues.get_or(|| RefCell::new(None));
        let live = slot
            .borrow()
            .as_ref()
            .filter(|queue| !queue.is_closed())
            .cloned();
        live.unwrap_or_else(|| {
            let queue = spawn_writer(new_writer(&self.store, &self.keyring, self.started_by));
            *slot.borrow_mut() = Some(queue.clone());
            queue
        })
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
    /// The chain's first record, until it is committed (with the first group).
    start: Option<Entry>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Pending>) {
        while let Some(first) = receiver.recv().await {
            // No turn is given up to gather more: a serving thread's runtime queues this task,
            // woken by the first record, behind the calls already ready to run, which add theirs
            // first. (The multi-threaded runtime runs it next, so the one chain of a CLI run
            // commits smaller groups; a yield here cost the serving threads a poll of the
            // reactor and gained nothing: docs/benchmarks.md, issue 17's twelfth step.)
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

    async fn commit(&mut self, mut entries: Vec<Entry>) -> Result<(), StoreError> {
        if self.resync {
            if let Some((seq, hash)) = self.store.audit_head(&self.chain).await? {
                self.seq = seq;
                self.prev = hash;
                // The chain has records: its first, at least, did land.
                self.start = None;
            }
            self.resync = false;
        }
        if let Some(start) = &self.start {
            entries.insert(0, start.clone());
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
                // Written straight into a string: `to_string` goes through `Display`'s
                // formatter, piece by piece (the same text, 3,500 instructions a record more).
                detail: serde_json::to_string(&entry.detail).unwrap_or_else(|_| "{}".to_owned()),
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
                self.start = None;
                Ok(())
            }
            Err(e) => {
                self.resync = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::{AuditLog, ChainPerThread, Entry, chain};
    use crate::crypto::{Keyring, MasterKey};
    use crate::serving_threads::ServingThreads;
    use crate::store::{AuditFilter, AuditStore, Database, SqlStore};

    #[test]
    fn a_detail_is_written_as_the_json_object_a_map_set_the_same_way_would_be() {
        let mut detail = super::Detail::default();
        let mut map = serde_json::Map::new();
        for (key, value) in [
            ("host", serde_json::json!("api.example.com")),
            ("request_sent", serde_json::json!(false)),
            ("fields", serde_json::json!(["a", "b\"c"])),
            ("request_sent", serde_json::json!(true)),
            ("latency_ms", serde_json::json!(12)),
        ] {
            detail.set(key, value.clone());
            map.insert(key.to_owned(), value);
        }
        assert_eq!(
            serde_json::to_string(&detail).unwrap(),
            r#"{"host":"api.example.com","request_sent":true,"fields":["a","b\"c"],"latency_ms":12}"#
        );
        assert_eq!(
            serde_json::to_string(&detail).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(detail.get("request_sent"), Some(&serde_json::json!(true)));
        assert_eq!(detail.get("absent"), None);
        assert_eq!(
            serde_json::to_string(&super::Detail::default()).unwrap(),
            "{}"
        );

        let cli = super::Detail::from_json(serde_json::json!({"version": 2, "to": "hsm"}));
        assert_eq!(
            serde_json::to_string(&cli).unwrap(),
            r#"{"version":2,"to":"hsm"}"#
        );
    }

    fn keyring() -> Arc<Keyring> {
        let master = MasterKey::generate().unwrap();
        let wrapped = Keyring::wrap_new_data_key(&master, 1).unwrap();
        Arc::new(Keyring::new(&master, &[wrapped]).unwrap())
    }

    fn entry(request_id: &str) -> Entry {
        let mut entry = Entry::new("proxy");
        request_id.clone_into(&mut entry.request_id);
        entry
    }

    /// The chains in the store, each as its records' (action, request id) in order.
    async fn chains(
        store: &SqlStore,
        keyring: &Keyring,
    ) -> BTreeMap<String, Vec<(String, String)>> {
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let rows = store.audit_records(&filter).await.unwrap();
        chain::verify(keyring, &rows, &[]).unwrap();
        let mut chains: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let mut sorted = rows;
        sorted.sort_by_key(|r| (r.chain.clone(), r.seq));
        for row in sorted {
            chains
                .entry(row.chain)
                .or_default()
                .push((row.action, row.request_id));
        }
        chains
    }

    /// A log on a new SQLite store (kept in the returned directory).
    async fn new_log(
        per_thread: bool,
    ) -> (tempfile::TempDir, Arc<SqlStore>, Arc<Keyring>, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqlStore::open(&Database::Sqlite(dir.path().join("v.db")), true)
                .await
                .unwrap(),
        );
        let keyring = keyring();
        let log = AuditLog::start(
            store.clone(),
            keyring.clone(),
            "test",
            ChainPerThread(per_thread),
        )
        .await
        .unwrap();
        (dir, store, keyring, log)
    }

    /// Records `served-0` … `served-{calls - 1}` from two serving threads, then stops them.
    async fn record_on_serving_threads(log: &AuditLog, calls: usize) {
        let threads = ServingThreads::start(2).unwrap();
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..calls {
            let log = log.clone();
            let done = done.clone();
            threads.spawn(async move {
                log.record(entry(&format!("served-{n}"))).await.unwrap();
                done.send(()).unwrap();
            });
        }
        for _ in 0..calls {
            finished.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn each_thread_records_into_a_chain_of_its_own_and_every_chain_verifies() {
        let (_dir, store, keyring, log) = new_log(true).await;
        log.record(entry("here")).await.unwrap();
        record_on_serving_threads(&log, 6).await;

        // A thread whose runtime is gone (its writer with it) starts a new chain on the next.
        let again = log.clone();
        std::thread::spawn(move || {
            for n in 0..2 {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime
                    .block_on(again.record(entry(&format!("runtime-{n}"))))
                    .unwrap();
            }
        })
        .join()
        .unwrap();

        let chains = chains(&store, &keyring).await;
        // This thread's, two serving threads', and one per runtime of the last thread.
        assert_eq!(chains.len(), 5, "{chains:?}");
        let mut served = Vec::new();
        for records in chains.values() {
            assert_eq!(records[0].0, "chain.start", "{records:?}");
            let ids: Vec<&str> = records[1..].iter().map(|r| r.1.as_str()).collect();
            if ids.iter().any(|id| id.starts_with("served-")) {
                assert!(ids.iter().all(|id| id.starts_with("served-")), "{ids:?}");
                served.extend(ids);
            } else {
                assert!(
                    ids == ["here"] || ids == ["runtime-0"] || ids == ["runtime-1"],
                    "{ids:?}"
                );
            }
        }
        served.sort_unstable();
        assert_eq!(
            served,
            [
                "served-0", "served-1", "served-2", "served-3", "served-4", "served-5"
            ]
        );
    }

    #[tokio::test]
    async fn a_record_whose_number_appears_twice_breaks_the_chain() {
        let (_dir, store, keyring, log) = new_log(false).await;
        for n in 0..3 {
            log.record(entry(&format!("call-{n}"))).await.unwrap();
        }
        let filter = AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        };
        let rows = store.audit_records(&filter).await.unwrap();
        assert!(chain::verify(&keyring, &rows, &[]).is_ok());
        // The store no longer refuses a repeated (chain, seq) on SQLite: verify must.
        let copied = rows.iter().find(|r| r.seq == 2).unwrap().clone();
        store.append_audit(&[copied]).await.unwrap();
        let rows = store.audit_records(&filter).await.unwrap();
        let broken = chain::verify(&keyring, &rows, &[]).unwrap_err();
        assert_eq!(broken.reason, "a record with this number appears twice");
        assert_eq!(broken.seq, 2);
    }

    #[tokio::test]
    async fn without_a_chain_per_thread_every_thread_records_into_the_one_chain() {
        let (_dir, store, keyring, log) = new_log(false).await;
        record_on_serving_threads(&log, 4).await;
        log.record(entry("here")).await.unwrap();
        let chains = chains(&store, &keyring).await;
        assert_eq!(chains.len(), 1, "{chains:?}");
        assert_eq!(chains.values().next().unwrap().len(), 6);
    }
}
