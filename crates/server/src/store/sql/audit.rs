//! The audit log's queries (same SQL on both engines).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::SqlStore;
use crate::audit::AuditRow;
use crate::store::{AuditFilter, AuditStore, StoreError};

/// Records per INSERT: 512 × 12 bound values, well within SQLite's (32,766) and PostgreSQL's
/// (65,535) limits, and as many as the writer groups at once, so a group is one statement.
const ROWS_PER_STATEMENT: usize = 512;

/// The columns an insert sets (`id` is assigned by the database).
pub(super) const INSERTED_COLUMNS: &str = "chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash";

/// A chain's head on SQLite, whose commits are synchronous: after a failed one, the group either
/// landed or did not before the head is read back, so the writer never numbers a record twice.
const HEAD_BY_ID: &str =
    "SELECT seq, hash FROM audit_log WHERE chain = $1 ORDER BY id DESC LIMIT 1";

/// A chain's head on PostgreSQL, by its unique `(chain, seq)` index, which stays there: a
/// commit reported failed (the connection lost) may still land after the head was read back,
/// and the index then refuses the second group numbered from the same head.
const HEAD_BY_SEQ: &str =
    "SELECT seq, hash FROM audit_log WHERE chain = $1 ORDER BY seq DESC LIMIT 1";

const COLUMNS: &str = "id, chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash";

impl SqlStore {
    /// `rows` in one statement (PostgreSQL), on a kept connection when one is free (see
    /// `kept`). If that connection fails, whether the statement landed is unknown: the rows
    /// are written again on the pool (see [`Self::insert_audit_rows_again`]).
    async fn insert_audit_rows_on_kept(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        let Some(mut kept) = self.kept().take().await? else {
            insert_audit_rows(rows).execute(self.pool()).await?;
            return Ok(());
        };
        match insert_audit_rows(rows).execute(kept.conn()).await {
            Ok(_) => {
                kept.put_back();
                Ok(())
            }
            Err(e) if super::kept::connection_failed(&e) => {
                kept.close();
                tracing::warn!(error = %e, "a kept database connection failed: the audit records are written again on another");
                self.insert_audit_rows_again(rows).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `rows` written again after a statement whose outcome is unknown. A record already there
    /// by its unique `(chain, seq)` is skipped, if it is this one: the first statement landed.
    /// One numbered the same but different (the writer numbered a group from a head it read
    /// back while an earlier group's outcome was still unknown, and that group landed) fails
    /// the write, and nothing of it is stored: the writer then reads its head back again.
    async fn insert_audit_rows_again(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        static STORED: super::marks::TextBySize = super::marks::TextBySize::new(|rows| {
            format!(
                "SELECT count(*) AS n FROM audit_log WHERE (chain, seq, hash) IN ({})",
                super::marks::Marks::Numbered.rows(rows, 3)
            )
        });
        let again = format!(
            "{} ON CONFLICT (chain, seq) DO NOTHING",
            INSERT_AUDIT.get(rows.len())
        );
        let mut tx = self.pool().begin().await?;
        bind_audit_rows(again, rows).execute(&mut *tx).await?;
        let mut stored = sqlx::query(sqlx::AssertSqlSafe(STORED.get(rows.len())));
        for row in rows {
            stored = stored
                .bind(row.chain.clone())
                .bind(row.seq)
                .bind(row.hash.clone());
        }
        let stored: i64 = stored.fetch_one(&mut *tx).await?.try_get("n")?;
        if usize::try_from(stored) == Ok(rows.len()) {
            tx.commit().await?;
            Ok(())
        } else {
            // Not committed: the transaction rolls back as it is dropped.
            // As the first try's unique index would have answered.
            Err(StoreError::Conflict)
        }
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        self.before_write()?;
        if let Some(direct) = &self.direct {
            let written = match direct.append_audit_inline(rows).await {
                Ok(written) => written,
                // Another writer holds the file: wait for it off the runtime's threads.
                Err(_busy) => {
                    let direct = direct.clone();
                    let rows = rows.to_vec();
                    tokio::task::spawn_blocking(move || direct.append_audit(&rows, true))
                        .await
                        .map_err(|_| StoreError::Corrupt("the audit write's thread"))?
                        .unwrap_or_else(|busy| Err(StoreError::Sqlite(busy.0)))
                }
            };
            written?;
            return self.after_write();
        }
        if rows.len() <= ROWS_PER_STATEMENT {
            // One statement is atomic on its own: no transaction, one round trip.
            self.insert_audit_rows_on_kept(rows).await?;
        } else {
            let mut tx = self.pool().begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                insert_audit_rows(chunk).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        self.after_write()
    }

    async fn audit_head(&self, chain: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.before_read()?;
        // SQLite keeps no index on `chain` (it would cost every commit a page): a chain's one
        // writer adds its records in order, so its head is its newest, found from the newest id
        // down. PostgreSQL keeps its `(chain, seq)` index (see `HEAD_BY_SEQ`).
        let query = if self.sqlite.is_some() {
            HEAD_BY_ID
        } else {
            HEAD_BY_SEQ
        };
        let row = sqlx::query(query)
            .bind(chain)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.before_read()?;
        let mut conditions = vec!["id > $1".to_owned()];
        let mut n = 1;
        let mut next = |column: &str, op: &str| {
            n += 1;
            format!("{column} {op} ${n}")
        };
        if filter.project_id.is_some() {
            conditions.push(next("project_id", "="));
        }
        if filter.action.is_some() {
            conditions.push(next("action", "="));
        }
        if filter.token.is_some() {
            conditions.push(next("token", "="));
        }
        if filter.since_ms.is_some() {
            conditions.push(next("at_ms", ">="));
        }
        if filter.until_ms.is_some() {
            conditions.push(next("at_ms", "<"));
        }
        let limit = next("", "").trim().to_owned();
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE {} ORDER BY id LIMIT {limit}",
            conditions.join(" AND ")
        );
        // Built from fixed column names and numbered placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.after_id);
        for text in [&filter.project_id, &filter.action, &filter.token]
            .into_iter()
            .flatten()
        {
            query = query.bind(text.clone());
        }
        for at in [filter.since_ms, filter.until_ms].into_iter().flatten() {
            query = query.bind(at);
        }
        let rows = query.bind(filter.limit).fetch_all(self.pool()).await?;
        rows.iter().map(audit_row).collect()
    }
}

fn audit_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        chain: row.try_get("chain")?,
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        request_id: row.try_get("request_id")?,
        project_id: row.try_get("project_id")?,
        application_id: row.try_get("application_id")?,
        action: row.try_get("action")?,
        outcome: row.try_get("outcome")?,
        token: row.try_get("token")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// The audit `INSERT` of `rows` records, in numbered marks (both engines take them: the
/// embedded database's own statements, and PostgreSQL's).
pub(super) static INSERT_AUDIT: super::marks::TextBySize = super::marks::TextBySize::new(|rows| {
    format!(
        "INSERT INTO audit_log ({INSERTED_COLUMNS}) VALUES {}",
        super::marks::Marks::Numbered.rows(rows, 12)
    )
});

fn insert_audit_rows(
    rows: &[AuditRow],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    bind_audit_rows(INSERT_AUDIT.get(rows.len()), rows)
}

/// `sql`, an audit `INSERT` of `rows.len()` records, with `rows` bound to it.
fn bind_audit_rows(
    sql: impl Into<std::sync::Arc<str>>,
    rows: &[AuditRow],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    // Built from numbered placeholders only; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.into()));
    for row in rows {
        query = query
            .bind(row.chain.clone())
            .bind(row.seq)
            .bind(row.at_ms)
            .bind(row.request_id.clone())
            .bind(row.project_id.clone())
            .bind(row.application_id.clone())
            .bind(row.action.clone())
            .bind(row.outcome.clone())
            .bind(row.token.clone())
            .bind(row.detail.clone())
            .bind(row.prev_hash.clone())
            .bind(row.hash.clone());
    }
    query
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::scratch_postgres::ScratchDatabase;
    use crate::audit::AuditRow;
    use crate::store::{AuditStore, StoreError};

    /// Records `seqs` of one chain (the store checks no hash: any bytes do).
    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<AuditRow> {
        seqs.map(|seq| AuditRow {
            id: 0,
            chain: "chain_a".to_owned(),
            seq,
            at_ms: 1_000 + seq,
            request_id: format!("req_{seq}"),
            project_id: "proj_1".to_owned(),
            application_id: "app_1".to_owned(),
            action: "proxy".to_owned(),
            outcome: "ok".to_owned(),
            token: "tok_a".to_owned(),
            detail: "{}".to_owned(),
            prev_hash: vec![0; 32],
            hash: vec![u8::try_from(seq).unwrap(); 32],
        })
        .collect()
    }

    const STORED: &str = "SELECT count(*) FROM audit_log";
    const DISTINCT: &str = "SELECT count(DISTINCT seq) FROM audit_log";

    #[tokio::test]
    async fn an_audit_group_whose_kept_connection_the_server_ended_is_written_once_on_another() {
        let database = ScratchDatabase::new().await;
        let store = database.store(4).await;
        store.append_audit(&rows(1..=2)).await.unwrap();
        assert_eq!(
            store.kept().idle(),
            1,
            "the first group's connection is kept"
        );
        database.end_connections().await;
        store.append_audit(&rows(3..=5)).await.unwrap();
        // The kept connection failed, was closed, and the group went on the pool.
        assert_eq!(store.kept().idle(), 0);
        assert_eq!(database.number(STORED).await, 5);
        assert_eq!(database.number(DISTINCT).await, 5);
        // The next group goes on a kept connection again, a live one.
        store.append_audit(&rows(6..=6)).await.unwrap();
        assert_eq!(store.kept().idle(), 1);
        assert_eq!(database.number(STORED).await, 6);
    }

    #[tokio::test]
    async fn a_group_written_again_after_it_landed_is_not_stored_twice() {
        let database = ScratchDatabase::new().await;
        let store = database.store(4).await;
        store.append_audit(&rows(1..=3)).await.unwrap();
        // The first statement landed, its answer was lost: written again, nothing is added.
        store.insert_audit_rows_again(&rows(1..=3)).await.unwrap();
        assert_eq!(database.number(STORED).await, 3);
        // It did not land: written again, it is all there.
        store.insert_audit_rows_again(&rows(4..=5)).await.unwrap();
        assert_eq!(database.number(STORED).await, 5);
        // Part of it there, the same records: the rest is added.
        store.insert_audit_rows_again(&rows(5..=6)).await.unwrap();
        assert_eq!(database.number(STORED).await, 6);
        assert_eq!(database.number(DISTINCT).await, 6);
    }

    #[tokio::test]
    async fn records_numbered_as_others_already_stored_are_refused_when_written_again() {
        let database = ScratchDatabase::new().await;
        let store = database.store(4).await;
        store.append_audit(&rows(1..=3)).await.unwrap();
        // The writer numbered a group from a head read back too early: the same numbers,
        // other records. Skipping them would answer calls whose records are not stored.
        let mut others = rows(2..=4);
        for row in &mut others {
            row.request_id.push_str("_other");
            row.hash = vec![0xee; 32];
        }
        let written = store.insert_audit_rows_again(&others).await;
        assert!(matches!(written, Err(StoreError::Conflict)), "{written:?}");
        assert_eq!(
            database.number(STORED).await,
            3,
            "seq 4 was not added either"
        );
    }
}
