//! The queries of bulk imports and exports (same SQL on both engines).

use async_trait::async_trait;
use sqlx::{Executor, Row};

use super::SqlStore;
use super::rows::{select_token, token_from_row};
use crate::store::{PortabilityStore, StoreError, TokenRecord, now_unix};

/// Rows per multi-row `INSERT` of tokens (13 values each). Small on purpose: binding a value
/// in sqlx's SQLite driver looks its name up among all of the statement's parameters, so a
/// statement's binding time grows with the square of its size (on SQLite, 400 rows a
/// statement stored under 5,000 tokens a second, 32 rows 15,000, 12 rows more still).
const TOKENS_PER_STATEMENT: usize = 12;
/// Rows per multi-row `INSERT` of import keys (4 values each).
const KEYS_PER_STATEMENT: usize = 40;
/// SQLite's page cache on an importing connection: 256 MiB (negative: KiB).
const IMPORT_CACHE: &str = "PRAGMA cache_size = -262144";
/// Values per `IN (…)` list.
const IDS_PER_LOOKUP: usize = 128;

/// Inserts tokens with multi-row statements inside the caller's transaction.
pub(super) async fn insert_token_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tokens: &[TokenRecord],
    now: i64,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 13;
    for chunk in tokens.chunks(TOKENS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO tokens (id, project_id, kind, key_version, nonce, ciphertext, fingerprint, bin, last4, brand, created_at, updated_at, expires_at) VALUES {}",
            super::values_placeholders(chunk.len(), COLUMNS)
        );
        // Built from numbered placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for token in chunk {
            query = query
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
                .bind(token.expires_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `$first, $first+1, …`: `n` numbered placeholders for an `IN` list.
fn in_list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl PortabilityStore for SqlStore {
    async fn imported_tokens(
        &self,
        project_id: &str,
        old_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.before_read()?;
        let mut found = Vec::new();
        for chunk in old_ids.chunks(IDS_PER_LOOKUP) {
            let sql = format!(
                "SELECT old_id, token_id FROM import_keys WHERE project_id = $1 AND old_id IN ({})",
                in_list(2, chunk.len())
            );
            // Built from numbered placeholders only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project_id);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
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
        let now = now_unix();
        let mut found = Vec::new();
        for chunk in fingerprints.chunks(IDS_PER_LOOKUP) {
            let sql = format!(
                "SELECT fingerprint, id FROM tokens WHERE project_id = $1 AND deleted_at IS NULL
                 AND (expires_at IS NULL OR expires_at > $2) AND fingerprint IN ({})",
                in_list(3, chunk.len())
            );
            // Built from numbered placeholders only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(project_id)
                .bind(now);
            for fp in chunk {
                query = query.bind(fp.as_slice());
            }
            for row in query.fetch_all(&self.pool).await? {
                found.push((row.try_get("fingerprint")?, row.try_get("id")?));
            }
        }
        Ok(found)
    }

    async fn import_batch(
        &self,
        project_id: &str,
        tokens: &[TokenRecord],
        keys: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        let mut conn = self.pool.acquire().await?;
        if self.sqlite.is_some() {
            // Tokens' ids are random, so each batch touches pages all over the tables' indexes:
            // with SQLite's default 2 MB page cache, a large import would read most of them
            // back from the file on every batch. This connection (the importing process's
            // own, not a serving instance's) keeps more of them.
            conn.execute(IMPORT_CACHE).await?;
        }
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        insert_token_rows(&mut tx, tokens, now).await?;
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO import_keys (project_id, old_id, token_id, created_at) VALUES {}",
                super::values_placeholders(chunk.len(), 4)
            );
            // Built from numbered placeholders only; every value is bound.
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
        .fetch_all(&self.pool)
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
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
    }
}
