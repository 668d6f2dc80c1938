//! The queries of data-key rotation (same SQL on both engines).

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::clock::now_unix_ms;
use crate::crypto::{Sealed, WrappedDataKey};
use crate::store::{KeyJob, KeyStore, SealedKind, SealedRecord, StoreError};

#[async_trait]
impl KeyStore for SqlStore {
    async fn activate_data_key(&self, version: u32) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query("UPDATE data_keys SET active = 1 WHERE version = $1")
            .bind(i64::from(version))
            .execute(self.pool())
            .await?;
        self.after_write()?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_unused_data_key(&self, version: u32) -> Result<u64, StoreError> {
        self.before_write()?;
        let version = i64::from(version);
        let mut tx = self.pool().begin().await?;
        // Counted and deleted in one transaction: a record sealed with it in between (by an
        // instance pinned to it) would otherwise lose its key.
        let mut in_use = 0;
        for sql in [
            "SELECT COUNT(*) FROM tokens WHERE key_version = $1",
            "SELECT COUNT(*) FROM destination_tls WHERE key_version = $1",
        ] {
            let count: i64 = sqlx::query(sql)
                .bind(version)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            in_use += count as u64;
        }
        if in_use == 0 {
            let deleted = sqlx::query("DELETE FROM data_keys WHERE version = $1")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
        tx.commit().await?;
        self.after_write()?;
        Ok(in_use)
    }

    async fn sealed_counts(&self) -> Result<Vec<(SealedKind, u32, u64)>, StoreError> {
        self.before_read()?;
        let mut counts = Vec::new();
        for (kind, sql) in [
            (
                SealedKind::Token,
                "SELECT key_version, COUNT(*) AS n FROM tokens WHERE key_version <> 0 GROUP BY key_version",
            ),
            (
                SealedKind::TlsClientKey,
                "SELECT key_version, COUNT(*) AS n FROM destination_tls WHERE key_version IS NOT NULL GROUP BY key_version",
            ),
        ] {
            for row in sqlx::query(sql).fetch_all(self.pool()).await? {
                let version: i64 = row.try_get("key_version")?;
                let n: i64 = row.try_get("n")?;
                counts.push((kind, version as u32, n as u64));
            }
        }
        Ok(counts)
    }

    async fn sealed_batch(
        &self,
        kind: SealedKind,
        target: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedRecord>, StoreError> {
        self.before_read()?;
        let sql = match kind {
            SealedKind::Token => {
                "SELECT project_id, id, key_version, nonce, ciphertext FROM tokens
                 WHERE id > $1 AND key_version NOT IN (0, $2) ORDER BY id LIMIT $3"
            }
            // Hosts repeat across projects: the cursor is the pair, written as one string.
            SealedKind::TlsClientKey => {
                "SELECT project_id, host AS id, key_version, key_nonce AS nonce, key_ciphertext AS ciphertext
                 FROM destination_tls
                 WHERE project_id || ' ' || host > $1 AND key_version IS NOT NULL AND key_version <> $2
                 ORDER BY project_id || ' ' || host LIMIT $3"
            }
        };
        let rows = sqlx::query(sql)
            .bind(after)
            .bind(i64::from(target))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SealedRecord {
                    project_id: row.try_get("project_id")?,
                    id: row.try_get("id")?,
                    sealed: Sealed {
                        key_version: row.try_get::<i64, _>("key_version")? as u32,
                        nonce: row.try_get("nonce")?,
                        ciphertext: row.try_get("ciphertext")?,
                    },
                })
            })
            .collect()
    }

    async fn reseal(
        &self,
        kind: SealedKind,
        records: &[(SealedRecord, Sealed)],
    ) -> Result<u64, StoreError> {
        self.before_write()?;
        let sql = match kind {
            SealedKind::Token => {
                "UPDATE tokens SET key_version = $1, nonce = $2, ciphertext = $3
                 WHERE project_id = $4 AND id = $5 AND key_version = $6 AND nonce = $7"
            }
            SealedKind::TlsClientKey => {
                "UPDATE destination_tls SET key_version = $1, key_nonce = $2, key_ciphertext = $3
                 WHERE project_id = $4 AND host = $5 AND key_version = $6 AND key_nonce = $7"
            }
        };
        let mut tx = self.pool().begin().await?;
        let mut replaced = 0;
        for (old, new) in records {
            let result = sqlx::query(sql)
                .bind(i64::from(new.key_version))
                .bind(new.nonce.clone())
                .bind(new.ciphertext.clone())
                .bind(old.project_id.clone())
                .bind(old.id.clone())
                .bind(i64::from(old.sealed.key_version))
                .bind(old.sealed.nonce.clone())
                .execute(&mut *tx)
                .await?;
            replaced += result.rows_affected();
        }
        tx.commit().await?;
        self.after_write()?;
        Ok(replaced)
    }

    async fn key_job(&self, name: &str) -> Result<Option<KeyJob>, StoreError> {
        self.before_read()?;
        let row =
            sqlx::query("SELECT owner, heartbeat_at, target_version FROM key_jobs WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| {
            Ok(KeyJob {
                owner: row.try_get("owner")?,
                heartbeat_at_ms: row.try_get("heartbeat_at")?,
                target_version: row
                    .try_get::<Option<i64>, _>("target_version")?
                    .map(|v| v as u32),
            })
        })
        .transpose()
    }

    async fn claim_key_job(
        &self,
        name: &str,
        expected: Option<&KeyJob>,
        owner: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.before_write()?;
        let result = match expected {
            None => {
                sqlx::query(
                    "INSERT INTO key_jobs (name, owner, heartbeat_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(owner)
                .bind(now_ms)
                .execute(self.pool())
                .await?
            }
            Some(seen) => {
                sqlx::query(
                    "UPDATE key_jobs SET owner = $1, heartbeat_at = $2
                     WHERE name = $3 AND owner = $4 AND heartbeat_at = $5",
                )
                .bind(owner)
                .bind(now_ms)
                .bind(name)
                .bind(seen.owner.clone())
                .bind(seen.heartbeat_at_ms)
                .execute(self.pool())
                .await?
            }
        };
        self.after_write()?;
        Ok(result.rows_affected() == 1)
    }

    async fn update_key_job(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        target_version: Option<u32>,
    ) -> Result<bool, StoreError> {
        self.before_write()?;
        let result = sqlx::query(
            "UPDATE key_jobs SET heartbeat_at = $1, target_version = $2 WHERE name = $3 AND owner = $4",
        )
        .bind(now_ms)
        .bind(target_version.map(i64::from))
        .bind(name)
        .bind(owner)
        .execute(self.pool())
        .await?;
        self.after_write()?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_key_job(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query("UPDATE key_jobs SET owner = '' WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(self.pool())
            .await?;
        self.after_write()
    }

    async fn wrapped_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.before_read()?;
        let row = sqlx::query("SELECT wrapped FROM wrapped_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("wrapped")).transpose()?)
    }

    async fn insert_wrapped_secret(&self, name: &str, wrapped: &[u8]) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query("INSERT INTO wrapped_secrets (name, wrapped, updated_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(wrapped)
            .bind(now_unix_ms())
            .execute(self.pool())
            .await?;
        self.after_write()
    }

    async fn rewrap(
        &self,
        keys: &[(WrappedDataKey, WrappedDataKey)],
        name: &str,
        old_secret: Option<&[u8]>,
        new_secret: &[u8],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let mut tx = self.pool().begin().await?;
        for (old, new) in keys {
            let result = sqlx::query(
                "UPDATE data_keys SET wrapped = $1 WHERE version = $2 AND wrapped = $3",
            )
            .bind(&new.wrapped)
            .bind(i64::from(old.version))
            .bind(&old.wrapped)
            .execute(&mut *tx)
            .await?;
            if result.rows_affected() != 1 {
                return Err(StoreError::Conflict);
            }
        }
        let replaced =
            match old_secret {
                Some(old) => {
                    sqlx::query(
                        "UPDATE wrapped_secrets SET wrapped = $1, updated_at = $2
                     WHERE name = $3 AND wrapped = $4",
                    )
                    .bind(new_secret)
                    .bind(now_unix_ms())
                    .bind(name)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?
                }
                None => sqlx::query(
                    "INSERT INTO wrapped_secrets (name, wrapped, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(new_secret)
                .bind(now_unix_ms())
                .execute(&mut *tx)
                .await?,
            };
        if replaced.rows_affected() != 1 {
            return Err(StoreError::Conflict);
        }
        // Every data key the vault has must have moved: one added meanwhile would be left
        // wrapped by the old master key.
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM data_keys")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count as usize != keys.len() {
            return Err(StoreError::Conflict);
        }
        tx.commit().await?;
        self.after_write()
    }
}
