//! Data-key rotation: a new data key is added, made the one that seals new records on every
//! instance, and every record sealed with an older key is resealed with it, in batches, while
//! the vault keeps serving.
//!
//! The order keeps every record readable on every instance at every moment: the key is stored
//! inactive first and the job waits until every instance has loaded it (they reload the keys
//! every `settle`), then activates it and waits again so no instance still seals with the old
//! one, then reseals. A record is replaced only if it is still the one that was read, so a
//! record changed meanwhile (already sealed with the new key) is never overwritten.
//!
//! One job runs at a time (a lease row with a heartbeat). The target version is kept in that
//! row until every record uses it: a run stopped at any point (Ctrl-C, `kill -9`) resumes
//! where it was when run again, and never starts a second new key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::now_unix_ms;
use crate::crypto::{CryptoError, Keyring, Sealed, aad};
use crate::store::{KeyJob, SealedKind, SealedRecord, Store, StoreError};

/// The lease's name in `key_jobs`: one key job at a time (a rewrap takes it too).
pub(super) const JOB: &str = "rotation";
/// A holder silent this long is presumed dead (a heartbeat is written every batch and every
/// second of waiting).
const LEASE_MS: i64 = 15_000;
/// Passes over the records at most: a second one catches records sealed with the old key by an
/// instance that was slow to switch.
const MAX_PASSES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "another rotation is running ({owner}, last seen {seconds_ago} s ago); run this again when it has finished"
    )]
    AlreadyRunning { owner: String, seconds_ago: i64 },
    #[error("this run lost its lease to another rotation; stopped without changing more")]
    LeaseLost,
    #[error("stopped after {done} of {total} records; run the same command again to resume")]
    Stopped { done: u64, total: u64 },
    #[error("stopped while waiting for the instances; run the same command again to resume")]
    StoppedSettling,
    #[error(
        "{remaining} records are still sealed with older keys after {MAX_PASSES} passes; is an instance pinned with CARDVAULT_ACTIVE_KEY_VERSION?"
    )]
    Unfinished { remaining: u64 },
    #[error("{kind} {id} of project {project_id} does not open with key version {version}")]
    Unreadable {
        kind: &'static str,
        id: String,
        project_id: String,
        version: u32,
        #[source]
        source: CryptoError,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the job is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new data key version was stored (inactive).
    Added { version: u32 },
    /// A stopped rotation to `version` is being resumed.
    Resuming { version: u32 },
    /// Waiting `seconds` for every instance to load (`activating: false`) or to seal with
    /// (`true`) the new key.
    Settling {
        version: u32,
        activating: bool,
        seconds: u64,
    },
    /// Records resealed so far out of those that needed it.
    Resealed { done: u64, total: u64 },
}

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub version: u32,
    pub resealed: u64,
}

pub struct Rotation<'a> {
    pub store: Arc<dyn Store>,
    pub keyring: &'a Keyring,
    /// How long instances take to see a change of the stored keys (their cache TTL), plus a
    /// margin.
    pub settle: Duration,
    pub batch_size: u32,
    /// Set (by a signal) to stop after the batch in progress.
    pub stop: &'a AtomicBool,
}

impl Rotation<'_> {
    /// Runs the job (or resumes it) to the end.
    ///
    /// # Errors
    /// See [`RotationError`]; whatever was resealed stays resealed.
    pub async fn run(&self, progress: &mut dyn FnMut(&Progress)) -> Result<Rotated, RotationError> {
        let owner = claim(self.store.as_ref()).await?;
        let outcome = self.run_holding(&owner, progress).await;
        // Let go at once, so a rerun after Ctrl-C need not wait for the lease to lapse.
        let released = self.store.release_key_job(JOB, &owner).await;
        let rotated = outcome?;
        released?;
        Ok(rotated)
    }

    async fn run_holding(
        &self,
        owner: &str,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Rotated, RotationError> {
        let store = self.store.as_ref();
        let job = store.key_job(JOB).await?;
        let mut wrapped = store.data_keys().await?;
        let resumable = job
            .and_then(|j| j.target_version)
            .filter(|t| wrapped.iter().any(|k| k.version == *t));
        let version = match resumable {
            Some(version) => {
                progress(&Progress::Resuming { version });
                version
            }
            None => {
                let version = wrapped.iter().map(|k| k.version).max().unwrap_or(0) + 1;
                let mut key = self.keyring.new_data_key(version)?;
                key.active = false;
                store.insert_data_key(&key).await?;
                progress(&Progress::Added { version });
                version
            }
        };
        self.beat(owner, Some(version)).await?;
        wrapped = store.data_keys().await?;
        self.keyring.refresh(&wrapped)?;
        if !wrapped.iter().any(|k| k.version == version && k.active) {
            self.settle(owner, version, false, progress).await?;
            store.activate_data_key(version).await?;
            self.settle(owner, version, true, progress).await?;
        }

        let mut total = self.remaining(version).await?;
        let mut done = 0;
        progress(&Progress::Resealed { done, total });
        for pass in 1..=MAX_PASSES {
            let mut resealed_this_pass = 0;
            for kind in SealedKind::ALL {
                resealed_this_pass += self
                    .reseal_all(owner, kind, version, &mut done, &mut total, progress)
                    .await?;
            }
            let remaining = self.remaining(version).await?;
            if remaining == 0 {
                break;
            }
            if pass == MAX_PASSES {
                return Err(RotationError::Unfinished { remaining });
            }
            if resealed_this_pass == 0 {
                self.settle(owner, version, true, progress).await?;
            }
        }
        self.beat(owner, None).await?;
        Ok(Rotated {
            version,
            resealed: done,
        })
    }

    /// Reseals every record of `kind` not sealed with `version`; returns how many it replaced.
    async fn reseal_all(
        &self,
        owner: &str,
        kind: SealedKind,
        version: u32,
        done: &mut u64,
        total: &mut u64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<u64, RotationError> {
        let mut after = String::new();
        let mut replaced = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(RotationError::Stopped {
                    done: *done,
                    total: *total,
                });
            }
            let batch = self
                .store
                .sealed_batch(kind, version, &after, self.batch_size)
                .await?;
            let Some(last) = batch.last() else {
                return Ok(replaced);
            };
            after = cursor(kind, last);
            let resealed = batch
                .into_iter()
                .map(|record| {
                    let sealed = self.reseal_one(kind, &record, version)?;
                    Ok((record, sealed))
                })
                .collect::<Result<Vec<_>, RotationError>>()?;
            let writing = tokio::time::Instant::now();
            replaced += self.store.reseal(kind, &resealed).await?;
            // As long again without writing: on SQLite a batch holds the database's one write
            // lock, and the calls being served (their audit records) must get it in between.
            tokio::time::sleep(writing.elapsed()).await;
            *done += resealed.len() as u64;
            // Records sealed with the old key by a slow instance during the pass add to it.
            *total = (*total).max(*done);
            progress(&Progress::Resealed {
                done: *done,
                total: *total,
            });
            self.beat(owner, Some(version)).await?;
        }
    }

    fn reseal_one(
        &self,
        kind: SealedKind,
        record: &SealedRecord,
        version: u32,
    ) -> Result<Sealed, RotationError> {
        let aad = match kind {
            SealedKind::Token => aad::token(&record.project_id, &record.id),
            SealedKind::TlsClientKey => aad::tls_client_key(&record.project_id, &record.id),
        };
        let plain = self.keyring.open(&record.sealed, &aad).map_err(|source| {
            RotationError::Unreadable {
                kind: kind.as_str(),
                id: record.id.clone(),
                project_id: record.project_id.clone(),
                version: record.sealed.key_version,
                source,
            }
        })?;
        Ok(self.keyring.seal_with(version, &plain, &aad)?)
    }

    async fn remaining(&self, version: u32) -> Result<u64, RotationError> {
        Ok(self
            .store
            .sealed_counts()
            .await?
            .iter()
            .filter(|(_, v, _)| *v != version)
            .map(|(_, _, n)| n)
            .sum())
    }

    /// Waits for every instance to pick up the stored keys, showing life meanwhile.
    async fn settle(
        &self,
        owner: &str,
        version: u32,
        activating: bool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), RotationError> {
        progress(&Progress::Settling {
            version,
            activating,
            seconds: self.settle.as_secs_f64().ceil() as u64,
        });
        let until = tokio::time::Instant::now() + self.settle;
        while tokio::time::Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return Err(RotationError::StoppedSettling);
            }
            let left = until - tokio::time::Instant::now();
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            self.beat(owner, Some(version)).await?;
        }
        Ok(())
    }

    async fn beat(&self, owner: &str, target: Option<u32>) -> Result<(), RotationError> {
        if self
            .store
            .update_key_job(JOB, owner, now_unix_ms(), target)
            .await?
        {
            Ok(())
        } else {
            Err(RotationError::LeaseLost)
        }
    }
}

/// The job's current state, for `keys status`.
///
/// # Errors
/// The store's.
pub async fn job(store: &dyn Store) -> Result<Option<KeyJob>, StoreError> {
    store.key_job(JOB).await
}

/// Where the next batch starts: after this record.
fn cursor(kind: SealedKind, record: &SealedRecord) -> String {
    match kind {
        SealedKind::Token => record.id.clone(),
        SealedKind::TlsClientKey => format!("{} {}", record.project_id, record.id),
    }
}

/// Takes the lease, or says who holds it.
pub(super) async fn claim(store: &dyn Store) -> Result<String, RotationError> {
    let owner = format!(
        "{}:{}:{}",
        host_name(),
        std::process::id(),
        uuid::Uuid::now_v7()
    );
    let now = now_unix_ms();
    let seen = store.key_job(JOB).await?;
    if let Some(held) = seen.as_ref().filter(|j| !j.owner.is_empty())
        && !is_abandoned(held, now)
    {
        return Err(RotationError::AlreadyRunning {
            owner: held
                .owner
                .rsplit_once(':')
                .map_or(held.owner.clone(), |(who, _)| who.to_owned()),
            seconds_ago: (now - held.heartbeat_at_ms).max(0) / 1000,
        });
    }
    if store.claim_key_job(JOB, seen.as_ref(), &owner, now).await? {
        Ok(owner)
    } else {
        // Someone claimed it between our read and our write.
        Box::pin(claim(store)).await
    }
}

/// A lease is abandoned when its holder stopped showing life, or when it was a process of this
/// machine that is gone (killed), which need not be waited for.
fn is_abandoned(job: &KeyJob, now_ms: i64) -> bool {
    if now_ms - job.heartbeat_at_ms > LEASE_MS {
        return true;
    }
    let mut parts = job.owner.splitn(3, ':');
    match (
        parts.next(),
        parts.next().and_then(|p| p.parse::<u32>().ok()),
    ) {
        (Some(host), Some(pid)) if host == host_name() => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned())
}
