//! The statements on the embedded database's hot paths — the token read and the audit insert
//! of every proxy call, a new token's insert — on connections of our own, run on the calling
//! thread.
//!
//! Through sqlx, each SQLite statement is a message to the connection's own worker thread and
//! a wake-up each way; at a few microseconds of SQLite work per statement, those hand-offs were
//! most of the proxy's database cost (docs/benchmarks.md, issue 17). Here a statement runs
//! where the call runs. That is only safe while it cannot wait long: a read in WAL mode does
//! not wait for writers, and a write that finds the file locked (another writer's transaction)
//! is not waited for on the runtime's thread — the caller is told [`Busy`] and takes the
//! waiting path instead (sqlx's worker, or a blocking thread).
//!
//! Every connection has the pool's settings (`SQLITE_PRAGMAS`, no inline checkpoint).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::group::Group;
use crate::audit::AuditRow;
use crate::crypto::Sealed;
use crate::store::{StoreError, TokenKind, TokenRecord};

/// Idle read connections kept; more may be open at once under a burst, and are then closed.
const IDLE_READERS: usize = 8;

/// A statement on the calling thread never waits for a lock: it gives up at once with [`Busy`].
const INLINE_BUSY_TIMEOUT: Duration = Duration::ZERO;

/// Prepared statements kept per connection: the token read, the token insert, an audit insert
/// per group size, `BEGIN IMMEDIATE` and `COMMIT` ([`WriteTransaction`]), and room to spare.
const STATEMENT_CACHE: usize = AUDIT_ROWS_PER_STATEMENT + 8;

/// The statement met a lock it would have to wait for; nothing was done.
#[derive(Debug)]
pub(super) struct Busy(pub(super) rusqlite::Error);

pub(super) struct DirectSqlite {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// The connection the process's own inline writes share (the audit log's groups, new
    /// tokens), and the token reads that find it free (see [`Self::token`]).
    writer: Mutex<Option<Connection>>,
    /// The connection of writes that wait for another connection's lock (blocking threads).
    patient_writer: Mutex<Option<Connection>>,
    /// The inline writes' turn on `writer`, awaited rather than waited for on the mutex: with
    /// calls served on several single-threaded runtimes (see `serving_threads`), a thread
    /// blocked on the mutex would hold every call it serves.
    inline_turn: Arc<tokio::sync::Semaphore>,
    token_inserts: Group<(TokenRecord, i64), Result<Result<(), StoreError>, Busy>>,
}

impl DirectSqlite {
    pub(super) fn new(path: &Path) -> Self {
        // One writer connection: one inline write at a time.
        let inline_turn = Arc::new(tokio::sync::Semaphore::new(1));
        Self {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            patient_writer: Mutex::new(None),
            token_inserts: Group::sharing_turn(inline_turn.clone()),
            inline_turn,
        }
    }

    /// The inline writes' turn: who holds it keeps them from writing (see `sqlite_upkeep`).
    pub(super) fn inline_turn(&self) -> Arc<tokio::sync::Semaphore> {
        self.inline_turn.clone()
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.execute_batch(super::SQLITE_PRAGMAS)?;
        conn.execute_batch(super::SQLITE_NO_INLINE_CHECKPOINT)?;
        conn.busy_timeout(INLINE_BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// The live token `id` of `project_id` (`NotFound` when absent, deleted or expired at
    /// `now`), or [`Busy`].
    ///
    /// Read on the inline writers' connection when it is free: a connection's page cache
    /// outlives its own commits (the audit log's, new tokens'), while a read connection's is
    /// dropped at every commit another connection makes, and the token's pages read again —
    /// at moderate load, after every call's audit record (two `pread64`s and ~9 µs a proxy
    /// call at 1,000 req/s: docs/benchmarks.md, issue 17). Never waited for: while another
    /// call writes, a read connection serves.
    pub(super) fn token(
        &self,
        project_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Result<TokenRecord, StoreError>, Busy> {
        self.live_token(|conn| read_token(conn, project_id, id, now))
    }

    /// The sealed values of the live token `id` of `project_id`, as [`Self::token`] finds
    /// it, without the columns a caller that opens it has no use for.
    pub(super) fn sealed_token(
        &self,
        project_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Result<Sealed, StoreError>, Busy> {
        self.live_token(|conn| read_sealed_token(conn, project_id, id, now))
    }

    /// Runs a live token's `read` where [`Self::token`] says.
    fn live_token<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> rusqlite::Result<Option<Result<T, StoreError>>>,
    ) -> Result<Result<T, StoreError>, Busy> {
        let found = match self.inline_turn.try_acquire() {
            Ok(_turn) => self.on(&self.writer, read),
            Err(_) => self.on_reader(read),
        };
        match found {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Ok(Err(StoreError::NotFound)),
            Err(e) => busy_or(e),
        }
    }

    /// Runs `statements` on an idle read connection (or a new one), kept for later reads.
    fn on_reader<T>(
        &self,
        statements: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = self.readers.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let done = statements(&mut conn);
        if let Ok(mut idle) = self.readers.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
        done
    }

    /// Inserts `rows` in one transaction once it is the inline writes' turn, or answers
    /// [`Busy`] (nothing written) when another connection holds the file.
    pub(super) async fn append_audit_inline(
        &self,
        rows: &[AuditRow],
    ) -> Result<Result<(), StoreError>, Busy> {
        let _turn = self.inline_turn.acquire().await;
        self.append_audit(rows, false)
    }

    /// Inserts `rows` in one transaction, or answers [`Busy`] (nothing written) when another
    /// writer holds the file. With `wait`, waits for the lock like any other writer instead
    /// (call it from a blocking thread then).
    pub(super) fn append_audit(
        &self,
        rows: &[AuditRow],
        wait: bool,
    ) -> Result<Result<(), StoreError>, Busy> {
        self.write(wait, |conn| insert_audit(conn, rows))
    }

    /// Inserts `token` in one transaction with the tokens other calls insert at the same
    /// moment (see [`Group`]). Its own result: a conflict refuses only its own row. [`Busy`]
    /// (nothing of it written) when another connection holds the file.
    pub(super) async fn insert_token(
        &self,
        token: TokenRecord,
        now: i64,
    ) -> Result<Result<(), StoreError>, Busy> {
        self.token_inserts
            .run((token, now), |group| self.insert_tokens(group))
            .await
            .unwrap_or_else(|| Err(busy()))
    }

    /// One transaction for `group`: each token's result, or every token's error when the
    /// transaction as a whole failed (nothing stored), or [`Busy`] for each.
    fn insert_tokens(
        &self,
        group: &[(TokenRecord, i64)],
    ) -> Vec<Result<Result<(), StoreError>, Busy>> {
        let mut each = Vec::with_capacity(group.len());
        let written = self.write(false, |conn| {
            let tx = WriteTransaction::begin_for(conn, group.len())?;
            for (token, now) in group {
                match insert_token(&tx, token, *now) {
                    Ok(()) => each.push(Ok(())),
                    // A constraint refuses its own statement only; the others' rows stay.
                    Err(e) if is_constraint(&e) => each.push(Err(StoreError::from(e))),
                    // Anything else (a full disk, an I/O error) may have ended the transaction
                    // already: the whole group fails and rolls back.
                    Err(e) => return Err(e),
                }
            }
            tx.commit()
        });
        match written {
            Ok(Ok(())) => each.into_iter().map(Ok).collect(),
            Ok(Err(e)) => group
                .iter()
                .map(|_| Ok(Err(copy_for_each_call(&e))))
                .collect(),
            Err(_) => group.iter().map(|_| Err(busy())).collect(),
        }
    }

    /// Runs `statements` on a connection of our own. The process's own inline writes (the
    /// audit log's groups, new tokens) share one connection and take turns on it
    /// (`inline_turn`, so the mutex is never contended by them) rather than meeting in
    /// SQLite's lock, whose busy handler sleeps for milliseconds; they never wait for another
    /// connection's lock ([`Busy`] instead). With `wait` (from a blocking thread), a second
    /// connection waits for the lock like any other writer, so that wait never holds the
    /// inline writers' mutex.
    fn write(
        &self,
        wait: bool,
        statements: impl FnOnce(&mut Connection) -> rusqlite::Result<()>,
    ) -> Result<Result<(), StoreError>, Busy> {
        let (connection, timeout) = if wait {
            (
                &self.patient_writer,
                Duration::from_millis(super::SQLITE_BUSY_TIMEOUT_MS),
            )
        } else {
            (&self.writer, INLINE_BUSY_TIMEOUT)
        };
        match self.on(connection, |conn| {
            conn.busy_timeout(timeout)?;
            statements(conn)
        }) {
            Ok(()) => Ok(Ok(())),
            Err(e) => busy_or(e),
        }
    }

    /// Runs `statements` on the connection in `slot` (opened there first if need be), outside
    /// any transaction an earlier user left open.
    fn on<T>(
        &self,
        slot: &Mutex<Option<Connection>>,
        statements: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A panic cannot leave the connection mid-transaction: the transaction rolls back
        // when dropped ([`WriteTransaction`]), so a poisoned lock still guards a usable
        // connection.
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.open()?),
        };
        // A transaction left open (a `ROLLBACK` that failed as one was dropped) ends here: it
        // would swallow a write uncommitted, refuse this and every later one, or show a read
        // rows that were never committed.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        statements(conn)
    }
}

/// A [`Busy`] of our own making, for each item of a group that met another connection's lock.
fn busy() -> Busy {
    Busy(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        None,
    ))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// The error of a group that failed as a whole, once for each of its calls (`StoreError`
/// cannot be cloned); its code and message are kept.
fn copy_for_each_call(e: &StoreError) -> StoreError {
    let (failure, message) = match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, message)) => {
            (*failure, message.clone())
        }
        other => (
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    };
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, message))
}

/// `Busy` for a lock that would have to be waited for; the error as the store's otherwise.
fn busy_or<T>(e: rusqlite::Error) -> Result<Result<T, StoreError>, Busy> {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Err(Busy(e)),
        _ => Ok(Err(StoreError::from(e))),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Self::NotFound,
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Self::Conflict
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => Self::Corrupt("a stored value's type"),
            other => Self::Sqlite(other),
        }
    }
}

/// The `WHERE` clause of both direct reads of a live token (`?1` id, `?2` project, `?3` now):
/// the row and its sealed values alone are found alike.
macro_rules! live_token_by_id {
    () => {
        "id = ?1 AND project_id = ?2 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)"
    };
}

fn read_token(
    conn: &Connection,
    project_id: &str,
    id: &str,
    now: i64,
) -> rusqlite::Result<Option<Result<TokenRecord, StoreError>>> {
    let mut statement = conn.prepare_cached(super::rows::select_token!(live_token_by_id!()))?;
    statement
        .query_row(params![id, project_id, now], |row| {
            use super::rows::token_column as at;
            let kind = row.get_ref(at::KIND)?.as_str()?;
            let Some(kind) = TokenKind::parse(kind) else {
                return Ok(Err(StoreError::Corrupt("token kind")));
            };
            let key_version: i64 = row.get(at::KEY_VERSION)?;
            let Ok(key_version) = u32::try_from(key_version) else {
                return Ok(Err(StoreError::Corrupt("token key version")));
            };
            Ok(Ok(TokenRecord {
                id: row.get(at::ID)?,
                project_id: row.get(at::PROJECT_ID)?,
                kind,
                sealed: Sealed {
                    key_version,
                    nonce: row.get(at::NONCE)?,
                    ciphertext: row.get(at::CIPHERTEXT)?,
                },
                fingerprint: row.get(at::FINGERPRINT)?,
                bin: row.get(at::BIN)?,
                last4: row.get(at::LAST4)?,
                brand: row.get(at::BRAND)?,
                created_at: row.get(at::CREATED_AT)?,
                expires_at: row.get(at::EXPIRES_AT)?,
            }))
        })
        .optional()
}

/// Where `read_token` finds a live token, its sealed values alone.
fn read_sealed_token(
    conn: &Connection,
    project_id: &str,
    id: &str,
    now: i64,
) -> rusqlite::Result<Option<Result<Sealed, StoreError>>> {
    let mut statement = conn.prepare_cached(concat!(
        "SELECT key_version, nonce, ciphertext FROM tokens WHERE ",
        live_token_by_id!()
    ))?;
    statement
        .query_row(params![id, project_id, now], |row| {
            let key_version: i64 = row.get(0)?;
            let Ok(key_version) = u32::try_from(key_version) else {
                return Ok(Err(StoreError::Corrupt("token key version")));
            };
            Ok(Ok(Sealed {
                key_version,
                nonce: row.get(1)?,
                ciphertext: row.get(2)?,
            }))
        })
        .optional()
}

fn insert_token(conn: &Connection, token: &TokenRecord, now: i64) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(super::queries::INSERT_TOKEN)?;
    statement.execute(params![
        token.id,
        token.project_id,
        token.kind.as_str(),
        i64::from(token.sealed.key_version),
        token.sealed.nonce,
        token.sealed.ciphertext,
        token.fingerprint,
        token.bin,
        token.last4,
        token.brand,
        token.created_at,
        now,
        token.expires_at,
    ])?;
    Ok(())
}

/// Rows per `INSERT`: SQLite's cost of binding grows faster than the number of bound values,
/// so many short statements in one transaction beat one long one.
const AUDIT_ROWS_PER_STATEMENT: usize = 16;

fn insert_audit(conn: &mut Connection, rows: &[AuditRow]) -> rusqlite::Result<()> {
    let tx = WriteTransaction::begin_for(conn, rows.len().div_ceil(AUDIT_ROWS_PER_STATEMENT))?;
    for chunk in rows.chunks(AUDIT_ROWS_PER_STATEMENT) {
        let mut statement = tx.prepare_cached(&super::audit::INSERT_AUDIT.get(chunk.len()))?;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 12);
        for row in chunk {
            values.extend_from_slice(&[
                &row.chain,
                &row.seq,
                &row.at_ms,
                &row.request_id,
                &row.project_id,
                &row.application_id,
                &row.action,
                &row.outcome,
                &row.token,
                &row.detail,
                &row.prev_hash,
                &row.hash,
            ]);
        }
        statement.execute(values.as_slice())?;
    }
    tx.commit()
}

/// A write transaction (`BEGIN IMMEDIATE` … `COMMIT`) run by cached statements: rusqlite's
/// `Transaction` has SQLite parse both anew each time, ~3,500 instructions of an audit commit
/// that the proxy's calls wait for (docs/benchmarks.md); or, for a single statement, the
/// statement's own ([`Self::begin_for`]). Rolled back when dropped uncommitted (an error, a
/// failed `COMMIT`, a panic), as a `Transaction` is.
struct WriteTransaction<'c> {
    conn: &'c Connection,
    /// False for a single statement run as its own transaction ([`Self::begin_for`]).
    explicit: bool,
    committed: bool,
}

impl<'c> WriteTransaction<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self {
            conn,
            explicit: true,
            committed: false,
        })
    }

    /// The transaction of `statements` writing statements. For one, none is opened: SQLite
    /// runs a statement outside a transaction as a transaction of its own, taking the write
    /// lock before anything else as `BEGIN IMMEDIATE` does (a busy file refuses it with
    /// nothing done), committing at its end, and undoing all of it if it fails. That spares
    /// the two statements around it, the cost of a whole statement each (docs/benchmarks.md,
    /// issue 17's nineteenth step): an audit group of up to `AUDIT_ROWS_PER_STATEMENT`
    /// records is one statement, and so is a group of one new token.
    ///
    /// "Undoing all of it" holds for a plain `INSERT`, which these are: a statement with the
    /// `FAIL` conflict action (`OR FAIL`, `RAISE(FAIL)`, `ON CONFLICT FAIL` in the schema)
    /// keeps the rows it wrote before failing, and one with `RETURNING` commits when reset;
    /// neither may be written through a transaction of its own. Only from outside a
    /// transaction: inside one, the statement would not commit, so `BEGIN` is tried and
    /// refused instead.
    fn begin_for(conn: &'c Connection, statements: usize) -> rusqlite::Result<Self> {
        if statements == 1 && conn.is_autocommit() {
            return Ok(Self {
                conn,
                explicit: false,
                committed: false,
            });
        }
        Self::begin(conn)
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        if self.explicit {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        // SQLite may have ended the transaction itself (some I/O errors do).
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::time::Duration;

    use crate::audit::AuditRow;
    use crate::crypto::Sealed;
    use crate::store::sqlite_upkeep::HOLD_FROM_FRAMES;
    use crate::store::{
        AuditStore, Database, Mode, Project, SqlStore, Store, StoreError, TokenKind, TokenRecord,
    };

    async fn store(dir: &tempfile::TempDir) -> Arc<SqlStore> {
        let store = SqlStore::open(&Database::Sqlite(dir.path().join("vault.db")), true)
            .await
            .unwrap();
        let project = Project {
            id: "proj_1".into(),
            name: "p".into(),
            mode: Mode::Test,
            deduplicate: false,
        };
        store.insert_project(&project, b"pub").await.unwrap();
        Arc::new(store)
    }

    /// A card token of project `proj_1`.
    pub(in crate::store::sql) fn token(id: &str, expires_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            project_id: "proj_1".into(),
            kind: TokenKind::Card,
            sealed: Sealed {
                key_version: 1,
                nonce: vec![1; 12],
                ciphertext: vec![2; 40],
            },
            fingerprint: None,
            bin: Some("424242".into()),
            last4: "4242".into(),
            brand: Some("visa".into()),
            created_at: 1,
            expires_at,
        }
    }

    fn audit_row(seq: i64) -> AuditRow {
        AuditRow {
            id: 0,
            chain: "c1".into(),
            seq,
            at_ms: 1,
            request_id: "r".into(),
            project_id: "proj_1".into(),
            application_id: "app".into(),
            action: "proxy".into(),
            outcome: "ok".into(),
            token: "tok_a".into(),
            detail: "{}".into(),
            prev_hash: vec![0; 32],
            hash: vec![seq as u8; 32],
        }
    }

    /// A connection of the test's own holding SQLite's write lock until dropped.
    fn hold_write_lock(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    }

    #[tokio::test]
    async fn the_direct_read_finds_live_tokens_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.insert_token(&token("tok_live", None)).await.unwrap();
        store
            .insert_token(&token("tok_old", Some(10)))
            .await
            .unwrap();
        let found = store.token("proj_1", "tok_live").await.unwrap();
        assert_eq!(found.sealed.ciphertext, vec![2; 40]);
        assert_eq!(found.bin.as_deref(), Some("424242"));
        // The proxy's read of the sealed values alone finds what the whole row's read finds.
        assert_eq!(
            store.sealed_token("proj_1", "tok_live").await.unwrap(),
            found.sealed
        );
        for (project, id) in [
            ("proj_1", "tok_old"),
            ("proj_other", "tok_live"),
            ("proj_1", "TOK_LIVE"),
        ] {
            assert!(matches!(
                store.token(project, id).await,
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.sealed_token(project, id).await,
                Err(StoreError::NotFound)
            ));
        }
        store.delete_token("proj_1", "tok_live").await.unwrap();
        assert!(matches!(
            store.token("proj_1", "tok_live").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.sealed_token("proj_1", "tok_live").await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_token_another_connection_deletes_is_gone_for_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.insert_token(&token("tok_live", None)).await.unwrap();
        // Read (its pages now cached by the connection that read it), then written behind the
        // store's back by another connection (another process: the CLI, a second vault).
        assert_eq!(
            store.token("proj_1", "tok_live").await.unwrap().id,
            "tok_live"
        );
        let other = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        other
            .execute("UPDATE tokens SET deleted_at = 5 WHERE id = 'tok_live'", [])
            .unwrap();
        assert!(matches!(
            store.token("proj_1", "tok_live").await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_read_takes_the_writers_connection_when_free_and_a_read_connection_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.insert_token(&token("tok_live", None)).await.unwrap();
        let direct = super::DirectSqlite::new(&dir.path().join("vault.db"));
        let idle_readers = || direct.readers.lock().unwrap().len();
        let read = || direct.token("proj_1", "tok_live", 2).unwrap().unwrap();
        assert_eq!(read().id, "tok_live");
        assert_eq!(idle_readers(), 0, "read on the writers' connection");
        let turn = direct.inline_turn();
        let writing = turn.try_acquire().unwrap();
        // Another call's write holds the connection: the read neither waits nor fails.
        assert_eq!(read().id, "tok_live");
        assert_eq!(idle_readers(), 1, "read on a read connection");
        drop(writing);
        assert_eq!(read().id, "tok_live");
        assert_eq!(idle_readers(), 1);
    }

    #[tokio::test]
    async fn a_read_on_the_writers_connection_never_sees_a_transaction_left_open_there() {
        let dir = tempfile::tempdir().unwrap();
        let _store = store(&dir).await;
        let direct = super::DirectSqlite::new(&dir.path().join("vault.db"));
        // As if a dropped transaction's `ROLLBACK` had failed after its insert.
        direct
            .write(false, |conn| {
                conn.execute_batch("BEGIN")?;
                super::insert_token(conn, &token("tok_never", None), 1)
            })
            .unwrap()
            .unwrap();
        assert!(matches!(
            direct.token("proj_1", "tok_never", 2).unwrap(),
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            direct.readers.lock().unwrap().len(),
            0,
            "read on the writers' connection"
        );
    }

    #[tokio::test]
    async fn reads_go_on_while_another_writer_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.insert_token(&token("tok_live", None)).await.unwrap();
        let lock = hold_write_lock(&dir);
        assert_eq!(
            store.token("proj_1", "tok_live").await.unwrap().id,
            "tok_live"
        );
        drop(lock);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_audit_group_that_meets_another_writer_waits_for_it_and_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let lock = hold_write_lock(&dir);
        let rows: Vec<AuditRow> = (1..=40).map(audit_row).collect();
        let writing = tokio::spawn({
            let store = store.clone();
            async move { store.append_audit(&rows).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writing.is_finished(), "the write waits for the lock");
        drop(lock);
        writing.await.unwrap().unwrap();
        let (seq, hash) = store.audit_head("c1").await.unwrap().unwrap();
        assert_eq!((seq, hash), (40, vec![40; 32]));
        // A group whose third record is refused (by a trigger of the test's) is refused as a
        // whole: nothing of it lands.
        let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse_43 BEFORE INSERT ON audit_log WHEN NEW.seq = 43 \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
        let refused: Vec<AuditRow> = (41..=43).map(audit_row).collect();
        let error = store.append_audit(&refused).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Sqlite(e) if e.to_string().contains("refused by the test")),
            "{error:?}"
        );
        assert_eq!(store.audit_head("c1").await.unwrap().unwrap().0, 40);
        // The refused group's transaction was rolled back, not left open on the connection:
        // the next group begins its own and lands.
        store.append_audit(&[audit_row(41)]).await.unwrap();
        assert_eq!(store.audit_head("c1").await.unwrap().unwrap().0, 41);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_or_token_alone_is_a_transaction_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // Another writer holds the file: the one record waits for it, then lands.
        let lock = hold_write_lock(&dir);
        let writing = tokio::spawn({
            let store = store.clone();
            async move { store.append_audit(&[audit_row(1)]).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!writing.is_finished(), "the write waits for the lock");
        drop(lock);
        writing.await.unwrap().unwrap();
        assert_eq!(store.audit_head("c1").await.unwrap().unwrap().0, 1);
        // A record refused alone lands nothing and leaves no transaction open.
        let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse_2 BEFORE INSERT ON audit_log WHEN NEW.seq = 2 \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
        let error = store.append_audit(&[audit_row(2)]).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Sqlite(e) if e.to_string().contains("refused by the test")),
            "{error:?}"
        );
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM audit_log"), 1);
        store.append_audit(&[audit_row(3)]).await.unwrap();
        assert_eq!(count("SELECT count(*) FROM audit_log"), 2);
        // A token alone: stored and seen by another connection at once; its id again is a
        // conflict of its own, after which the next token lands.
        store.insert_token(&token("tok_a", None)).await.unwrap();
        assert_eq!(count("SELECT count(*) FROM tokens WHERE id = 'tok_a'"), 1);
        assert!(matches!(
            store.insert_token(&token("tok_a", None)).await,
            Err(StoreError::Conflict)
        ));
        store.insert_token(&token("tok_b", None)).await.unwrap();
        assert_eq!(count("SELECT count(*) FROM tokens"), 2);
    }

    #[test]
    fn a_statement_alone_inside_an_open_transaction_is_refused_not_left_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER); BEGIN")
            .unwrap();
        assert!(super::WriteTransaction::begin_for(&conn, 1).is_err());
        conn.execute_batch("ROLLBACK").unwrap();
        let tx = super::WriteTransaction::begin_for(&conn, 1).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        // Committed by the statement itself, before `commit`: another connection sees it.
        let other = rusqlite::Connection::open(&path).unwrap();
        let count = || -> i64 {
            other
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(), 1);
        tx.commit().unwrap();
        assert_eq!(count(), 1);
    }

    #[tokio::test]
    async fn a_transaction_left_open_on_the_writer_neither_swallows_nor_refuses_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let _store = store(&dir).await;
        let direct = super::DirectSqlite::new(&dir.path().join("vault.db"));
        // As if a dropped transaction's `ROLLBACK` had failed: the writer is left inside one.
        direct
            .write(false, |conn| conn.execute_batch("BEGIN"))
            .unwrap()
            .unwrap();
        direct
            .append_audit(&[audit_row(1)], false)
            .unwrap()
            .unwrap();
        let other = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_write_transaction_not_committed_is_rolled_back_even_through_a_panic() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        let count = |conn: &rusqlite::Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        {
            let tx = super::WriteTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
        assert!(conn.is_autocommit());
        assert_eq!(count(&conn), 0);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let tx = super::WriteTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
            panic!("mid-transaction");
        }));
        assert!(panicked.is_err());
        assert!(conn.is_autocommit());
        assert_eq!(count(&conn), 0);
        let tx = super::WriteTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (3)", []).unwrap();
        tx.commit().unwrap();
        assert!(conn.is_autocommit());
        assert_eq!(count(&conn), 1);
    }

    #[tokio::test]
    async fn a_chains_head_is_its_newest_record_whatever_other_chains_wrote_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let in_chain = |chain: &str, seq: i64| AuditRow {
            chain: chain.to_owned(),
            ..audit_row(seq)
        };
        store
            .append_audit(&(1..=3).map(|n| in_chain("c1", n)).collect::<Vec<_>>())
            .await
            .unwrap();
        store
            .append_audit(&(1..=50).map(|n| in_chain("c2", n)).collect::<Vec<_>>())
            .await
            .unwrap();
        store.append_audit(&[in_chain("c1", 4)]).await.unwrap();
        store.append_audit(&[in_chain("c2", 51)]).await.unwrap();
        assert_eq!(
            store.audit_head("c1").await.unwrap(),
            Some((4, vec![4; 32]))
        );
        assert_eq!(store.audit_head("c2").await.unwrap().unwrap().0, 51);
        assert_eq!(store.audit_head("c3").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_inserted_at_once_are_each_stored_and_a_conflict_refuses_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.insert_token(&token("tok_held", None)).await.unwrap();
        let calls: Vec<_> = (0..60)
            .map(|i| {
                let store = store.clone();
                // Every tenth call repeats a token id already stored.
                let id = if i % 10 == 0 {
                    "tok_held".to_owned()
                } else {
                    format!("tok_{i}")
                };
                tokio::spawn(
                    async move { (id.clone(), store.insert_token(&token(&id, None)).await) },
                )
            })
            .collect();
        for call in calls {
            let (id, inserted) = call.await.unwrap();
            if id == "tok_held" {
                assert!(
                    matches!(inserted, Err(StoreError::Conflict)),
                    "{inserted:?}"
                );
            } else {
                inserted.unwrap();
                assert_eq!(store.token("proj_1", &id).await.unwrap().id, id);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_token_that_meets_another_writer_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let lock = hold_write_lock(&dir);
        let inserting = tokio::spawn({
            let store = store.clone();
            async move { store.insert_token(&token("tok_new", None)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!inserting.is_finished(), "the insert waits for the lock");
        drop(lock);
        inserting.await.unwrap().unwrap();
        assert_eq!(
            store.token("proj_1", "tok_new").await.unwrap().id,
            "tok_new"
        );
    }

    /// The write-ahead log header's checkpoint sequence number and salts (bytes 12..24), which
    /// every restart of the log rewrites (new salts).
    fn log_header(dir: &tempfile::TempDir) -> Vec<u8> {
        let log = std::fs::read(dir.path().join("vault.db-wal")).unwrap();
        log.get(12..24).unwrap_or_default().to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_a_steady_stream_of_writes_each_checkpoint_lets_the_log_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let upkeep = store.sqlite.clone().unwrap();
        // Only this test's checkpoints: one of the watch's just before could leave the log
        // too short for the test's to hold the writes back.
        upkeep.watch_paused.store(true, Ordering::Relaxed);
        // The hold is what is tested, not the disk: where a sync takes 10–30 ms (seen on CI's
        // kind of machine), the second part outlasts its limit and the writes go on before it
        // ends, as they should there, and the log never catches up.
        upkeep.hold_without_limit.store(true, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(0));
        // Commits back to back, as a stream of calls' audit records would.
        let writing = tokio::spawn({
            let store = store.clone();
            let (stop, committed) = (stop.clone(), committed.clone());
            async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    store.append_audit(&[audit_row(seq)]).await.unwrap();
                    committed.store(seq, Ordering::Relaxed);
                }
                seq
            }
        });
        // Each commit adds a frame at least: enough of them for a checkpoint to start the log
        // over.
        let log_long_enough = || async {
            let from = committed.load(Ordering::Relaxed);
            for _ in 0..6000 {
                if committed.load(Ordering::Relaxed) >= from + HOLD_FROM_FRAMES {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the writes stopped");
        };
        log_long_enough().await;
        let mut header = log_header(&dir);
        let mut restarted = 0;
        for _ in 0..5 {
            upkeep.checkpoint().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            log_long_enough().await;
            let now = log_header(&dir);
            if now != header {
                restarted += 1;
            }
            header = now;
        }
        stop.store(true, Ordering::Relaxed);
        let written = writing.await.unwrap();
        // Each checkpoint copied the log back whole though writes went on, so a write after it
        // started the log over (without the inline writes held back for its second part, a
        // checkpoint never catches up with them and the log only grows: none restarts).
        assert!(
            restarted >= 4,
            "the log started over after {restarted} of 5 checkpoints"
        );
        assert_eq!(store.audit_head("c1").await.unwrap().unwrap().0, written);
    }

    #[tokio::test]
    async fn a_short_log_is_checkpointed_without_holding_the_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let upkeep = store.sqlite.clone().unwrap();
        store.append_audit(&[audit_row(1)]).await.unwrap();
        // The inline writes' turn, taken here: a checkpoint that wanted it would wait.
        let turn = store.direct.as_ref().unwrap().inline_turn();
        let _held = turn.acquire().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), upkeep.checkpoint())
            .await
            .expect("a log of a few frames is copied back without holding the writes")
            .unwrap();
    }

    #[tokio::test]
    async fn the_token_insert_numbers_its_marks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let _store = store(&dir).await;
        let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
        let statement = conn.prepare(super::super::queries::INSERT_TOKEN).unwrap();
        assert_eq!(statement.parameter_count(), 13);
        for n in 1..=13 {
            assert_eq!(
                statement.parameter_index(&format!("${n}")).unwrap(),
                Some(n)
            );
        }
    }
}
