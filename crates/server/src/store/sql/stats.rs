//! Counts for the metrics (same SQL on both engines).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::store::{PoolUsage, Store, StoreError, StoreStats};

#[async_trait]
impl StoreStats for SqlStore {
    fn pool_usage(&self) -> PoolUsage {
        // Summed over the pools (one for each serving thread on PostgreSQL, see `SqlStore`).
        // A kept connection (see `kept`) not in use is idle too: the pool counts it in use.
        let (open, idle) = self.pools.all().fold((0, 0_u32), |(open, idle), each| {
            let pool_idle = each.pool.num_idle() + each.kept.idle();
            let pool_idle = u32::try_from(pool_idle).unwrap_or(u32::MAX);
            (open + each.pool.size(), idle.saturating_add(pool_idle))
        });
        PoolUsage {
            open,
            idle,
            max: self.max_connections_total,
        }
    }

    async fn live_collect_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT count(*) AS n FROM collect_sessions WHERE expires_at > $1 AND remaining_calls > 0",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        count(row.try_get("n")?)
    }

    async fn sealed_records(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut per_version: BTreeMap<u32, u64> = self
            .data_keys()
            .await?
            .iter()
            .map(|k| (k.version, 0))
            .collect();
        for (_, version, n) in crate::store::KeyStore::sealed_counts(self).await? {
            *per_version.entry(version).or_insert(0) += n;
        }
        Ok(per_version.into_iter().collect())
    }
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt("a negative count"))
}
