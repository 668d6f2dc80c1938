//! A few of a pool's connections kept checked out for the statements every call makes on
//! PostgreSQL: the groups' statements (token reads, new tokens) and the audit log's appends.
//!
//! sqlx pings a connection when its pool hands it out and again when it takes it back: two more
//! round trips around every statement, each waking a backend process, which cost PostgreSQL more
//! CPU than the statement itself (docs/benchmarks.md, issue 17's twentieth step). A kept
//! connection is used without either. It still counts against the pool's size (it is checked
//! out, not detached), so `max_connections` holds. A statement that fails because its
//! connection did (see [`connection_failed`]) closes that connection and is tried again on the
//! pool, which pings, where trying again is safe: so a connection the server dropped (a
//! restart, a failover, `idle_session_timeout`) is replaced without failing a call.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

pub(super) struct KeptConnections {
    pool: AnyPool,
    state: Mutex<State>,
    max_kept: usize,
    /// Past this since it was taken from the pool, a kept connection is closed and another is
    /// taken: no connection outlives a failover or a change of the address the database's
    /// name points to by much more than the pool's own `max_lifetime` (30 minutes; one handed
    /// out near the end of it and kept lives up to half as long again).
    renew_after: Duration,
}

#[derive(Default)]
struct State {
    /// Kept connections not in use, each with when it was taken from the pool (the last put
    /// back is taken first: the others may sit idle and be closed by the server, and are
    /// then found out and replaced when load needs them).
    idle: Vec<(PoolConnection<Any>, Instant)>,
    /// Kept connections, idle, in use, or being taken from the pool.
    kept: usize,
}

impl KeptConnections {
    /// Keeps at most `max_kept` of `pool`'s connections.
    pub(super) fn new(pool: AnyPool, max_kept: usize) -> Arc<Self> {
        let lifetime = pool
            .options()
            .get_max_lifetime()
            .unwrap_or(Duration::from_secs(30 * 60));
        Self::renewed_after(pool, max_kept, lifetime / 2)
    }

    fn renewed_after(pool: AnyPool, max_kept: usize, renew_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            pool,
            state: Mutex::new(State::default()),
            max_kept,
            renew_after,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection not in use; while fewer than the most are kept, a new one from the
    /// pool, kept from now on; `None` while all are in use (the caller goes to the pool).
    pub(super) async fn take(self: &Arc<Self>) -> Result<Option<KeptConnection>, sqlx::Error> {
        loop {
            let mut state = self.state();
            match state.idle.pop() {
                Some((conn, since)) if since.elapsed() < self.renew_after => {
                    return Ok(Some(self.in_use(conn, since)));
                }
                Some((mut conn, _)) => {
                    state.kept -= 1;
                    drop(state);
                    conn.close_on_drop();
                }
                None if state.kept < self.max_kept => {
                    state.kept += 1;
                    break;
                }
                None => return Ok(None),
            }
        }
        // The place is given back if the pool fails, or this future is dropped, before a
        // connection takes it.
        let place = Place(self);
        let conn = self.pool.acquire().await?;
        std::mem::forget(place);
        Ok(Some(self.in_use(conn, Instant::now())))
    }

    fn in_use(self: &Arc<Self>, conn: PoolConnection<Any>, since: Instant) -> KeptConnection {
        KeptConnection {
            kept: self.clone(),
            conn: Some((conn, since)),
        }
    }

    /// Kept connections not in use (the pool counts every kept one as in use).
    pub(super) fn idle(&self) -> usize {
        self.state().idle.len()
    }
}

impl Drop for KeptConnections {
    fn drop(&mut self) {
        // Closed here rather than handed back: the pool's return pings, in a task, which needs
        // a runtime that may be gone (a store dropped after its serving threads). Detached, a
        // connection gives its place in the pool back at once and spawns nothing (as long as
        // the pool keeps no `min_connections`, which would spawn a task to replace it).
        debug_assert_eq!(self.pool.options().get_min_connections(), 0);
        for (conn, _) in self.state().idle.drain(..) {
            drop(conn.detach());
        }
    }
}

/// A place among the kept connections reserved for one being taken from the pool.
struct Place<'a>(&'a KeptConnections);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.state().kept -= 1;
    }
}

/// A kept connection in use. Dropped without [`Self::put_back`] (a statement that failed, or
/// a future dropped mid-way), it goes back to the pool, whose return pings it and closes it if
/// the server no longer answers.
pub(super) struct KeptConnection {
    kept: Arc<KeptConnections>,
    conn: Option<(PoolConnection<Any>, Instant)>,
}

impl KeptConnection {
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            Some((conn, _)) => conn,
            None => unreachable!("a kept connection is in use until put back or dropped"),
        }
    }

    /// After a statement that succeeded (its answer read to the end: no transaction open,
    /// nothing left unread): kept for the next.
    pub(super) fn put_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.kept.state().idle.push(conn);
        }
    }

    /// After the connection failed: closed, without the ping of the pool's return, which
    /// could wait on a dead peer as long as the system's TCP timeout.
    pub(super) fn close(mut self) {
        if let Some((conn, _)) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

impl Drop for KeptConnection {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            drop(conn);
            self.kept.state().kept -= 1;
        }
    }
}

/// Whether `error` says the connection failed rather than the statement: then the statement
/// may not have reached the server, or its outcome is unknown, and one that is safe to repeat
/// is tried again on another connection. A database's answer about the statement itself (a
/// constraint, a cancelled or timed-out statement, a serialization failure) is not.
pub(super) fn connection_failed(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01–57P05: the server shut down, restarted,
            // or ended the session (pg_terminate_backend, idle_session_timeout).
            code.starts_with("08") || code.starts_with("57P")
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::super::scratch_postgres::ScratchDatabase;
    use super::{KeptConnection, KeptConnections, connection_failed};

    async fn backend(conn: &mut KeptConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn.conn())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_put_back_is_the_next_taken_and_at_most_the_given_number_are_kept() {
        let database = ScratchDatabase::new().await;
        let store = database.store(4).await;
        let kept = KeptConnections::new(store.pool().clone(), 2);
        let mut first = kept.take().await.unwrap().unwrap();
        let pid = backend(&mut first).await;
        first.put_back();
        assert_eq!(kept.idle(), 1);
        let mut again = kept.take().await.unwrap().unwrap();
        assert_eq!(backend(&mut again).await, pid, "the same connection, kept");
        let second = kept.take().await.unwrap().unwrap();
        // Both in use: the caller goes to the pool.
        assert!(kept.take().await.unwrap().is_none());
        // One dropped without being put back (its statement failed) frees its place.
        drop(second);
        let third = kept.take().await.unwrap();
        assert!(third.is_some(), "the dropped one's place is free");
        assert!(kept.take().await.unwrap().is_none());
        again.put_back();
        third.unwrap().put_back();
        assert_eq!(kept.idle(), 2);
    }

    #[tokio::test]
    async fn a_place_taken_while_the_pool_is_waited_for_is_given_back_if_the_wait_is_dropped() {
        let database = ScratchDatabase::new().await;
        let store = database.store(2).await;
        let kept = KeptConnections::new(store.pool().clone(), 1);
        // Every connection of the pool in use: taking one from it waits.
        let (_a, _b) = (
            store.pool().acquire().await.unwrap(),
            store.pool().acquire().await.unwrap(),
        );
        let waited = tokio::time::timeout(Duration::from_millis(50), kept.take()).await;
        assert!(waited.is_err(), "the pool had no connection to give");
        drop((_a, _b));
        assert!(
            kept.take().await.unwrap().is_some(),
            "its place was given back"
        );
    }

    #[tokio::test]
    async fn dropped_the_kept_connections_give_their_places_in_the_pool_back() {
        let database = ScratchDatabase::new().await;
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            .connect(database.url())
            .await
            .unwrap();
        let kept = KeptConnections::new(pool.clone(), 2);
        let (a, b) = (kept.take().await.unwrap(), kept.take().await.unwrap());
        a.unwrap().put_back();
        b.unwrap().put_back();
        drop(kept);
        let both = (pool.acquire().await, pool.acquire().await);
        assert!(
            both.0.is_ok() && both.1.is_ok(),
            "the pool has its two places again"
        );
    }

    #[tokio::test]
    async fn a_connection_kept_past_half_its_pools_lifetime_goes_back_and_another_is_taken() {
        let database = ScratchDatabase::new().await;
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .max_lifetime(Duration::from_millis(20))
            .connect(database.url())
            .await
            .unwrap();
        let kept = KeptConnections::new(pool, 1);
        let mut first = kept.take().await.unwrap().unwrap();
        let pid = backend(&mut first).await;
        first.put_back();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut next = kept.take().await.unwrap().unwrap();
        assert_ne!(
            backend(&mut next).await,
            pid,
            "the old one was closed by the pool"
        );
        assert!(
            kept.take().await.unwrap().is_none(),
            "still one kept at most"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_ended_has_failed_but_a_statement_refused_has_not() {
        let database = ScratchDatabase::new().await;
        let store = database.store(4).await;
        let kept = KeptConnections::new(store.pool().clone(), 1);
        let mut conn = kept.take().await.unwrap().unwrap();
        let timed_out = sqlx::query("SET statement_timeout = 1; SELECT pg_sleep(1)")
            .execute(conn.conn())
            .await
            .unwrap_err();
        assert!(!connection_failed(&timed_out), "{timed_out}");
        let refused = sqlx::query("SELECT 1/0")
            .execute(conn.conn())
            .await
            .unwrap_err();
        assert!(!connection_failed(&refused), "{refused}");
        conn.put_back();
        database.end_connections().await;
        let mut conn = kept.take().await.unwrap().unwrap();
        let ended = sqlx::query("SELECT 1")
            .execute(conn.conn())
            .await
            .unwrap_err();
        assert!(connection_failed(&ended), "{ended}");
        conn.close();
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_failed(&io));
        assert!(!connection_failed(&sqlx::Error::RowNotFound));
        assert!(!connection_failed(&sqlx::Error::PoolTimedOut));
    }
}
