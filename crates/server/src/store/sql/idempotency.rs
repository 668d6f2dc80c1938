//! The queries of idempotency keys (same SQL on both engines).

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::store::{IdempotencyClaim, IdempotencyRecord, IdempotencyStore, StoreError};

const RUNNING: i64 = 0;
const ANSWERED: i64 = 1;

#[async_trait]
impl IdempotencyStore for SqlStore {
    async fn claim_idempotency_key(
        &self,
        project_id: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        self.before_write()?;
        // One statement, so two instances racing on a key cannot both take it: the insert
        // wins only where there is no record, or only one that has expired.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys
                 (project_id, key_hash, request_hash, state, answer, created_at, expires_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6)
             ON CONFLICT (project_id, key_hash) DO UPDATE SET
                 request_hash = excluded.request_hash, state = excluded.state, answer = NULL,
                 created_at = excluded.created_at, expires_at = excluded.expires_at
             WHERE idempotency_keys.expires_at <= $5",
        )
        .bind(project_id)
        .bind(key_hash)
        .bind(request_hash)
        .bind(RUNNING)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        self.after_write()?;
        if claimed {
            return Ok(IdempotencyClaim::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_hash, state, answer FROM idempotency_keys
             WHERE project_id = $1 AND key_hash = $2",
        )
        .bind(project_id)
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(IdempotencyClaim::Held(IdempotencyRecord {
                request_hash: row.try_get("request_hash")?,
                answer: if row.try_get::<i64, _>("state")? == ANSWERED {
                    row.try_get("answer")?
                } else {
                    None
                },
            })),
            // Released between the two statements: the key is free again.
            None => {
                Box::pin(self.claim_idempotency_key(
                    project_id,
                    key_hash,
                    request_hash,
                    now,
                    expires_at,
                ))
                .await
            }
        }
    }

    async fn keep_idempotent_answer(
        &self,
        project_id: &str,
        key_hash: &[u8],
        answer: &[u8],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query(
            "UPDATE idempotency_keys SET state = $1, answer = $2
             WHERE project_id = $3 AND key_hash = $4 AND state = $5",
        )
        .bind(ANSWERED)
        .bind(answer)
        .bind(project_id)
        .bind(key_hash)
        .bind(RUNNING)
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn release_idempotency_key(
        &self,
        project_id: &str,
        key_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE project_id = $1 AND key_hash = $2 AND state = $3",
        )
        .bind(project_id)
        .bind(key_hash)
        .bind(RUNNING)
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn sweep_idempotency_keys(&self, now: i64, limit: u32) -> Result<u64, StoreError> {
        self.before_write()?;
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (project_id, key_hash) IN (
                 SELECT project_id, key_hash FROM idempotency_keys
                 WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?
        .rows_affected();
        self.after_write()?;
        Ok(deleted)
    }
}
