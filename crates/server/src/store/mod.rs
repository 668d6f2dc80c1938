//! Durable storage of projects, applications, tokens and data keys, behind one trait so the
//! handlers never know which database runs underneath.

mod name_watch;
mod sql;
mod sqlite_files;
mod sqlite_upkeep;

use async_trait::async_trait;

use crate::crypto::{Sealed, WrappedDataKey};

pub use sql::{Database, SqlStore};
pub use sqlite_files::FileProblem;

pub use crate::clock::{now_unix, now_unix_ms};

/// How storage fails, in the terms a handler acts on: `Unavailable`, `Files` and
/// `Migration` mean "try later" (503); `Corrupt` and `Decode` mean the stored data is wrong (500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict with an existing record")]
    Conflict,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The embedded database, on a connection of our own (see `sql::direct`).
    #[error("database unavailable")]
    Sqlite(#[source] rusqlite::Error),
    #[error("database files")]
    Files(#[from] FileProblem),
    #[error("database file")]
    FileIo(#[source] std::io::Error),
    #[error("schema migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("a stored value does not decode")]
    Decode(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether the failure is the database's state (try later), not the data's.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::Sqlite(_)
                | Self::Files(_)
                | Self::FileIo(_)
                | Self::Migration(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            e @ (sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. }) => Self::Decode(e),
            other => Self::Unavailable(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "test" => Some(Self::Test),
            "live" => Some(Self::Live),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub mode: Mode,
    pub deduplicate: bool,
}

/// What an application's API key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    pub tokenization: bool,
    pub provisioning: bool,
    pub reveal: bool,
    pub audit: bool,
}

impl Permissions {
    /// Parses `tokenization,provisioning,reveal,audit` (any subset, any order).
    pub fn parse(list: &str) -> Option<Self> {
        let mut p = Self::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "tokenization" => p.tokenization = true,
                "provisioning" => p.provisioning = true,
                "reveal" => p.reveal = true,
                "audit" => p.audit = true,
                _ => return None,
            }
        }
        Some(p)
    }

    pub fn to_list(self) -> String {
        [
            (self.tokenization, "tokenization"),
            (self.provisioning, "provisioning"),
            (self.reveal, "reveal"),
            (self.audit, "audit"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
    }
}

#[derive(Debug, Clone)]
pub struct Application {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub permissions: Permissions,
    /// When the key this application was found by stops working (a rolled key's overlap);
    /// `None` for a key without end, or when the application was not found by a key.
    pub key_expires_at: Option<i64>,
}

/// An application as listed: never with a key.
#[derive(Debug, Clone)]
pub struct ApplicationRecord {
    pub app: Application,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Card,
    Bank,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Bank => "bank",
        }
    }

    /// The stored name back (`as_str`'s inverse).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "card" => Some(Self::Card),
            "bank" => Some(Self::Bank),
            _ => None,
        }
    }
}

/// A token row: the sealed data plus the metadata PCI DSS allows in the clear.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub project_id: String,
    pub kind: TokenKind,
    pub sealed: Sealed,
    pub fingerprint: Option<Vec<u8>>,
    pub bin: Option<String>,
    pub last4: String,
    pub brand: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None`: the token lives until it is deleted. Invariant: a record a read
    /// returns is not expired (reads answer `NotFound` from this instant on).
    pub expires_at: Option<i64>,
}

/// A project's TLS settings for one processor host (pattern as in allowlists, without a path).
#[derive(Debug, Clone)]
pub struct DestinationTls {
    pub host: String,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    /// The client certificate's private key, sealed like card data.
    pub client_key: Option<Sealed>,
    /// Milliseconds since the epoch; part of the profile's identity for connection pooling.
    pub updated_at_ms: i64,
}

/// A tokenization session as stored: what its wax key (known only by its keyed hash) allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectSession {
    pub key_hash: Vec<u8>,
    pub project_id: String,
    pub tokenization_session_id: String,
    pub remaining_calls: u32,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Which audit records to read (`GET /audit-logs`, `cardvault audit export`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub project_id: Option<String>,
    pub action: Option<String>,
    pub token: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    /// Only records after this id (the cursor); 0 for the first page.
    pub after_id: i64,
    pub limit: i64,
}

/// Where the audit log lives: the same database as everything else, so a record and the state
/// it describes share their durability.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends linked records in one transaction.
    async fn append_audit(&self, rows: &[crate::audit::AuditRow]) -> Result<(), StoreError>;
    /// A chain's last record number and hash, if it has any.
    async fn audit_head(&self, chain: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Records in id order, filtered.
    async fn audit_records(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<crate::audit::AuditRow>, StoreError>;
}

/// Which kind of sealed record: each kind opens with its own associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// A token's card or bank data.
    Token,
    /// A project's TLS client key for a processor.
    TlsClientKey,
}

impl SealedKind {
    pub const ALL: [Self; 2] = [Self::Token, Self::TlsClientKey];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "tokens",
            Self::TlsClientKey => "tls_client_keys",
        }
    }
}

/// One sealed record as a rotation reads it.
#[derive(Debug, Clone)]
pub struct SealedRecord {
    pub project_id: String,
    /// The token id, or the host of a TLS client key.
    pub id: String,
    pub sealed: Sealed,
}

/// A background key job's row: who holds it, when it last showed life, what it is moving to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyJob {
    /// Empty when nobody runs it.
    pub owner: String,
    pub heartbeat_at_ms: i64,
    pub target_version: Option<u32>,
}

/// What key rotation needs from the database.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Makes data key `version` the one new records are sealed with.
    async fn activate_data_key(&self, version: u32) -> Result<(), StoreError>;
    /// Deletes data key `version` if no record uses it; otherwise deletes nothing and returns
    /// how many do.
    async fn delete_unused_data_key(&self, version: u32) -> Result<u64, StoreError>;
    /// Records per kind and key version (shredded tokens, which hold none, are left out).
    async fn sealed_counts(&self) -> Result<Vec<(SealedKind, u32, u64)>, StoreError>;
    /// Up to `limit` records of `kind` sealed with another version than `target`, after `after`
    /// in id order.
    async fn sealed_batch(
        &self,
        kind: SealedKind,
        target: u32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedRecord>, StoreError>;
    /// Replaces each record's sealed value in one transaction, only where it is still the one
    /// that was read (a record changed meanwhile was sealed anew and is left as it is); returns
    /// how many were replaced.
    async fn reseal(
        &self,
        kind: SealedKind,
        records: &[(SealedRecord, Sealed)],
    ) -> Result<u64, StoreError>;
    async fn key_job(&self, name: &str) -> Result<Option<KeyJob>, StoreError>;
    /// Takes the job for `owner` if its row still says `expected` (`None`: there is no row);
    /// returns whether it did.
    async fn claim_key_job(
        &self,
        name: &str,
        expected: Option<&KeyJob>,
        owner: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Records that `owner` still runs the job, moving records to `target_version` (`None`: the
    /// job is done); returns false when `owner` no longer holds it.
    async fn update_key_job(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        target_version: Option<u32>,
    ) -> Result<bool, StoreError>;
    /// Lets go of the job (keeping its target, so the next run resumes).
    async fn release_key_job(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// A secret wrapped by the master key (`root`), if stored.
    async fn wrapped_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a wrapped secret; `Conflict` if one by that name exists (another instance won).
    async fn insert_wrapped_secret(&self, name: &str, wrapped: &[u8]) -> Result<(), StoreError>;
    /// Moves everything the master key wraps to another master key, in one transaction: each
    /// data key is replaced only if it is still `old`, and the secret `name` only if it is
    /// still `old_secret` (`None`: not stored). `Conflict`, changing nothing, when any was not.
    async fn rewrap(
        &self,
        keys: &[(WrappedDataKey, WrappedDataKey)],
        name: &str,
        old_secret: Option<&[u8]>,
        new_secret: &[u8],
    ) -> Result<(), StoreError>;
}

/// The connection pool of this instance, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open (idle or in use).
    pub open: u32,
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// Counts for the metrics (`crate::metrics`), read at a scrape.
#[async_trait]
pub trait StoreStats: Send + Sync {
    fn pool_usage(&self) -> PoolUsage;
    /// Tokenization sessions alive at `now` with calls left (every instance's).
    async fn live_collect_sessions(&self, now: i64) -> Result<u64, StoreError>;
    /// Sealed records (live tokens, processor TLS client keys) per data key version, oldest
    /// version first, every version of the key ring listed (0 when nothing uses it). Scans
    /// the tokens table: callers cache it.
    async fn sealed_records(&self) -> Result<Vec<(u32, u64)>, StoreError>;
}

/// A call made with an `Idempotency-Key`, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: Vec<u8>,
    /// The kept answer, sealed; `None` while the call runs.
    pub answer: Option<Vec<u8>>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this call's: nothing held it, or only an expired record.
    Claimed,
    /// Another call holds it (running or answered).
    Held(IdempotencyRecord),
}

/// Kept answers of calls made with an `Idempotency-Key`, shared by every instance.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes `key_hash` for a new running call, atomically (of two racing callers one gets
    /// `Claimed`), replacing a record that expired by `now`.
    async fn claim_idempotency_key(
        &self,
        project_id: &str,
        key_hash: &[u8],
        request_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<IdempotencyClaim, StoreError>;
    /// Keeps the running call's answer (sealed).
    async fn keep_idempotent_answer(
        &self,
        project_id: &str,
        key_hash: &[u8],
        answer: &[u8],
    ) -> Result<(), StoreError>;
    /// Forgets a running call (it did nothing worth keeping), so a retry runs again.
    async fn release_idempotency_key(
        &self,
        project_id: &str,
        key_hash: &[u8],
    ) -> Result<(), StoreError>;
    /// Deletes up to `limit` records expired by `now`; returns how many.
    async fn sweep_idempotency_keys(&self, now: i64, limit: u32) -> Result<u64, StoreError>;
}

/// What `cardvault import` and `export` need from the database: tokens made in batches, each
/// keyed by the id it had in the vault it came from, and a project's live tokens in pages.
#[async_trait]
pub trait PortabilityStore: Send + Sync {
    /// Of these ids of another vault, the ones already imported into the project, each with
    /// its token: `(old_id, token_id)`.
    async fn imported_tokens(
        &self,
        project_id: &str,
        old_ids: &[String],
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Of these fingerprints, the ones a live token of the project holds: `(fingerprint,
    /// token_id)` (deduplication).
    async fn tokens_by_fingerprints(
        &self,
        project_id: &str,
        fingerprints: &[Vec<u8>],
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError>;
    /// Erases (as the expiry sweeper would) the project's expired tokens that still hold one
    /// of these fingerprints: the sweeper has not reached them yet, and until it does they
    /// keep the card's fingerprint from a new token. Returns how many.
    async fn shred_expired_holders(
        &self,
        project_id: &str,
        fingerprints: &[Vec<u8>],
    ) -> Result<u64, StoreError>;
    /// In one transaction: inserts `tokens` and records `keys` (`old_id`, `token_id`), so a
    /// record is imported with its key or not at all. `Conflict`, with nothing written, when a
    /// key is taken or a card's fingerprint is (another run, or a tokenize call, was first).
    async fn import_batch(
        &self,
        project_id: &str,
        tokens: &[TokenRecord],
        keys: &[(String, String)],
    ) -> Result<(), StoreError>;
    /// Up to `limit` live tokens of the project after token id `after`, in id order.
    async fn live_tokens(
        &self,
        project_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// How many live tokens the project has.
    async fn live_token_count(&self, project_id: &str) -> Result<u64, StoreError>;
}

/// The vault's durable state.
#[async_trait]
pub trait Store:
    AuditStore + IdempotencyStore + KeyStore + StoreStats + PortabilityStore + Send + Sync
{
    async fn ping(&self) -> Result<(), StoreError>;

    async fn data_keys(&self) -> Result<Vec<WrappedDataKey>, StoreError>;
    /// Adds a data key; `Conflict` if that version exists (another instance won the race).
    async fn insert_data_key(&self, key: &WrappedDataKey) -> Result<(), StoreError>;

    async fn insert_project(
        &self,
        project: &Project,
        pub_key_hash: &[u8],
    ) -> Result<(), StoreError>;
    async fn insert_application(
        &self,
        app: &Application,
        key_hash: &[u8],
    ) -> Result<(), StoreError>;
    async fn project(&self, id: &str) -> Result<Project, StoreError>;
    async fn project_by_pub_key(&self, pub_key_hash: &[u8]) -> Result<Project, StoreError>;
    /// The application (not revoked) owning an API key, with its project.
    async fn application_by_key(
        &self,
        key_hash: &[u8],
    ) -> Result<(Application, Project), StoreError>;

    /// `Conflict` if the project already holds a live token with the same fingerprint (an
    /// expired holder the sweeper has not reached yet is erased first, as the sweeper would).
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// As [`Self::insert_token`], but `Conflict` for any holder of the fingerprint, expired
    /// ones too: tokenize's first attempt, one statement for a new card.
    async fn insert_token_unless_held(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// A live token of this project; `NotFound` for another project's, a deleted or an expired
    /// one.
    async fn token(&self, project_id: &str, id: &str) -> Result<TokenRecord, StoreError>;
    /// The sealed values of the token [`Self::token`] finds, for a caller that only opens it
    /// (a store may read less for it).
    async fn sealed_token(&self, project_id: &str, id: &str) -> Result<Sealed, StoreError> {
        self.token(project_id, id).await.map(|record| record.sealed)
    }
    /// Inserts many tokens in one transaction (bulk imports); all or none.
    async fn insert_tokens(&self, tokens: &[TokenRecord]) -> Result<(), StoreError>;
    /// The project's live token with this fingerprint; `NotFound` when none (a deleted or
    /// expired token is none).
    async fn token_by_fingerprint(
        &self,
        project_id: &str,
        fingerprint: &[u8],
    ) -> Result<TokenRecord, StoreError>;
    /// The project's destination allowlist (empty when it has none).
    async fn destination_rules(&self, project_id: &str) -> Result<Vec<String>, StoreError>;
    async fn add_destination_rule(&self, project_id: &str, rule: &str) -> Result<(), StoreError>;
    /// Replaces the project's allowlist in one transaction: no call ever sees it half-made
    /// (an empty list in between would allow everything).
    async fn set_destination_rules(
        &self,
        project_id: &str,
        rules: &[String],
    ) -> Result<(), StoreError>;
    /// `NotFound` if the project had no such rule.
    async fn remove_destination_rule(&self, project_id: &str, rule: &str)
    -> Result<(), StoreError>;

    async fn destination_tls(&self, project_id: &str) -> Result<Vec<DestinationTls>, StoreError>;
    /// Inserts or replaces the settings for `tls.host`.
    async fn put_destination_tls(
        &self,
        project_id: &str,
        tls: &DestinationTls,
    ) -> Result<(), StoreError>;
    /// `NotFound` if the project had no settings for that host.
    async fn remove_destination_tls(&self, project_id: &str, host: &str) -> Result<(), StoreError>;

    /// Replaces a live token's sealed data (newer expiry or name on a deduplicated card) and
    /// its expiry; `NotFound` when it is deleted or expired.
    async fn update_token_data(
        &self,
        project_id: &str,
        id: &str,
        sealed: &Sealed,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Crypto-shreds a token: its nonce and ciphertext are overwritten (empty) and its
    /// fingerprint erased, so nothing can open it again and deduplication cannot find it.
    /// `NotFound` for another project's token, a deleted one, or an expired one (which is
    /// erased all the same).
    async fn delete_token(&self, project_id: &str, id: &str) -> Result<(), StoreError>;
    /// Crypto-shreds, as [`Store::delete_token`] does, at most `limit` tokens expired at `now`;
    /// returns how many. Safe to run from every instance at once.
    async fn shred_expired_tokens(&self, now: i64, limit: u32) -> Result<u64, StoreError>;

    /// The project's live applications, oldest first.
    async fn applications(&self, project_id: &str) -> Result<Vec<ApplicationRecord>, StoreError>;
    /// A live application of the project; `NotFound` for another project's or a revoked one.
    async fn application(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<ApplicationRecord, StoreError>;
    /// Renames and re-permits a live application; `Conflict` when the name is taken.
    async fn update_application(
        &self,
        project_id: &str,
        id: &str,
        name: &str,
        permissions: Permissions,
    ) -> Result<(), StoreError>;
    /// Revokes a live application and so every key of it.
    async fn revoke_application(&self, project_id: &str, id: &str) -> Result<(), StoreError>;
    /// Gives a live application a new key; its other keys stop working at `old_keys_expire_at`.
    async fn roll_application_key(
        &self,
        project_id: &str,
        id: &str,
        new_key_hash: &[u8],
        old_keys_expire_at: i64,
    ) -> Result<(), StoreError>;
    async fn set_deduplicate(&self, project_id: &str, on: bool) -> Result<(), StoreError>;

    /// The web origins allowed to embed the project's card fields (empty: none).
    async fn allowed_origins(&self, project_id: &str) -> Result<Vec<String>, StoreError>;
    /// Replaces the project's allowed origins with `origins` (normalized patterns).
    async fn set_allowed_origins(
        &self,
        project_id: &str,
        origins: &[String],
    ) -> Result<(), StoreError>;

    /// Stores a new tokenization session (and sweeps expired ones).
    async fn insert_collect_session(&self, session: &CollectSession) -> Result<(), StoreError>;
    /// The live session of a wax key; `NotFound` when unknown, revoked or expired at `now`.
    async fn collect_session(
        &self,
        key_hash: &[u8],
        now: i64,
    ) -> Result<CollectSession, StoreError>;
    /// Uses one of the session's calls, atomically across instances; `NotFound` when none is
    /// left, or the session is gone or expired at `now`.
    async fn take_collect_call(&self, key_hash: &[u8], now: i64) -> Result<(), StoreError>;
    /// Revokes every wax key of a checkout; `NotFound` when it had none.
    async fn revoke_collect_session(
        &self,
        project_id: &str,
        tokenization_session_id: &str,
    ) -> Result<(), StoreError>;
}
