//! The SQL store, for both engines through sqlx's `Any` driver: SQLite (the embedded default,
//! one file in WAL mode) and PostgreSQL (shared by many stateless instances). The SQL is written
//! once in the dialect both accept (`$n` parameters, `ON CONFLICT`); each engine has its own
//! migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};

mod audit;
mod direct;
mod group;
mod idempotency;
mod keys;
mod marks;
mod portability;
mod queries;
mod rows;
mod stats;

use super::StoreError;
use super::sqlite_files::FileProblem;
use super::sqlite_upkeep::SqliteUpkeep;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Per-connection SQLite settings. Durability: WAL with `synchronous = NORMAL` survives a crash or
/// kill of the process (a token answered with 201 is never lost); an OS crash or power loss may
/// lose the last commits, never corrupt the file.
/// `journal_size_limit` trims the write-ahead log back to its bound whenever the log restarts
/// (see `sqlite_upkeep`). `secure_delete` zeroes the space a deleted or rewritten value leaves in
/// its page: without it, a deleted token's ciphertext stays readable in the file's free space.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = 16777216; PRAGMA secure_delete = ON;";

/// The `busy_timeout` of `SQLITE_PRAGMAS`: how long a writer waits for another's transaction.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5000;

/// Checkpoints are the keeper's (see `sqlite_upkeep`) on the connections that serve calls: run
/// inline, one would stall the commit that triggered it, and every call waiting on that commit,
/// for the write-back and its fsync.
const SQLITE_NO_INLINE_CHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 0;";

/// New-token groups written at once on PostgreSQL: one at a time would make a call wait for
/// the group ahead's commit (a log flush) even at low load; a few keep that wait away while
/// the pool's other connections serve the rest.
const NEW_TOKEN_GROUPS_IN_FLIGHT: usize = 4;

/// The readiness probe's write, the same on both engines.
pub(in crate::store) const PROBE_WRITE: &str = "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at";

/// Where the data lives. (`Debug` hides the PostgreSQL URL: it may carry a password.)
#[derive(Clone)]
pub enum Database {
    /// A SQLite file (created when asked).
    Sqlite(std::path::PathBuf),
    /// A `postgres://` URL (it may carry a password).
    Postgres {
        url: secrecy::SecretString,
        max_connections: u32,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres {
                max_connections, ..
            } => f
                .debug_struct("Postgres")
                .field("url", &"[redacted]")
                .field("max_connections", max_connections)
                .finish(),
        }
    }
}

pub struct SqlStore {
    pool: AnyPool,
    /// The embedded database's file watch and log bound; none on PostgreSQL.
    sqlite: Option<Arc<SqliteUpkeep>>,
    /// The embedded database's hot statements on the calling thread; none on PostgreSQL.
    direct: Option<Arc<direct::DirectSqlite>>,
    /// The connection a bulk import works on, taken from the pool at its first
    /// query and kept (see `portability`).
    porting: portability::Porting,
    /// New tokens on PostgreSQL, inserted in groups (see `group`).
    new_tokens: group::Group<(crate::store::TokenRecord, i64), Result<(), StoreError>>,
}

impl SqlStore {
    /// Connects and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or migrated.
    pub async fn open(database: &Database, create: bool) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (pool, migrator, sqlite, direct) = match database {
            Database::Sqlite(path) => {
                let url = sqlite_url(path, create);
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    // A local file does not drop a connection; the ping before each use would be
                    // one more round trip to the connection's thread on every query.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_PRAGMAS).await?;
                            conn.execute(SQLITE_NO_INLINE_CHECKPOINT).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                let mut keeper = sqlx::AnyConnection::connect(&sqlite_url(path, false)).await?;
                keeper.execute(SQLITE_PRAGMAS).await?;
                let upkeep = SqliteUpkeep::start(path, keeper)?;
                let direct = Arc::new(direct::DirectSqlite::new(path));
                (pool, &SQLITE_MIGRATIONS, Some(upkeep), Some(direct))
            }
            Database::Postgres {
                url,
                max_connections,
            } => {
                let pool = AnyPoolOptions::new()
                    .max_connections(*max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(secrecy::ExposeSecret::expose_secret(url))
                    .await?;
                (pool, &POSTGRES_MIGRATIONS, None, None)
            }
        };
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            sqlite,
            direct,
            porting: portability::Porting::default(),
            new_tokens: group::Group::new(NEW_TOKEN_GROUPS_IN_FLIGHT),
        })
    }

    /// Before a read: on SQLite, the files were right at the last check.
    fn before_read(&self) -> Result<(), StoreError> {
        match &self.sqlite {
            Some(upkeep) => upkeep.files.before_read().map_err(unavailable),
            None => Ok(()),
        }
    }

    /// Before a write: on SQLite, the files can be written.
    fn before_write(&self) -> Result<(), StoreError> {
        match &self.sqlite {
            Some(upkeep) => upkeep.files.before_write().map_err(unavailable),
            None => Ok(()),
        }
    }

    /// After a write: on SQLite, it landed in the files a restart will open. If not, the
    /// caller answers 503 instead of acknowledging something that is already lost.
    fn after_write(&self) -> Result<(), StoreError> {
        match &self.sqlite {
            Some(upkeep) => upkeep.files.after_write().map_err(unavailable),
            None => Ok(()),
        }
    }
}

fn unavailable(problem: FileProblem) -> StoreError {
    StoreError::Files(problem)
}

fn sqlite_url(path: &Path, create: bool) -> String {
    let mode = if create { "rwc" } else { "rw" };
    format!("sqlite://{}?mode={mode}", path.display())
}
