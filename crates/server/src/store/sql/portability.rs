//! The queries of bulk imports and exports (same SQL on both engines, but for how values are
//! marked: see [`Marks`]).

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, Row};

use super::SqlStore;
use super::marks::Marks;
use super::rows::{select_token, shred_tokens, token_from_row};
use crate::store::{PortabilityStore, StoreError, TokenRecord, now_unix};

/// SQLite's page cache on an importing connection: 256 MiB (negative: KiB).
const IMPORT_CACHE: &str = "PRAGMA cache_size = -262144";
/// PostgreSQL plans each of the importing connection's statements for its values. A prepared
/// statement otherwise settles, after five runs, on a generic plan made while `import_keys`
/// was still empty (a scan of the whole table), and keeps it as the table grows: each batch's
/// lookups then read every key stored before (100,000 records took minutes, not seconds).
const IMPORT_PLANS: &str = "SET plan_cache_mode = force_custom_plan";

/// How many values an import's statements carry, by how they are marked.
impl Marks {
    /// Rows per multi-row `INSERT` of tokens (13 values each). With numbered marks, as few as
    /// made PostgreSQL fastest too (200 a statement took it minutes for 100,000 records).
    fn tokens_per_statement(self) -> usize {
        match self {
            Self::Anonymous => 200,
            Self::Numbered => 12,
        }
    }

    /// Rows per multi-row `INSERT` of import keys (4 values each).
    fn keys_per_statement(self) -> usize {
        match self {
            Self::Anonymous => 500,
            Self::Numbered => 40,
        }
    }

    /// Values per `IN (…)` list.
    fn ids_per_lookup(self) -> usize {
        match self {
            Self::Anonymous => 500,
            Self::Numbered => 128,
        }
    }
}

/// The connection an import works on, held from its first query to the store's end. SQLite
/// drops a connection's whole page cache when another connection wrote since it last read, so
/// with the pool's connections taking batches in turn every batch started cold, reading back
/// the index pages it touches; on one connection, the batches before left them in its cache.
#[derive(Default)]
pub(super) struct Porting {
    conn: tokio::sync::OnceCell<tokio::sync::Mutex<PoolConnection<sqlx::Any>>>,
}

impl SqlStore {
    /// The import's connection (taken from the pool, and set up, at the first call).
    async fn porting(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, PoolConnection<sqlx::Any>>, StoreError> {
        let held = self
            .porting
            .conn
            .get_or_try_init(|| async {
                let mut conn = self.pool().acquire().await?;
                if self.sqlite.is_some() {
                    // Tokens' ids are random, so each batch touches pages all over the tables'
                    // indexes: SQLite's default 2 MB page cache would spill and read most of
                    // them back batch after batch. The importing process's own connection,
                    // never a serving instance's, keeps more of them.
                    conn.execute(IMPORT_CACHE).await?;
                } else {
                    conn.execute(IMPORT_PLANS).await?;
                }
                Ok::<_, StoreError>(tokio::sync::Mutex::new(conn))
            })
            .await?;
        Ok(held.lock().await)
    }
}

/// Inserts tokens with multi-row statements inside the caller's transaction.
pub(super) async fn insert_token_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    marks: Marks,
    tokens: &[TokenRecord],
    now: i64,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 13;
    for chunk in tokens.chunks(marks.tokens_per_statement()) {
        let sql = format!(
            "INSERT INTO tokens ({}) VALUES {}",
            super::queries::TOKEN_COLUMNS,
            marks.rows(chunk.len(), COLUMNS)
        );
        // Built from marks only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for token in chunk {
            query = bind_token(query, token, now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Binds `token`'s row (as `TOKEN_COLUMNS` lists them; `now` is its `updated_at`).
pub(super) fn bind_token<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    token: &TokenRecord,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(token.id.clone())
        .bind(token.project_id.clone())
        .bind(token.kind.as_str())
        .bind(i64::from(token.sealed.key_version))
        .bind(token.sealed.nonce.clone())
        .bind(token.sealed.ciphertext.clone())
        .bind(token.fingerprint.clone())
        .bind(token.bin.clone())
        .bind(token.last4.clone())
        .bind(token.brand.clone())
        .bind(token.created_at)
        .bind(now)
        .bind(token.expires_at)
}

#[async_trait]
impl PortabilityStore for SqlStore {
    async fn imported_tokens(
        &self,
        project_id: &str,
        old_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.before_read()?;
        let marks = Marks::of(self);
        let mut conn = self.porting().await?;
        let mut found = Vec::new();
        for chunk in old_ids.chunks(marks.ids_per_lookup()) {
            let sql = format!(
                "SELECT old_id, token_id FROM import_keys WHERE project_id = {} AND old_id IN ({})",
                marks.list(1, 1),
                marks.list(2, chunk.len())
            );
            // Built from marks only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project_id);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(&mut **conn).await? {
                found.push((row.try_get("old_id")?, row.try_get("token_id")?));
            }
        }
        Ok(found)
    }

    async fn tokens_by_fingerprints(
        &self,
        project_id: &str,
        fingerprints: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        self.before_read()?;
        let marks = Marks::of(self);
        let mut conn = self.porting().await?;
        let now = now_unix();
        let mut found = Vec::new();
        for chunk in fingerprints.chunks(marks.ids_per_lookup()) {
            let sql = format!(
                "SELECT fingerprint, id FROM tokens WHERE project_id = {} AND deleted_at IS NULL
                 AND (expires_at IS NULL OR expires_at > {}) AND fingerprint IN ({})",
                marks.list(1, 1),
                marks.list(2, 1),
                marks.list(3, chunk.len())
            );
            // Built from marks only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(project_id)
                .bind(now);
            for fp in chunk {
                query = query.bind(fp.as_slice());
            }
            for row in query.fetch_all(&mut **conn).await? {
                found.push((row.try_get("fingerprint")?, row.try_get("id")?));
            }
        }
        Ok(found)
    }

    async fn shred_expired_holders(
        &self,
        project_id: &str,
        fingerprints: &[Vec<u8>],
    ) -> Result<u64, StoreError> {
        self.before_write()?;
        let mut conn = self.porting().await?;
        let now = now_unix();
        let mut shredded = 0;
        // Rare (only after a batch met such a token), so plain numbered marks on both engines.
        for chunk in fingerprints.chunks(Marks::Numbered.ids_per_lookup()) {
            let sql = format!(
                shred_tokens!(
                    "project_id = $4 AND deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $3 AND fingerprint IN ({})"
                ),
                Marks::Numbered.list(5, chunk.len())
            );
            // Built from marks only; every value is bound.
            let mut query =
                super::queries::shred(sqlx::AssertSqlSafe(sql), now).bind(project_id.to_owned());
            for fp in chunk {
                query = query.bind(fp.clone());
            }
            shredded += query.execute(&mut **conn).await?.rows_affected();
        }
        self.after_write()?;
        Ok(shredded)
    }

    async fn import_batch(
        &self,
        project_id: &str,
        tokens: &[TokenRecord],
        keys: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let marks = Marks::of(self);
        let now = now_unix();
        let mut conn = self.porting().await?;
        let mut tx = sqlx::Acquire::begin(&mut **conn).await?;
        insert_token_rows(&mut tx, marks, tokens, now).await?;
        for chunk in keys.chunks(marks.keys_per_statement()) {
            let sql = format!(
                "INSERT INTO import_keys (project_id, old_id, token_id, created_at) VALUES {}",
                marks.rows(chunk.len(), 4)
            );
            // Built from marks only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (old_id, token_id) in chunk {
                query = query
                    .bind(project_id)
                    .bind(old_id.as_str())
                    .bind(token_id.as_str())
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.after_write()
    }

    async fn live_tokens(
        &self,
        project_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.before_read()?;
        let rows = sqlx::query(select_token!(
            "project_id = $1 AND id > $2 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $3) ORDER BY id LIMIT $4"
        ))
        .bind(project_id)
        .bind(after)
        .bind(now_unix())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn live_token_count(&self, project_id: &str) -> Result<u64, StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT count(*) AS n FROM tokens WHERE project_id = $1 AND deleted_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(project_id)
        .bind(now_unix())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
    }
}
