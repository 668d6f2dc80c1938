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
//! One connection is held open for the store's lifetime (the "keeper"): it runs checkpoints and
//! readiness probes, and, since SQLite deletes the log and shared-memory files when the last
//! connection closes, it keeps their identity stable for the file watch.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{AnyConnection, Executor, Row};
use tokio::sync::Mutex;

use super::StoreError;
use super::sqlite_files::SqliteFiles;

/// How often the files are checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Checkpoints are considered every this many watch rounds (once a second).
const CHECKPOINT_EVERY: u32 = 4;
/// The write-ahead log is kept under about this size (`journal_size_limit`, and the size past
/// which an idle log is emptied).
pub const WAL_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// How long a truncating checkpoint waits for readers (holding writers up meanwhile) before
/// giving up until the next round.
const SHORT_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10";
/// The busy timeout every connection uses otherwise (as in `SQLITE_PRAGMAS`).
const USUAL_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

pub struct SqliteUpkeep {
    pub files: SqliteFiles,
    keeper: Mutex<AnyConnection>,
}

impl SqliteUpkeep {
    /// Holds `keeper` open, records the files' identity and starts the watch, which ends when
    /// the returned value is dropped.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database file cannot be read.
    pub fn start(
        database: &std::path::Path,
        keeper: AnyConnection,
    ) -> Result<Arc<Self>, StoreError> {
        let files = SqliteFiles::record(database).map_err(StoreError::FileIo)?;
        let upkeep = Arc::new(Self {
            files,
            keeper: Mutex::new(keeper),
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
    /// not checkpoint: `wal_autocheckpoint = 0`).
    async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        if self.files.wal_bytes() == 0 || !self.files.writes_ok() {
            return Ok(());
        }
        let mut keeper = self.keeper.lock().await;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *keeper)
            .await
            .map(|_| ())
    }

    /// Empties the log if it is over the limit and fully copied back; a no-op otherwise.
    async fn bound_wal(&self) -> Result<(), sqlx::Error> {
        if self.files.wal_bytes() <= WAL_LIMIT_BYTES || !self.files.writes_ok() {
            return Ok(());
        }
        let mut keeper = self.keeper.lock().await;
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *keeper)
            .await?;
        let (log, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
        if log != copied {
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

async fn watch(upkeep: Weak<SqliteUpkeep>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tick.tick().await;
        let Some(upkeep) = upkeep.upgrade() else {
            return;
        };
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
