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
    use token_column as at;
    let kind: String = row.try_get(at::KIND)?;
    let kind = TokenKind::parse(&kind).ok_or(StoreError::Corrupt("token kind"))?;
    Ok(TokenRecord {
        id: row.try_get(at::ID)?,
        project_id: row.try_get(at::PROJECT_ID)?,
        kind,
        sealed: Sealed {
            key_version: row.try_get::<i64, _>(at::KEY_VERSION)? as u32,
            nonce: row.try_get(at::NONCE)?,
            ciphertext: row.try_get(at::CIPHERTEXT)?,
        },
        fingerprint: row.try_get(at::FINGERPRINT)?,
        bin: row.try_get(at::BIN)?,
        last4: row.try_get(at::LAST4)?,
        brand: row.try_get(at::BRAND)?,
        created_at: row.try_get(at::CREATED_AT)?,
        expires_at: row.try_get(at::EXPIRES_AT)?,
    })
}

/// Where each column stands in [`select_token!`]'s list. Token rows are read by position: by
/// name, each column was a search of the statement's names (about a tenth of a token read).
pub(super) mod token_column {
    pub const ID: usize = 0;
    pub const PROJECT_ID: usize = 1;
    pub const KIND: usize = 2;
    pub const KEY_VERSION: usize = 3;
    pub const NONCE: usize = 4;
    pub const CIPHERTEXT: usize = 5;
    pub const FINGERPRINT: usize = 6;
    pub const BIN: usize = 7;
    pub const LAST4: usize = 8;
    pub const BRAND: usize = 9;
    pub const CREATED_AT: usize = 10;
    pub const EXPIRES_AT: usize = 11;
}

/// `SELECT` of every token column, with the given `WHERE` clause.
macro_rules! select_token {
    ($where:expr) => {
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

#[cfg(test)]
mod tests {
    use super::token_column as at;

    #[test]
    fn token_columns_are_read_where_the_select_puts_them() {
        let query = select_token!("1");
        let list = query
            .strip_prefix("SELECT ")
            .and_then(|rest| rest.split(" FROM ").next())
            .unwrap();
        let columns: Vec<&str> = list.split(", ").collect();
        let expected = [
            (at::ID, "id"),
            (at::PROJECT_ID, "project_id"),
            (at::KIND, "kind"),
            (at::KEY_VERSION, "key_version"),
            (at::NONCE, "nonce"),
            (at::CIPHERTEXT, "ciphertext"),
            (at::FINGERPRINT, "fingerprint"),
            (at::BIN, "bin"),
            (at::LAST4, "last4"),
            (at::BRAND, "brand"),
            (at::CREATED_AT, "created_at"),
            (at::EXPIRES_AT, "expires_at"),
        ];
        assert_eq!(columns.len(), expected.len(), "{columns:?}");
        for (position, name) in expected {
            assert_eq!(columns[position], name);
        }
    }
}
