//! Rows into domain values, and the column list every token query selects.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::crypto::Sealed;
use crate::store::{
    Application, ApplicationRecord, Mode, Permissions, Project, StoreError, TokenKind, TokenRecord,
};

pub(super) fn project_from_row(row: &AnyRow) -> Result<Project, StoreError> {
    let mode: String = row.try_get("mode")?;
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        mode: Mode::parse(&mode).ok_or_else(|| StoreError::Corrupt("project mode"))?,
        deduplicate: row.try_get::<i64, _>("deduplicate")? != 0,
    })
}

pub(super) fn application_from_row(row: &AnyRow) -> Result<ApplicationRecord, StoreError> {
    let permissions: String = row.try_get("permissions")?;
    Ok(ApplicationRecord {
        app: Application {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            permissions: Permissions::parse(&permissions)
                .ok_or_else(|| StoreError::Corrupt("application permissions"))?,
            key_expires_at: None,
        },
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn token_from_row(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let kind = TokenKind::parse(&kind).ok_or(StoreError::Corrupt("token kind"))?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        kind,
        sealed: Sealed {
            key_version: row.try_get::<i64, _>("key_version")? as u32,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        fingerprint: row.try_get("fingerprint")?,
        bin: row.try_get("bin")?,
        last4: row.try_get("last4")?,
        brand: row.try_get("brand")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// `SELECT` of every token column, with the given `WHERE` clause.
macro_rules! select_token {
    ($where:literal) => {
        concat!(
            "SELECT id, project_id, kind, key_version, nonce, ciphertext, fingerprint, bin, last4, brand, created_at, expires_at FROM tokens WHERE ",
            $where
        )
    };
}

/// An `UPDATE` that crypto-shreds the tokens the given `WHERE` clause selects: nonce and
/// ciphertext overwritten with nothing (`$1`, `$2`: empty), the fingerprint erased so
/// deduplication cannot find the card again, the key version 0 (it holds nothing sealed), and
/// the row kept, deleted at `$3`, as a tombstone that holds only the metadata PCI DSS allows in
/// the clear.
macro_rules! shred_tokens {
    ($where:literal) => {
        concat!(
            "UPDATE tokens SET key_version = 0, nonce = $1, ciphertext = $2, fingerprint = NULL, deleted_at = $3, updated_at = $3 WHERE ",
            $where
        )
    };
}

pub(super) use select_token;
pub(super) use shred_tokens;
