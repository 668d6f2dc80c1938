//! The SQL store, for both engines through sqlx's `Any` driver: SQLite (the embedded default,
//! one file in WAL mode) and PostgreSQL (shared by many stateless instances). The SQL is written
//! once in the dialect both accept (`$n` parameters, `ON CONFLICT`); each engine has its own
//! migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

mod audit;
mod direct;
mod group;
mod idempotency;
mod kept;
mod keys;
mod marks;
mod portability;
mod queries;
mod rows;
#[cfg(test)]
mod scratch_postgres;
mod stats;

use super::StoreError;
use super::sqlite_files::FileProblem;
use super::sqlite_upkeep::SqliteUpkeep;
use crate::serving_threads::OnePerServingThread;

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

/// Groups (new tokens, token reads) sent at once on PostgreSQL: one at a time would make a
/// call wait for the group ahead (a new token's commit, a log flush) even at low load; a few
/// keep that wait away while the pool's other connections serve the rest.
const GROUPS_IN_FLIGHT: usize = 4;

/// Of those, token reads' groups in flight at once at most: while this many are out, the reads
/// that arrive share the next statement (one round trip and one wake-up of a backend for all
/// of them); more leaders make more, smaller groups.
const TOKEN_READ_LEADERS: usize = 2;

/// The fewest connections a serving thread's PostgreSQL pool is given (see
/// `connections_per_pool`).
const MIN_CONNECTIONS_PER_POOL: u32 = 2;

/// The embedded database's pool (sqlx's, for statements off the serving threads' own
/// connections: see `direct`).
const SQLITE_MAX_CONNECTIONS: u32 = 8;

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
        /// The serving threads calls are served on (0: none, every call on the shared
        /// runtime); each gets a pool of its own (see [`SqlStore::pool`]).
        serving_threads: usize,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres {
                max_connections,
                serving_threads,
                ..
            } => f
                .debug_struct("Postgres")
                .field("url", &"[redacted]")
                .field("max_connections", max_connections)
                .field("serving_threads", serving_threads)
                .finish(),
        }
    }
}

pub struct SqlStore {
    /// On PostgreSQL with serving threads, one pool for each (see [`Self::pool`]), with the
    /// connections kept out of it for the statements every call makes (see `kept`).
    pools: OnePerServingThread<Connections>,
    /// The most connections all the pools together open.
    max_connections_total: u32,
    /// The embedded database's file watch and log bound; none on PostgreSQL.
    sqlite: Option<Arc<SqliteUpkeep>>,
    /// The embedded database's hot statements on the calling thread; none on PostgreSQL.
    direct: Option<Arc<direct::DirectSqlite>>,
    /// The connection a bulk import works on, taken from the pool at its first
    /// query and kept (see `portability`).
    porting: portability::Porting,
    /// New tokens and token reads on PostgreSQL, written and read in groups (see `group`), a
    /// queue of each for each serving thread (so a group's calls and its statement stay on
    /// one thread).
    groups: OnePerServingThread<Groups>,
}

/// A thread's (or the process's) pool, and the connections kept out of it on PostgreSQL for
/// the statements every call makes.
struct Connections {
    pool: AnyPool,
    kept: Arc<kept::KeptConnections>,
}

impl Connections {
    /// On PostgreSQL, some of the pool's connections kept (see [`kept_for`]).
    fn postgres(pool: AnyPool) -> Self {
        let max_kept = kept_for(pool.options().get_max_connections());
        Self {
            kept: kept::KeptConnections::new(pool.clone(), max_kept),
            pool,
        }
    }

    /// On SQLite, whose statements on the serving threads go on connections of their own
    /// (see `direct`), none kept.
    fn sqlite(pool: AnyPool) -> Self {
        Self {
            kept: kept::KeptConnections::new(pool.clone(), 0),
            pool,
        }
    }
}

/// Kept connections for a pool of `pool_size`, for the groups' leaders (see [`leaders_for`])
/// and the audit log's appends, whichever takes one first: a proxy call's two token-read
/// leaders and the audit log need three. The pool keeps two for its other statements
/// (idempotency keys, deletions, the fallbacks), one if it has only two; a pool of one keeps
/// none.
fn kept_for(pool_size: u32) -> usize {
    match usize::try_from(pool_size).unwrap_or(usize::MAX) {
        0 | 1 => 0,
        size => size.saturating_sub(2).clamp(1, GROUPS_IN_FLIGHT),
    }
}

/// The groups' leaders for a pool of `pool_size` connections (see [`GROUPS_IN_FLIGHT`]): they
/// leave the pool one connection for its other statements.
fn leaders_for(pool_size: u32) -> usize {
    usize::try_from(pool_size.saturating_sub(1))
        .unwrap_or(1)
        .clamp(1, GROUPS_IN_FLIGHT)
}

/// A thread's (or the process's) groups on PostgreSQL. New tokens and token reads take turns
/// from one set of leaders, so that their groups together hold no more connections than that;
/// token reads hold at most [`TOKEN_READ_LEADERS`] of them.
struct Groups {
    new_tokens: group::Group<(crate::store::TokenRecord, i64), Result<(), StoreError>>,
    /// A token read by project and id, and its answer: the reads of the calls in flight at
    /// once go as one statement.
    token_reads: group::Group<(String, String), Result<crate::store::TokenRecord, StoreError>>,
}

impl Groups {
    fn new(leaders: usize) -> Self {
        let turn = Arc::new(tokio::sync::Semaphore::new(leaders));
        Self {
            new_tokens: group::Group::sharing_turn(turn.clone()),
            token_reads: group::Group::sharing_turn(turn).at_most(TOKEN_READ_LEADERS),
        }
    }
}

impl SqlStore {
    /// Connects and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or migrated.
    pub async fn open(database: &Database, create: bool) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut max_connections_total = SQLITE_MAX_CONNECTIONS;
        let (pool, migrator, sqlite, direct, per_thread) = match database {
            Database::Sqlite(path) => {
                let url = sqlite_url(path, create);
                let pool = AnyPoolOptions::new()
                    .max_connections(SQLITE_MAX_CONNECTIONS)
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
                let direct = Arc::new(direct::DirectSqlite::new(path));
                let upkeep = SqliteUpkeep::start(path, keeper, direct.inline_turn())?;
                (pool, &SQLITE_MIGRATIONS, Some(upkeep), Some(direct), None)
            }
            Database::Postgres {
                url,
                max_connections,
                serving_threads,
            } => {
                let each = connections_per_pool(*max_connections, *serving_threads);
                if each.is_none() && *serving_threads > 0 {
                    tracing::info!(
                        max_connections,
                        serving_threads,
                        "PostgreSQL: too few connections for a pool per serving thread \
                         ({MIN_CONNECTIONS_PER_POOL} each); the serving threads share one pool"
                    );
                }
                let options = postgres_pool_options(each.unwrap_or(*max_connections));
                let pools = each.map_or(1, |_| {
                    u32::try_from(*serving_threads + 1).unwrap_or(u32::MAX)
                });
                max_connections_total = options.get_max_connections().saturating_mul(pools);
                let connect =
                    AnyConnectOptions::from_str(secrecy::ExposeSecret::expose_secret(url))?;
                let pool = options.clone().connect_with(connect.clone()).await?;
                let per_thread = each.map(|_| (options, connect));
                (pool, &POSTGRES_MIGRATIONS, None, None, per_thread)
            }
        };
        migrator.run(&pool).await?;
        let leaders = leaders_for(pool.options().get_max_connections());
        let (pools, groups) = match per_thread {
            Some((options, connect)) => (
                OnePerServingThread::per_thread(Connections::postgres(pool), move || {
                    Connections::postgres(options.clone().connect_lazy_with(connect.clone()))
                }),
                // Every pool has the same size.
                OnePerServingThread::per_thread(Groups::new(leaders), move || Groups::new(leaders)),
            ),
            None => {
                let connections = if sqlite.is_some() {
                    Connections::sqlite(pool)
                } else {
                    Connections::postgres(pool)
                };
                (
                    OnePerServingThread::shared(connections),
                    OnePerServingThread::shared(Groups::new(leaders)),
                )
            }
        };
        Ok(Self {
            pools,
            max_connections_total,
            sqlite,
            direct,
            porting: portability::Porting::default(),
            groups,
        })
    }

    /// The pool the calling thread uses: on a serving thread (PostgreSQL) its own, opened on
    /// first use; elsewhere the shared one.
    fn pool(&self) -> &AnyPool {
        &self.pools.get().pool
    }

    /// The calling thread's kept connections (see `kept`).
    fn kept(&self) -> &Arc<kept::KeptConnections> {
        &self.pools.get().kept
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

/// The PostgreSQL pool's settings. With serving threads, `max_connections` is shared out:
/// each serving thread's pool and the shared one (background work) get an equal part, at
/// least two each.
fn postgres_pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
    // sqlx's default stays: every connection is pinged before it is handed out, one more
    // round trip a statement (~10 % of the throughput on PostgreSQL, docs/benchmarks.md,
    // issue 17). Without it, the first statement on a connection the server dropped (a
    // restart, a failover, an idle timeout) fails its call with a 503 instead of being
    // replaced unseen (`scale_out::dropped_database_connections_are_replaced`); pinging only
    // connections idle for a second or more was tried and fails that test (nineteenth step).
}

/// With serving threads, `max_connections` is shared out: each serving thread's pool and the
/// shared one (background work) get an equal part. `None` when that leaves a pool fewer than
/// [`MIN_CONNECTIONS_PER_POOL`]: then every thread shares the one pool (calls cross threads for
/// their statements, but the setting stays a maximum).
fn connections_per_pool(max_connections: u32, serving_threads: usize) -> Option<u32> {
    if serving_threads == 0 {
        return None;
    }
    let pools = u32::try_from(serving_threads)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    Some(max_connections / pools).filter(|each| *each >= MIN_CONNECTIONS_PER_POOL)
}

fn unavailable(problem: FileProblem) -> StoreError {
    StoreError::Files(problem)
}

fn sqlite_url(path: &Path, create: bool) -> String {
    let mode = if create { "rwc" } else { "rw" };
    format!("sqlite://{}?mode={mode}", path.display())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{SQLITE_MIGRATIONS, connections_per_pool, kept_for, leaders_for};

    /// Migration 16 rebuilds the audit log without its `(chain, seq)` index: every record is
    /// kept as it was (its id too), and the by-project index is back.
    #[test]
    fn the_audit_log_keeps_its_records_when_its_chain_index_goes() {
        const DROPS_CHAIN_INDEX: i64 = 16;
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let apply = |keep: &dyn Fn(i64) -> bool| {
            for migration in SQLITE_MIGRATIONS.iter().filter(|m| keep(m.version)) {
                conn.execute_batch(migration.sql.as_str()).unwrap();
            }
        };
        apply(&|version| version < DROPS_CHAIN_INDEX);
        conn.execute_batch(
            "INSERT INTO audit_log (id, chain, seq, at_ms, request_id, project_id, \
             application_id, action, outcome, token, detail, prev_hash, hash) VALUES \
             (7, 'c1', 1, 5, 'r1', 'proj_1', 'app_1', 'proxy', 'ok', 'tok_a', '{\"host\":\"x\"}', x'00', x'01'), \
             (9, 'c1', 2, 6, 'r2', 'proj_2', 'app_2', 'tokenize', 'ok', 'tok_b', '{}', x'01', x'02')",
        )
        .unwrap();
        let everything = |conn: &rusqlite::Connection| -> Vec<Vec<String>> {
            conn.prepare(
                "SELECT id, chain, seq, at_ms, request_id, project_id, application_id, action, \
                 outcome, token, detail, hex(prev_hash), hex(hash) FROM audit_log ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| {
                (0..13)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let columns = |conn: &rusqlite::Connection| -> Vec<(String, String, bool, bool)> {
            conn.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info('audit_log')")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let (rows_before, columns_before) = (everything(&conn), columns(&conn));
        assert_eq!(rows_before.len(), 2);
        apply(&|version| version == DROPS_CHAIN_INDEX);
        assert_eq!(everything(&conn), rows_before);
        assert_eq!(columns(&conn), columns_before);
        // `id` is still the rowid: a record inserted without one is numbered after the last.
        conn.execute_batch(
            "INSERT INTO audit_log (chain, seq, at_ms, request_id, project_id, application_id, \
             action, outcome, token, detail, prev_hash, hash) VALUES \
             ('c1', 3, 7, 'r3', 'proj_1', 'app_1', 'proxy', 'ok', 'tok_a', '{}', x'02', x'03')",
        )
        .unwrap();
        let last: i64 = conn
            .query_row("SELECT max(id) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, 10);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_list('audit_log') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, vec!["audit_log_by_project".to_owned()]);
    }

    #[test]
    fn a_pool_keeps_connections_for_its_other_statements() {
        // (pool size, groups' leaders, kept connections)
        for (size, leaders, kept) in [(1, 1, 0), (2, 1, 1), (3, 2, 1), (5, 4, 3), (16, 4, 4)] {
            assert_eq!(leaders_for(size), leaders, "a pool of {size}");
            assert_eq!(kept_for(size), kept, "a pool of {size}");
        }
    }

    #[test]
    fn the_connection_budget_is_shared_out_and_stays_a_maximum() {
        // No serving threads: one pool with every connection.
        assert_eq!(connections_per_pool(16, 0), None);
        // Two serving threads and the shared pool: 5 each, 15 in all.
        assert_eq!(connections_per_pool(16, 2), Some(5));
        assert_eq!(connections_per_pool(4, 1), Some(2));
        // Fewer than 2 each: one shared pool, never more than the setting.
        assert_eq!(connections_per_pool(16, 8), None);
        assert_eq!(connections_per_pool(3, 1), None);
    }
}
