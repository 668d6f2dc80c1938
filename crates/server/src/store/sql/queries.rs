//! The store's queries, written once in the SQL both engines accept (`$n` parameters,
//! `ON CONFLICT`). Every read first asks whether the embedded database's files are sound, and
//! every write checks them before and after (see `sqlite_files`).

use async_trait::async_trait;
use sqlx::Row;

use super::rows::{
    application_from_row, project_from_row, select_token, shred_tokens, token_from_row,
};
use super::{PROBE_WRITE, SqlStore};
use crate::crypto::{Sealed, WrappedDataKey};
use crate::store::{
    Application, ApplicationRecord, CollectSession, DestinationTls, Permissions, Project, Store,
    StoreError, TokenRecord, now_unix,
};

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        match &self.sqlite {
            Some(upkeep) => upkeep.probe_write().await,
            None => {
                sqlx::query(PROBE_WRITE)
                    .bind(now_unix())
                    .execute(self.pool())
                    .await?;
                Ok(())
            }
        }
    }

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError> {
        self.before_read()?;
        let rows = sqlx::query("SELECT version, wrapped, active FROM data_keys ORDER BY version")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WrappedDataKey {
                    version: row.try_get::<i64, _>("version")? as u32,
                    wrapped: row.try_get("wrapped")?,
                    active: row.try_get::<i64, _>("active")? != 0,
                })
            })
            .collect()
    }

    async fn insert_data_key(&self, key: &WrappedDataKey) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query(
            "INSERT INTO data_keys (version, wrapped, created_at, active) VALUES ($1, $2, $3, $4)",
        )
        .bind(i64::from(key.version))
        .bind(&key.wrapped)
        .bind(now_unix())
        .bind(i64::from(key.active))
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn insert_project(
        &self,
        project: &Project,
        pub_key_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query(
            "INSERT INTO projects (id, name, mode, pub_key_hash, deduplicate, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(project.mode.as_str())
        .bind(pub_key_hash)
        .bind(i64::from(project.deduplicate))
        .bind(now_unix())
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn insert_application(
        &self,
        app: &Application,
        key_hash: &[u8],
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO applications (id, project_id, name, key_hash, permissions, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&app.id)
        .bind(&app.project_id)
        .bind(&app.name)
        .bind(key_hash)
        .bind(app.permissions.to_list())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO application_keys (key_hash, application_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(key_hash)
        .bind(&app.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.after_write()
    }

    async fn project(&self, id: &str) -> Result<Project, StoreError> {
        self.before_read()?;
        let row = sqlx::query("SELECT id, name, mode, deduplicate FROM projects WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        project_from_row(&row)
    }

    async fn project_by_pub_key(&self, pub_key_hash: &[u8]) -> Result<Project, StoreError> {
        self.before_read()?;
        let row =
            sqlx::query("SELECT id, name, mode, deduplicate FROM projects WHERE pub_key_hash = $1")
                .bind(pub_key_hash)
                .fetch_one(self.pool())
                .await?;
        project_from_row(&row)
    }

    async fn application_by_key(
        &self,
        key_hash: &[u8],
    ) -> Result<(Application, Project), StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT a.id AS app_id, a.name AS app_name, a.permissions, k.expires_at AS key_expires_at,
                    p.id, p.name, p.mode, p.deduplicate
             FROM application_keys k
             JOIN applications a ON a.id = k.application_id
             JOIN projects p ON p.id = a.project_id
             WHERE k.key_hash = $1 AND a.revoked = 0 AND (k.expires_at IS NULL OR k.expires_at > $2)",
        )
        .bind(key_hash)
        .bind(now_unix())
        .fetch_one(self.pool())
        .await?;
        let project = project_from_row(&row)?;
        let permissions: String = row.try_get("permissions")?;
        let app = Application {
            id: row.try_get("app_id")?,
            project_id: project.id.clone(),
            name: row.try_get("app_name")?,
            permissions: Permissions::parse(&permissions)
                .ok_or_else(|| StoreError::Corrupt("application permissions"))?,
            key_expires_at: row.try_get("key_expires_at")?,
        };
        Ok((app, project))
    }

    async fn insert_token_unless_held(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.before_write()?;
        self.insert_token_row(token, now_unix()).await?;
        self.after_write()
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        let inserted = self.insert_token_row(token, now).await;
        match (&inserted, &token.fingerprint) {
            (Err(StoreError::Conflict), Some(fingerprint)) => {
                // The card's fingerprint may still be held by an expired token the sweeper has
                // not reached yet: erase that one now, as the sweeper would, and the card gets
                // its new token. (Only on a conflict, so tokenize stays one write.)
                let erased = shred(shred_tokens!(
                    "project_id = $4 AND fingerprint = $5 AND deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $3"
                ), now)
                .bind(&token.project_id)
                .bind(fingerprint)
                .execute(self.pool())
                .await?;
                if erased.rows_affected() == 0 {
                    return inserted;
                }
                self.insert_token_row(token, now).await?;
            }
            _ => inserted?,
        }
        self.after_write()
    }

    async fn token(&self, project_id: &str, id: &str) -> Result<TokenRecord, StoreError> {
        self.before_read()?;
        if let Some(direct) = &self.direct
            && let Ok(found) = direct.token(project_id, id, now_unix())
        {
            return found;
        }
        self.token_elsewhere(project_id, id).await
    }

    async fn sealed_token(&self, project_id: &str, id: &str) -> Result<Sealed, StoreError> {
        self.before_read()?;
        if let Some(direct) = &self.direct
            && let Ok(found) = direct.sealed_token(project_id, id, now_unix())
        {
            return found;
        }
        self.token_elsewhere(project_id, id)
            .await
            .map(|record| record.sealed)
    }

    async fn token_by_fingerprint(
        &self,
        project_id: &str,
        fingerprint: &[u8],
    ) -> Result<TokenRecord, StoreError> {
        self.before_read()?;
        let row = sqlx::query(select_token!(
            "project_id = $1 AND fingerprint = $2 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $3)"
        ))
        .bind(project_id)
        .bind(fingerprint)
        .bind(now_unix())
        .fetch_one(self.pool())
        .await?;
        token_from_row(&row)
    }

    async fn destination_rules(&self, project_id: &str) -> Result<Vec<String>, StoreError> {
        self.before_read()?;
        let rows = sqlx::query(
            "SELECT rule FROM project_destinations WHERE project_id = $1 ORDER BY rule",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("rule")?)).collect()
    }

    async fn add_destination_rule(&self, project_id: &str, rule: &str) -> Result<(), StoreError> {
        self.before_write()?;
        sqlx::query("INSERT INTO project_destinations (project_id, rule, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(project_id)
            .bind(rule)
            .bind(now_unix())
            .execute(self.pool())
            .await?;
        self.after_write()
    }

    async fn set_destination_rules(
        &self,
        project_id: &str,
        rules: &[String],
    ) -> Result<(), StoreError> {
        self.replace_project_list(ProjectList::Destinations, project_id, rules)
            .await
    }

    async fn remove_destination_rule(
        &self,
        project_id: &str,
        rule: &str,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let result =
            sqlx::query("DELETE FROM project_destinations WHERE project_id = $1 AND rule = $2")
                .bind(project_id)
                .bind(rule)
                .execute(self.pool())
                .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn destination_tls(&self, project_id: &str) -> Result<Vec<DestinationTls>, StoreError> {
        self.before_read()?;
        let rows = sqlx::query(
            "SELECT host, ca_pem, client_cert_pem, key_version, key_nonce, key_ciphertext, updated_at
             FROM destination_tls WHERE project_id = $1 ORDER BY host",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let version: Option<i64> = row.try_get("key_version")?;
                let nonce: Option<Vec<u8>> = row.try_get("key_nonce")?;
                let ciphertext: Option<Vec<u8>> = row.try_get("key_ciphertext")?;
                let client_key = match (version, nonce, ciphertext) {
                    (Some(v), Some(nonce), Some(ciphertext)) => Some(Sealed {
                        key_version: v as u32,
                        nonce,
                        ciphertext,
                    }),
                    _ => None,
                };
                Ok(DestinationTls {
                    host: row.try_get("host")?,
                    ca_pem: row.try_get("ca_pem")?,
                    client_cert_pem: row.try_get("client_cert_pem")?,
                    client_key,
                    updated_at_ms: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_destination_tls(
        &self,
        project_id: &str,
        tls: &DestinationTls,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let key = tls.client_key.as_ref();
        sqlx::query(
            "INSERT INTO destination_tls
             (project_id, host, ca_pem, client_cert_pem, key_version, key_nonce, key_ciphertext, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (project_id, host) DO UPDATE SET ca_pem = excluded.ca_pem,
               client_cert_pem = excluded.client_cert_pem, key_version = excluded.key_version,
               key_nonce = excluded.key_nonce, key_ciphertext = excluded.key_ciphertext,
               updated_at = excluded.updated_at",
        )
        .bind(project_id)
        .bind(&tls.host)
        .bind(&tls.ca_pem)
        .bind(&tls.client_cert_pem)
        .bind(key.map(|k| i64::from(k.key_version)))
        .bind(key.map(|k| k.nonce.clone()))
        .bind(key.map(|k| k.ciphertext.clone()))
        .bind(tls.updated_at_ms)
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn remove_destination_tls(&self, project_id: &str, host: &str) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query("DELETE FROM destination_tls WHERE project_id = $1 AND host = $2")
            .bind(project_id)
            .bind(host)
            .execute(self.pool())
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn insert_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError> {
        self.before_write()?;
        let mut tx = self.pool().begin().await?;
        super::portability::insert_token_rows(
            &mut tx,
            super::marks::Marks::of(self),
            tokens,
            now_unix(),
        )
        .await?;
        tx.commit().await?;
        self.after_write()
    }

    async fn update_token_data(
        &self,
        project_id: &str,
        id: &str,
        sealed: &Sealed,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query(
            "UPDATE tokens SET key_version = $1, nonce = $2, ciphertext = $3, updated_at = $4, expires_at = $5
             WHERE id = $6 AND project_id = $7 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(i64::from(sealed.key_version))
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(now_unix())
        .bind(expires_at)
        .bind(id)
        .bind(project_id)
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn applications(&self, project_id: &str) -> Result<Vec<ApplicationRecord>, StoreError> {
        self.before_read()?;
        let rows = sqlx::query(
            "SELECT id, project_id, name, permissions, created_at FROM applications
             WHERE project_id = $1 AND revoked = 0 ORDER BY created_at, id",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(application_from_row).collect()
    }

    async fn application(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<ApplicationRecord, StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT id, project_id, name, permissions, created_at FROM applications
             WHERE project_id = $1 AND id = $2 AND revoked = 0",
        )
        .bind(project_id)
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        application_from_row(&row)
    }

    async fn update_application(
        &self,
        project_id: &str,
        id: &str,
        name: &str,
        permissions: Permissions,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query(
            "UPDATE applications SET name = $1, permissions = $2
             WHERE project_id = $3 AND id = $4 AND revoked = 0",
        )
        .bind(name)
        .bind(permissions.to_list())
        .bind(project_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn revoke_application(&self, project_id: &str, id: &str) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query(
            "UPDATE applications SET revoked = 1 WHERE project_id = $1 AND id = $2 AND revoked = 0",
        )
        .bind(project_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn roll_application_key(
        &self,
        project_id: &str,
        id: &str,
        new_key_hash: &[u8],
        old_keys_expire_at: i64,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        let mut tx = self.pool().begin().await?;
        // The application must be live and the project's; checked inside the transaction so a
        // revoke racing the roll cannot leave a fresh key on a revoked application.
        sqlx::query(
            "SELECT id FROM applications WHERE project_id = $1 AND id = $2 AND revoked = 0",
        )
        .bind(project_id)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE application_keys SET expires_at = $1
             WHERE application_id = $2 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(old_keys_expire_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO application_keys (key_hash, application_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(new_key_hash)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.after_write()
    }

    async fn set_deduplicate(&self, project_id: &str, on: bool) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query("UPDATE projects SET deduplicate = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(project_id)
            .execute(self.pool())
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn delete_token(&self, project_id: &str, id: &str) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        let shredded = shred(
            shred_tokens!(
                "id = $4 AND project_id = $5 AND deleted_at IS NULL RETURNING expires_at"
            ),
            now,
        )
        .bind(id)
        .bind(project_id)
        .fetch_optional(self.pool())
        .await?;
        self.after_write()?;
        let expires_at: Option<i64> = match shredded {
            Some(row) => row.try_get("expires_at")?,
            None => return Err(StoreError::NotFound),
        };
        // An expired token was already gone for every caller: erased now, but not found.
        match expires_at {
            Some(at) if at <= now => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn shred_expired_tokens(&self, now: i64, limit: u32) -> Result<u64, StoreError> {
        self.before_write()?;
        let result = shred(
            shred_tokens!(
                "deleted_at IS NULL AND id IN (SELECT id FROM tokens WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $3 LIMIT $4)"
            ),
            now,
        )
        .bind(i64::from(limit))
        .execute(self.pool())
        .await?;
        self.after_write()?;
        Ok(result.rows_affected())
    }

    async fn allowed_origins(&self, project_id: &str) -> Result<Vec<String>, StoreError> {
        self.before_read()?;
        let rows =
            sqlx::query("SELECT origin FROM project_origins WHERE project_id = $1 ORDER BY origin")
                .bind(project_id)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(|r| Ok(r.try_get("origin")?)).collect()
    }

    async fn set_allowed_origins(
        &self,
        project_id: &str,
        origins: &[String],
    ) -> Result<(), StoreError> {
        self.replace_project_list(ProjectList::Origins, project_id, origins)
            .await
    }

    async fn insert_collect_session(&self, session: &CollectSession) -> Result<(), StoreError> {
        self.before_write()?;
        let now = now_unix();
        // Sessions live minutes; sweeping the expired ones on each insert keeps the table at
        // about one checkout window's worth of rows without a separate job.
        sqlx::query("DELETE FROM collect_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO collect_sessions (key_hash, project_id, tokenization_session_id, remaining_calls, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.key_hash)
        .bind(&session.project_id)
        .bind(&session.tokenization_session_id)
        .bind(i64::from(session.remaining_calls))
        .bind(session.expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.after_write()
    }

    async fn collect_session(
        &self,
        key_hash: &[u8],
        now: i64,
    ) -> Result<CollectSession, StoreError> {
        self.before_read()?;
        let row = sqlx::query(
            "SELECT project_id, tokenization_session_id, remaining_calls, expires_at
             FROM collect_sessions WHERE key_hash = $1 AND expires_at > $2 AND remaining_calls > 0",
        )
        .bind(key_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        let remaining: i64 = row.try_get("remaining_calls")?;
        Ok(CollectSession {
            key_hash: key_hash.to_vec(),
            project_id: row.try_get("project_id")?,
            tokenization_session_id: row.try_get("tokenization_session_id")?,
            remaining_calls: u32::try_from(remaining)
                .map_err(|_| StoreError::Corrupt("collect session calls"))?,
            expires_at: row.try_get("expires_at")?,
        })
    }

    async fn take_collect_call(&self, key_hash: &[u8], now: i64) -> Result<(), StoreError> {
        self.before_write()?;
        // One statement: the check and the decrement cannot be split by a racing instance.
        let result = sqlx::query(
            "UPDATE collect_sessions SET remaining_calls = remaining_calls - 1
             WHERE key_hash = $1 AND expires_at > $2 AND remaining_calls > 0",
        )
        .bind(key_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.after_write()
    }

    async fn revoke_collect_session(
        &self,
        project_id: &str,
        tokenization_session_id: &str,
    ) -> Result<(), StoreError> {
        self.before_write()?;
        let result = sqlx::query(
            "DELETE FROM collect_sessions WHERE project_id = $1 AND tokenization_session_id = $2",
        )
        .bind(project_id)
        .bind(tokenization_session_id)
        .execute(self.pool())
        .await?;
        self.after_write()?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// Inserts a group of new tokens in one statement; a token whose id or card is already held
/// is refused alone (`Conflict`), the others stored. On a kept connection (see `kept`) when
/// one is free; if that connection fails, inserted again on the pool.
async fn insert_token_group(
    pool: sqlx::AnyPool,
    kept: std::sync::Arc<super::kept::KeptConnections>,
    group: Vec<(TokenRecord, i64)>,
) -> Vec<Result<(), StoreError>> {
    let inserted = match kept.take().await {
        Ok(Some(mut conn)) => match token_group_insert(&group).fetch_all(conn.conn()).await {
            Ok(rows) => {
                conn.put_back();
                Ok(rows)
            }
            Err(e) if super::kept::connection_failed(&e) => {
                conn.close();
                tracing::warn!(error = %e, "a kept database connection failed: the new tokens are inserted again on another");
                return insert_token_group_again(&pool, &group).await;
            }
            Err(e) => Err(e),
        },
        Ok(None) => token_group_insert(&group).fetch_all(&pool).await,
        Err(e) => Err(e),
    };
    match inserted {
        Ok(rows) => {
            let stored = returned_ids(&rows);
            group
                .iter()
                .map(|(token, _)| {
                    if stored.contains(&token.id) {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict)
                    }
                })
                .collect()
        }
        // None of the group is stored; each call hears why.
        Err(e) => each_hears(&e, group.len()),
    }
}

/// `group` inserted again after a statement whose outcome is unknown. A token this statement
/// does not store is this one if its id's row holds this token's nonce (drawn at random for
/// each sealing: no other record has it): the first statement landed. Otherwise its id or its
/// card is another token's, a conflict as on the first try. (A token the first statement
/// stored and something sealed anew since, in the milliseconds between, a key rotation's
/// rewrap or a refresh of the same card, would be answered a conflict: a failed call, no
/// record lost or given to another.)
async fn insert_token_group_again(
    pool: &sqlx::AnyPool,
    group: &[(TokenRecord, i64)],
) -> Vec<Result<(), StoreError>> {
    let stored = match token_group_insert(group).fetch_all(pool).await {
        Ok(rows) => returned_ids(&rows),
        Err(e) => return each_hears(&e, group.len()),
    };
    let mut results = Vec::with_capacity(group.len());
    for (token, _) in group {
        if stored.contains(&token.id) {
            results.push(Ok(()));
            continue;
        }
        let found = sqlx::query("SELECT nonce FROM tokens WHERE id = $1")
            .bind(token.id.as_str())
            .fetch_optional(pool)
            .await;
        results.push(match found {
            Ok(Some(row))
                if row.try_get::<Vec<u8>, _>("nonce").ok() == Some(token.sealed.nonce.clone()) =>
            {
                Ok(())
            }
            Ok(_) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        });
    }
    results
}

/// The statement that inserts `group`'s tokens, answering the ids it stored.
fn token_group_insert(
    group: &[(TokenRecord, i64)],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    static TEXT: super::marks::TextBySize = super::marks::TextBySize::new(|tokens| {
        format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
            super::marks::Marks::Numbered.rows(tokens, 13)
        )
    });
    // Built from marks only; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(TEXT.get(group.len())));
    for (token, now) in group {
        query = super::portability::bind_token(query, token, *now);
    }
    query
}

fn returned_ids(rows: &[sqlx::any::AnyRow]) -> std::collections::HashSet<String> {
    rows.iter()
        .filter_map(|row| row.try_get::<String, _>("id").ok())
        .collect()
}

/// The live tokens of `group` (project and id each) as of now, read in one statement: each
/// item's record, or `NotFound`; every item hears the statement's error if it failed. On a
/// kept connection (see `kept`) when one is free; if that connection fails, read again on the
/// pool.
async fn read_token_group(
    pool: sqlx::AnyPool,
    kept: std::sync::Arc<super::kept::KeptConnections>,
    group: Vec<(String, String)>,
) -> Vec<Result<TokenRecord, StoreError>> {
    use super::rows::token_column as at;
    let now = now_unix();
    let read = match kept.take().await {
        Ok(Some(mut conn)) => match token_group_read(&group, now).fetch_all(conn.conn()).await {
            Ok(rows) => {
                conn.put_back();
                Ok(rows)
            }
            Err(e) if super::kept::connection_failed(&e) => {
                conn.close();
                tracing::warn!(error = %e, "a kept database connection failed: the tokens are read again on another");
                token_group_read(&group, now).fetch_all(&pool).await
            }
            Err(e) => Err(e),
        },
        Ok(None) => token_group_read(&group, now).fetch_all(&pool).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(rows) => group
            .iter()
            .map(|(project_id, id)| {
                let row = rows.iter().find(|row| {
                    row.try_get::<&str, _>(at::PROJECT_ID).ok() == Some(project_id.as_str())
                        && row.try_get::<&str, _>(at::ID).ok() == Some(id.as_str())
                });
                row.map_or(Err(StoreError::NotFound), token_from_row)
            })
            .collect(),
        Err(e) => each_hears(&e, group.len()),
    }
}

/// The statement that reads `group`'s live tokens as of `now`.
fn token_group_read(
    group: &[(String, String)],
    now: i64,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    // Sized up to a power of two, the last item repeated: a few statement texts for sqlx to
    // prepare and keep, not one for every size.
    let slots = group.len().next_power_of_two();
    // Built from marks only; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(token_read_text(slots)));
    let last = group.len().saturating_sub(1);
    for slot in 0..slots {
        let Some((project_id, id)) = group.get(slot.min(last)) else {
            break;
        };
        query = query.bind(project_id.as_str()).bind(id.as_str());
    }
    query.bind(now)
}

/// The grouped token read's text for `slots` (a power of two) pairs of marks, kept by its
/// power: `1 << (n - 1)` slots for the n-th (a group holds at most 256 items: 9 texts).
fn token_read_text(slots: usize) -> std::sync::Arc<str> {
    static TEXT: super::marks::TextBySize = super::marks::TextBySize::new(|n| {
        debug_assert!((1..=64).contains(&n), "a power of two of slots");
        let slots = 1_usize << (n - 1);
        format!(
            "{}(project_id, id) IN ({}) AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ${})",
            select_token!(""),
            super::marks::Marks::Numbered.rows(slots, 2),
            slots * 2 + 1
        )
    });
    debug_assert!(slots.is_power_of_two(), "{slots} slots");
    TEXT.get(slots.trailing_zeros() as usize + 1)
}

/// A group's statement failed: each of its `n` calls hears why (`sqlx::Error` cannot be
/// cloned; its message is kept).
fn each_hears<T>(e: &sqlx::Error, n: usize) -> Vec<Result<T, StoreError>> {
    let why = e.to_string();
    (0..n)
        .map(|_| Err(StoreError::Unavailable(sqlx::Error::Protocol(why.clone()))))
        .collect()
}

/// The columns of a token's row, in the order [`super::portability::bind_token`] binds them.
pub(super) const TOKEN_COLUMNS: &str = "id, project_id, kind, key_version, nonce, ciphertext, fingerprint, bin, last4, brand, created_at, updated_at, expires_at";

/// A new token's row (both engines). SQLite numbers `$n` marks in the order they first appear,
/// which here is 1 to 13: values bound by position land where PostgreSQL puts them by number.
pub(super) const INSERT_TOKEN: &str = "INSERT INTO tokens (id, project_id, kind, key_version, nonce, ciphertext, fingerprint, bin, last4, brand, created_at, updated_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// A crypto-shredding statement (see [`shred_tokens`]) with its first three parameters bound:
/// the empty nonce and ciphertext, and `now` as the deletion time.
pub(super) fn shred(
    sql: impl sqlx::SqlSafeStr,
    now: i64,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sql)
        .bind(Vec::<u8>::new())
        .bind(Vec::<u8>::new())
        .bind(now)
}

impl SqlStore {
    /// A live token read where the embedded database's direct read did not answer: on
    /// PostgreSQL, or on SQLite when another connection held the file.
    async fn token_elsewhere(&self, project_id: &str, id: &str) -> Result<TokenRecord, StoreError> {
        // No stored id holds a NUL (PostgreSQL's text refuses one), and in a group's statement
        // one would fail every other call's read with it.
        if id.contains('\0') || project_id.contains('\0') {
            return Err(StoreError::NotFound);
        }
        // PostgreSQL: with the reads of the other calls in flight at once, in one statement.
        if self.sqlite.is_none() {
            let grouped = self
                .groups
                .get()
                .token_reads
                .run_async((project_id.to_owned(), id.to_owned()), |group| {
                    read_token_group(self.pool().clone(), self.kept().clone(), group)
                })
                .await;
            match grouped {
                // A group's statement that failed is tried again by each of its calls on its
                // own, so that no call's read fails for another's.
                Some(Err(StoreError::Unavailable(_))) | None => {}
                Some(found) => return found,
            }
        }
        // A SQLite read that would have waited for a lock, or a group that failed: on its own.
        let row = sqlx::query(select_token!(
            "id = $1 AND project_id = $2 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $3)"
        ))
        .bind(id)
        .bind(project_id)
        .bind(now_unix())
        .fetch_one(self.pool())
        .await?;
        token_from_row(&row)
    }

    async fn insert_token_row(&self, token: &TokenRecord, now: i64) -> Result<(), StoreError> {
        if let Some(direct) = &self.direct {
            if let Ok(inserted) = direct.insert_token(token.clone(), now).await {
                return inserted;
            }
            // Another connection holds the file: wait for it on sqlx's worker.
            super::portability::bind_token(sqlx::query(INSERT_TOKEN), token, now)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        // PostgreSQL: the calls inserting at the same moment share one statement, so one
        // commit (one wait for the log's flush) instead of one each.
        self.groups
            .get()
            .new_tokens
            .run_async((token.clone(), now), |group| {
                insert_token_group(self.pool().clone(), self.kept().clone(), group)
            })
            .await
            .unwrap_or(Err(StoreError::Corrupt(
                "a group of new tokens failed midway",
            )))
    }
}

/// A per-project list of patterns that is replaced whole.
#[derive(Clone, Copy)]
enum ProjectList {
    Destinations,
    Origins,
}

impl ProjectList {
    fn statements(self) -> (&'static str, &'static str) {
        match self {
            Self::Destinations => (
                "DELETE FROM project_destinations WHERE project_id = $1",
                "INSERT INTO project_destinations (project_id, rule, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            ),
            Self::Origins => (
                "DELETE FROM project_origins WHERE project_id = $1",
                "INSERT INTO project_origins (project_id, origin, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            ),
        }
    }
}

impl SqlStore {
    /// Replaces the project's list in one transaction: no call ever sees it half-made (an
    /// empty allowlist in between would allow everything).
    async fn replace_project_list(
        &self,
        list: ProjectList,
        project_id: &str,
        items: &[String],
    ) -> Result<(), StoreError> {
        let (delete, insert) = list.statements();
        self.before_write()?;
        let now = now_unix();
        let mut tx = self.pool().begin().await?;
        sqlx::query(delete)
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        for item in items {
            sqlx::query(insert)
                .bind(project_id)
                .bind(item)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.after_write()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::audit::INSERT_AUDIT;
    use super::token_read_text;

    #[test]
    fn kept_statement_texts_are_the_texts_built_for_each_size() {
        for power in 0..=8 {
            let slots = 1_usize << power;
            let text = token_read_text(slots);
            // A pair of marks for each slot, and the time last.
            assert_eq!(text.matches('$').count(), 2 * slots + 1, "{slots} slots");
            assert!(
                text.ends_with(&format!("(${}, ${})) AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ${})", 2 * slots - 1, 2 * slots, 2 * slots + 1)),
                "{slots} slots: {text}"
            );
            assert!(
                Arc::ptr_eq(&text, &token_read_text(slots)),
                "{slots} slots, kept"
            );
        }
        assert!(token_read_text(4).ends_with(
            "($7, $8)) AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $9)"
        ));
        assert_eq!(
            &*INSERT_AUDIT.get(1),
            "INSERT INTO audit_log (chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        assert!(
            INSERT_AUDIT
                .get(2)
                .ends_with("($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)")
        );
    }

    mod on_postgres {
        #![allow(clippy::unwrap_used)]

        use super::super::super::scratch_postgres::ScratchDatabase;
        use super::super::{SqlStore, insert_token_group_again, read_token_group};
        use crate::store::{Mode, Project, Store, StoreError, TokenRecord};

        /// A card token sealed with `nonce` (its every byte).
        fn token(id: &str, nonce: u8) -> TokenRecord {
            let mut token = super::super::super::direct::tests::token(id, None);
            token.sealed.nonce = vec![nonce; 12];
            token
        }

        async fn store_with_a_project(database: &ScratchDatabase) -> SqlStore {
            let store = database.store(4).await;
            let project = Project {
                id: "proj_1".into(),
                name: "one".into(),
                mode: Mode::Test,
                deduplicate: false,
            };
            store.insert_project(&project, b"pub").await.unwrap();
            store
        }

        #[tokio::test]
        async fn tokens_are_read_and_inserted_on_kept_connections_and_again_after_they_end() {
            let database = ScratchDatabase::new().await;
            let store = store_with_a_project(&database).await;
            store.insert_token(&token("tok_a", 1)).await.unwrap();
            assert_eq!(store.token("proj_1", "tok_a").await.unwrap().id, "tok_a");
            assert_eq!(store.kept().idle(), 1, "one connection kept for both");
            database.end_connections().await;
            assert_eq!(store.token("proj_1", "tok_a").await.unwrap().id, "tok_a");
            assert_eq!(
                store.kept().idle(),
                0,
                "the ended one was closed, the read went on the pool"
            );
            store.insert_token(&token("tok_b", 2)).await.unwrap();
            assert_eq!(store.kept().idle(), 1);
            database.end_connections().await;
            store.insert_token(&token("tok_c", 3)).await.unwrap();
            assert_eq!(store.kept().idle(), 0, "the insert went on the pool");
            assert_eq!(database.number("SELECT count(*) FROM tokens").await, 3);
        }

        #[tokio::test]
        async fn a_group_read_on_a_kept_connection_the_server_ended_is_read_again_on_the_pool() {
            let database = ScratchDatabase::new().await;
            let store = store_with_a_project(&database).await;
            store.insert_token(&token("tok_a", 1)).await.unwrap();
            assert_eq!(store.kept().idle(), 1);
            database.end_connections().await;
            let group = vec![
                ("proj_1".to_owned(), "tok_a".to_owned()),
                ("proj_1".to_owned(), "tok_none".to_owned()),
            ];
            let read = read_token_group(store.pool().clone(), store.kept().clone(), group).await;
            assert!(
                matches!(&read[0], Ok(t) if t.id == "tok_a"),
                "{:?}",
                read[0].as_ref().err()
            );
            assert!(matches!(read[1], Err(StoreError::NotFound)));
            assert_eq!(store.kept().idle(), 0, "the ended connection was closed");
        }

        #[tokio::test]
        async fn a_token_inserted_again_after_it_landed_is_stored_and_another_with_its_id_is_not() {
            let database = ScratchDatabase::new().await;
            let store = store_with_a_project(&database).await;
            store.insert_token(&token("tok_a", 1)).await.unwrap();
            let results = insert_token_group_again(
                store.pool(),
                &[
                    (token("tok_a", 1), 5),
                    (token("tok_new", 4), 5),
                    (token("tok_a", 9), 5),
                ],
            )
            .await;
            assert!(
                results[0].is_ok(),
                "the first statement landed: {:?}",
                results[0]
            );
            assert!(results[1].is_ok(), "{:?}", results[1]);
            assert!(
                matches!(results[2], Err(StoreError::Conflict)),
                "another sealing under a held id: {:?}",
                results[2]
            );
            assert_eq!(database.number("SELECT count(*) FROM tokens").await, 2);
        }
    }
}
