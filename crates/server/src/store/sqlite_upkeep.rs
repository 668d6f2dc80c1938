//! Upkeep of the embedded SQLite database while the vault runs: a watch on its files (see
//! [`SqliteFiles`]) and a bound on its write-ahead log.
//!
//! The log grows while readers keep a checkpoint from finishing (a burst of writes under
//! steady reads), and SQLite never gives the space back by itself. `journal_size_limit` trims
//! it at the next restart of the log; when the log is over that limit and fully copied back
//! into the database, a `TRUNCATE` checkpoint empties it. That checkpoint waits for readers
//! only briefly, so writers are never held up for long: if it cannot finish, the next round
//! tries again.
//!
//! Under a steady stream of writes (an audit record a call) a passive checkpoint never
//! catches up: it copies the log as it found it, and commits land while it syncs and copies,
//! so at no moment is the log fully copied back and SQLite never starts it over. It then only
//! grows, into new blocks the filesystem must allocate, until the bound truncates it; on ext4
//! both the allocation (at write-back) and the truncation hold the file's block-map lock that
//! the next commit's write needs, and a commit on a serving thread stalled every call of that
//! thread for milliseconds (docs/benchmarks.md, issue 17, seventh step). So once the log has
//! grown to a few MiB, a checkpoint ends with a second one that copies what was committed
//! during the first, with the process's inline writes held back (their turn, see
//! `sql::direct`; awaited, so no thread blocks).
//! Unless another connection wrote meanwhile or a reader still needs older frames, the log is
//! then fully copied, and the next write starts it over at its beginning, over blocks the file
//! already has (that write also syncs the log's new header, as SQLite does at every restart).
//!
//! One connection is held open for the store's lifetime (the "keeper"): it runs checkpoints and
//! readiness probes, and, since SQLite deletes the log and shared-memory files when the last
//! connection closes, it keeps their identity stable for the file watch.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{AnyConnection, Executor, Row};
use tokio::sync::{Mutex, Semaphore};

use super::StoreError;
use super::sqlite_files::SqliteFiles;

/// How often the files are checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Checkpoints are considered every this many watch rounds (once a second).
const CHECKPOINT_EVERY: u32 = 4;
/// The write-ahead log is kept under about this size (`journal_size_limit`, and the size past
/// which an idle log is emptied).
pub const WAL_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// The second part of a checkpoint (with the inline writes held back) runs only once the log
/// holds this many frames (4 MiB of 4 KiB pages). Each hold stalls every call's audit commit
/// for the checkpoint's two syncs (1–3 ms at 1,000 req/s on the benchmark's disk, up to
/// `HELD_CHECKPOINT_LIMIT`); held at every round, four times a second, that was about 1 % of
/// the time at 1,000 req/s, where the calls' p99 is (docs/benchmarks.md, issue 17, twelfth
/// step). Under a heavy stream of writes the log passes it within a round, and every round
/// holds, as before.
pub(in crate::store) const HOLD_FROM_FRAMES: i64 = 1024;
/// How long the inline writes are held back for a checkpoint's second part at most: it
/// normally takes about a millisecond (a few frames' copy and two syncs); a disk that stalls
/// must not hold every call's audit commit with it.
const HELD_CHECKPOINT_LIMIT: Duration = Duration::from_millis(20);
/// How long a truncating checkpoint waits for readers (holding writers up meanwhile) before
/// giving up until the next round.
const SHORT_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10";
/// The busy timeout every connection uses otherwise (as in `SQLITE_PRAGMAS`).
const USUAL_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

pub struct SqliteUpkeep {
    pub files: SqliteFiles,
    keeper: Mutex<AnyConnection>,
    /// The process's inline writes' turn (see `sql::direct`), taken to finish a checkpoint.
    inline_writes: Arc<Semaphore>,
    /// Tests that run checkpoints themselves pause the watch's, which would race theirs.
    #[cfg(test)]
    pub(in crate::store) watch_paused: std::sync::atomic::AtomicBool,
    /// Tests of the hold itself lift [`HELD_CHECKPOINT_LIMIT`], which a slow disk's syncs
    /// would otherwise reach.
    #[cfg(test)]
    pub(in crate::store) hold_without_limit: std::sync::atomic::AtomicBool,
}

impl SqliteUpkeep {
    /// Holds `keeper` open, records the files' identity and starts the watch, which ends when
    /// the returned value is dropped. `inline_writes` is the turn the process's own writes take
    /// (one permit).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database file cannot be read.
    pub fn start(
        database: &std::path::Path,
        keeper: AnyConnection,
        inline_writes: Arc<Semaphore>,
    ) -> Result<Arc<Self>, StoreError> {
        let files = SqliteFiles::record(database).map_err(StoreError::FileIo)?;
        let upkeep = Arc::new(Self {
            files,
            keeper: Mutex::new(keeper),
            inline_writes,
            #[cfg(test)]
            watch_paused: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            hold_without_limit: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(watch(Arc::downgrade(&upkeep)));
        Ok(upkeep)
    }

    /// A real write, through the keeper: proof that the database takes writes now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the files are not right or the write fails.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        self.files.check().map_err(StoreError::Files)?;
        let mut keeper = self.keeper.lock().await;
        sqlx::query(super::sql::PROBE_WRITE)
            .bind(super::now_unix())
            .execute(&mut *keeper)
            .await?;
        drop(keeper);
        self.files.after_write().map_err(StoreError::Files)
    }

    /// Copies the log back into the database, every watch round, off the request path: a
    /// passive checkpoint, so writers and readers go on meanwhile (the pool's connections do
    /// not checkpoint: `wal_autocheckpoint = 0`). Once the log holds [`HOLD_FROM_FRAMES`], a
    /// second one then copies what was committed during the first, with the inline writes held
    /// back, so that the log is fully copied and starts over (see the module's comment). The
    /// first did the bulk: the second copies a few frames and syncs the log and the database
    /// file, and past [`HELD_CHECKPOINT_LIMIT`] the writes go on while it finishes on the
    /// keeper's thread, as the first did.
    pub(in crate::store) async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if self.files.wal_bytes() == 0 || !self.files.writes_ok() {
            return Ok(());
        }
        let mut keeper = self.keeper.lock().await;
        let first = passive_checkpoint(&mut keeper).await?;
        if first.frames < HOLD_FROM_FRAMES {
            // Still short (or another connection was checkpointing): not worth a stall yet.
            return Ok(());
        }
        // The semaphore is never closed; if it were, this would only finish without the turn.
        let _turn = self.inline_writes.acquire().await;
        match tokio::time::timeout(
            self.held_checkpoint_limit(),
            passive_checkpoint(&mut keeper),
        )
        .await
        {
            Ok(done) => done.map(|_| ()),
            Err(_held_too_long) => Ok(()),
        }
    }

    fn held_checkpoint_limit(&self) -> Duration {
        #[cfg(test)]
        if self
            .hold_without_limit
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Duration::from_secs(60);
        }
        HELD_CHECKPOINT_LIMIT
    }

    /// Empties the log if it is over the limit and fully copied back; a no-op otherwise.
    async fn bound_wal(&self) -> Result<(), sqlx::Error> {
        if self.files.wal_bytes() <= WAL_LIMIT_BYTES || !self.files.writes_ok() {
            return Ok(());
        }
        let mut keeper = self.keeper.lock().await;
        if !passive_checkpoint(&mut keeper).await?.copied_whole {
            return Ok(());
        }
        keeper.execute(SHORT_BUSY_TIMEOUT).await?;
        let truncated = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *keeper)
            .await;
        keeper.execute(USUAL_BUSY_TIMEOUT).await?;
        truncated.map(|_| ())
    }
}

/// What a passive checkpoint did.
struct Checkpointed {
    /// It copied back the whole log as it was when it began (not when another connection held
    /// the checkpoint: SQLite then answers busy, with -1 for both counts). Commits that landed
    /// meanwhile may still be in the log only.
    copied_whole: bool,
    /// The frames in the log since it last started over, when it began (-1 when busy).
    frames: i64,
}

/// Runs a passive checkpoint on `keeper`.
async fn passive_checkpoint(keeper: &mut AnyConnection) -> Result<Checkpointed, sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *keeper)
        .await?;
    let (busy, log, copied): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(Checkpointed {
        copied_whole: busy == 0 && log == copied,
        frames: log,
    })
}

async fn watch(upkeep: Weak<SqliteUpkeep>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tick.tick().await;
        let Some(upkeep) = upkeep.upgrade() else {
            return;
        };
        #[cfg(test)]
        if upkeep
            .watch_paused
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            continue;
        }
        // A problem is logged by the check itself, once.
        let _ = upkeep.files.check();
        round = round.wrapping_add(1);
        if let Err(e) = upkeep.checkpoint().await {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
        if round.is_multiple_of(CHECKPOINT_EVERY)
            && let Err(e) = upkeep.bound_wal().await
        {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed");
        }
        drop(upkeep);
    }
}
