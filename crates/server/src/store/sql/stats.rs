//! Counts for the metrics (same SQL on both engines).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::store::{PoolUsage, StoreError, StoreStats};

/// Every sealed value with its data key version: live tokens (a deleted token's ciphertext is
/// erased) and processor TLS client keys.
const SEALED_PER_VERSION: &str = "SELECT key_version, count(*) AS n FROM (
       SELECT key_version FROM tokens WHERE deleted_at IS NULL
       UNION ALL
       SELECT key_version FROM destination_tls WHERE key_version IS NOT NULL
     ) sealed GROUP BY key_version";

#[async_trait]
impl StoreStats for SqlStore {
    fn pool_usage(&self) -> PoolUsage {
        PoolUsage {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn live_collect_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT count(*) AS n FROM collect_sessions WHERE expires_at > $1 AND remaining_calls > 0",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        count(row.try_get("n")?)
    }

    async fn sealed_records(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.before_read()?;
        let mut per_version = BTreeMap::new();
        for row in sqlx::query("SELECT version FROM data_keys")
            .fetch_all(&self.pool)
            .await?
        {
            per_version.insert(version(row.try_get("version")?)?, 0);
        }
        for row in sqlx::query(SEALED_PER_VERSION)
            .fetch_all(&self.pool)
            .await?
        {
            let n = count(row.try_get("n")?)?;
            *per_version
                .entry(version(row.try_get("key_version")?)?)
                .or_insert(0) += n;
        }
        Ok(per_version.into_iter().collect())
    }
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt("a negative count"))
}

fn version(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("data key version"))
}
