//! For tests: a database of their own on the test PostgreSQL server (`CARDVAULT_TEST_DATABASE_URL`,
//! by default the local one `.ci/run` starts), dropped when done with.

use sqlx::{Connection, Executor};

use super::{Database, SqlStore};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub(super) struct ScratchDatabase {
    name: String,
    url: String,
}

fn admin_url() -> String {
    std::env::var("CARDVAULT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

async fn admin() -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let url = admin_url();
    sqlx::AnyConnection::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {url} ({e}): start it with `bash .ci/services`")
        })
}

impl ScratchDatabase {
    pub(super) async fn new() -> Self {
        let name = format!("cv_unit_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin().await;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        Self {
            name,
            url: url.to_string(),
        }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The store on this database, as an instance without serving threads opens it.
    pub(super) async fn store(&self, max_connections: u32) -> SqlStore {
        let database = Database::Postgres {
            url: self.url.clone().into(),
            max_connections,
            serving_threads: 0,
        };
        SqlStore::open(&database, true).await.unwrap()
    }

    /// Ends every session on this database, as a restart or a failover would.
    pub(super) async fn end_connections(&self) {
        let ended = sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        )
        .bind(&self.name)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
        let ended: i64 = sqlx::Row::get(&ended, "n");
        assert!(ended > 0, "no session to end on {}", self.name);
        // Ending is asynchronous: wait until the sessions are gone, so that the next
        // statement meets a dead connection rather than a backend still finishing.
        for _ in 0..500 {
            let left = sqlx::query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'")
                .bind(&self.name)
                .fetch_one(&mut admin().await)
                .await
                .unwrap();
            if sqlx::Row::get::<i64, _>(&left, "n") == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the sessions on {} did not end", self.name);
    }

    /// `sql`'s one number on this database (a fresh connection).
    pub(super) async fn number(&self, sql: &'static str) -> i64 {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        sqlx::Row::get(&sqlx::query(sql).fetch_one(&mut conn).await.unwrap(), 0)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let drop_it = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Off the test's runtime, which may be the one being dropped.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async {
                        let _ = admin().await.execute(sqlx::AssertSqlSafe(drop_it)).await;
                    });
                })
        })
        .join();
    }
}
