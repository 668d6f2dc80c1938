//! `cardvault import`: another vault's export into a project, in batches.
//!
//! The input is read twice, both times as a stream: a first pass ([`check`]) reads it to its
//! end, so an encrypted file is known to be intact (and its records counted) before anything is
//! stored; the second ([`store`]) validates each record as `POST /tokenize` would, seals it, and
//! stores it in batches. A thread reads, validates and seals while the database stores the batch before, so
//! the work is spread over two cores. Each batch is one transaction that stores its tokens
//! together with each record's old id (`import_keys`): a re-run, or a run resumed after a kill,
//! finds the records already imported and stores them no second time.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cardvault_core::ValidationError;
use serde::Serialize;

use super::layout::{Field, Mapping, RawRecord};
use super::openpgp::DecryptionKey;
use super::records::{Item, Records};
use super::{Format, PortError};
use crate::api::{ApiError, validate_token_data, validate_token_options};
use crate::crypto::Keyring;
use crate::store::{Project, Store, StoreError, TokenRecord, now_unix};
use crate::tokens::{TokenData, refresh_held_token};

/// Batches in flight between the reading thread and the database.
const BATCHES_IN_FLIGHT: usize = 4;
/// Times a batch is tried again when another writer took one of its cards meanwhile.
const CONFLICT_RETRIES: usize = 5;

pub struct Options {
    pub input: PathBuf,
    pub format: Format,
    pub mapping: Mapping,
    /// `None`: the input is plain.
    pub decryption: Option<Arc<DecryptionKey>>,
    /// Where `old_id,token` lines go.
    pub mapping_out: PathBuf,
    /// Where `line,reason` lines go.
    pub rejects_out: PathBuf,
    pub batch_size: usize,
    /// The vault's retention period: the expiry of a record that names none, and the latest
    /// one a record may name (as at `POST /tokenize`).
    pub retention: Option<Duration>,
}

/// What an import did, by record.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    /// Records read.
    pub rows: u64,
    /// Records stored as new tokens.
    pub imported: u64,
    /// Records an earlier run imported (kept as they are).
    pub already_imported: u64,
    /// Records whose card the project already held (deduplication on): mapped to its token.
    pub deduplicated: u64,
    /// Records refused (see the reject report).
    pub rejected: u64,
}

/// A record after the reading thread: sealed and ready to store, or refused.
enum Prepared {
    Ready {
        old_id: String,
        token: Box<TokenRecord>,
    },
    Refused {
        line: u64,
        reason: String,
    },
}

/// The first pass: reads the whole input (an encrypted one is decrypted and its integrity
/// checked at its end); returns how many records it holds. Stores nothing.
///
/// # Errors
/// [`PortError`] when the input cannot be read or decrypted, or fails its integrity check.
pub async fn check(options: &Arc<Options>) -> Result<u64, PortError> {
    let options = options.clone();
    tokio::task::spawn_blocking(move || count(&options))
        .await
        .map_err(|e| PortError::Input(format!("the reading thread failed: {e}")))?
}

/// The second pass: imports the input (of `total` records, as [`check`] found) into
/// `project`; returns the counts. `progress(counts, total)` after each batch.
///
/// # Errors
/// [`PortError`] when the input cannot be read, or the database fails (batches stored until
/// then stay, and a re-run resumes after them).
pub async fn store(
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    project: &Project,
    options: Arc<Options>,
    total: u64,
    progress: &mut (dyn FnMut(Counts, u64) + Send),
) -> Result<Counts, PortError> {
    let mut mapping_out = csv_writer(&options.mapping_out, ["old_id", "token"])?;
    let mut rejects_out = csv_writer(&options.rejects_out, ["line", "reason"])?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Prepared>>(BATCHES_IN_FLIGHT);
    let reader = {
        let (options, keyring, project) = (options.clone(), keyring.clone(), project.clone());
        tokio::task::spawn_blocking(move || prepare(&options, &keyring, &project, &tx))
    };

    let mut counts = Counts::default();
    let mut stored = Ok(());
    while let Some(batch) = rx.recv().await {
        match store_batch(store.as_ref(), &keyring, project, &batch, &mut counts).await {
            Ok(mapped) => {
                for (old_id, token) in mapped {
                    write(
                        &mut mapping_out,
                        &options.mapping_out,
                        [old_id, token.as_str()],
                    )?;
                }
            }
            Err(e) => {
                stored = Err(e);
                break;
            }
        }
        for item in &batch {
            if let Prepared::Refused { line, reason } = item {
                write(
                    &mut rejects_out,
                    &options.rejects_out,
                    [line.to_string().as_str(), reason],
                )?;
            }
        }
        counts.rows += batch.len() as u64;
        counts.rejected += batch
            .iter()
            .filter(|p| matches!(p, Prepared::Refused { .. }))
            .count() as u64;
        flush(&mut mapping_out, &options.mapping_out)?;
        flush(&mut rejects_out, &options.rejects_out)?;
        progress(counts, total);
    }
    // Dropping the receiver stops the reading thread if the database failed.
    drop(rx);
    let read = reader
        .await
        .map_err(|e| PortError::Input(format!("the reading thread failed: {e}")))?;
    stored?;
    read?;
    Ok(counts)
}

fn count(options: &Options) -> Result<u64, PortError> {
    let mut records = open(options)?;
    let mut n = 0;
    while records.next_item()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn open(options: &Options) -> Result<Records, PortError> {
    let input: Box<dyn BufRead + Send> = match &options.decryption {
        Some(key) => key.open(&options.input)?,
        None => {
            let file = std::fs::File::open(&options.input)
                .map_err(|e| PortError::io(&options.input, e))?;
            Box::new(std::io::BufReader::with_capacity(1 << 16, file))
        }
    };
    Records::open(
        input,
        options.format,
        &options.mapping,
        options.decryption.is_some(),
    )
}

/// The second pass's reading thread: records validated and sealed, in batches.
fn prepare(
    options: &Options,
    keyring: &Keyring,
    project: &Project,
    tx: &tokio::sync::mpsc::Sender<Vec<Prepared>>,
) -> Result<(), PortError> {
    let mut records = open(options)?;
    let mut seen = HashSet::new();
    let mut batch = Vec::with_capacity(options.batch_size);
    while let Some(item) = records.next_item()? {
        // Per record: a long run must not store a token whose expiry passed while it ran.
        let created_at = now_unix();
        let prepared = match item {
            Item::Refused { line, reason } => Prepared::Refused { line, reason },
            Item::Record { line, record } => {
                let refused = |reason: String| Prepared::Refused { line, reason };
                match record.id() {
                    None => refused("missing_field: id".into()),
                    Some(old_id) if !seen.insert(old_id.clone()) => refused("duplicate_id".into()),
                    Some(old_id) => match seal(&record, keyring, project, options, created_at)? {
                        Err(reason) => refused(reason),
                        Ok(token) => Prepared::Ready {
                            old_id,
                            token: Box::new(token),
                        },
                    },
                }
            }
        };
        batch.push(prepared);
        if batch.len() >= options.batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(options.batch_size));
            if tx.blocking_send(full).is_err() {
                // The database side stopped; it reports why.
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// A record validated as `POST /tokenize` validates a body (its options first, then its data,
/// in the API's order) and sealed as a new token; `Ok(Err(reason))` when it is refused.
fn seal(
    record: &RawRecord,
    keyring: &Keyring,
    project: &Project,
    options: &Options,
    created_at: i64,
) -> Result<Result<TokenRecord, String>, PortError> {
    let (expires_at, allowed) =
        match validate_token_options(&record.options(), created_at, options.retention) {
            Ok(valid) => valid,
            Err(e) => return Ok(Err(reason(&e))),
        };
    let (kind, data) = match record.to_api() {
        Ok(fields) => fields,
        Err(refused) => return Ok(Err(refused)),
    };
    let valid = match validate_token_data(kind, &data) {
        Ok(valid) => valid,
        Err(e) => return Ok(Err(reason(&e))),
    };
    let id = format!("tok_{}", keyring.random_hex(16)?);
    let fingerprint = project
        .deduplicate
        .then(|| keyring.fingerprint(&project.id, &valid.data.identity()));
    let sealed = valid
        .data
        .seal_with_rule(allowed.as_ref(), keyring, &project.id, &id)?;
    Ok(Ok(TokenRecord {
        id,
        project_id: project.id.clone(),
        kind: valid.kind,
        sealed,
        fingerprint,
        bin: valid.bin,
        last4: valid.last4,
        brand: valid.brand,
        created_at,
        expires_at,
    }))
}

/// A refusal as the reject report states it: the API's error code, and for a field error the
/// field by its layout name (`missing_field: number`). Never the value.
fn reason(e: &ApiError) -> String {
    match e {
        ApiError::Validation(ValidationError::MissingField(f)) => {
            format!("missing_field: {}", Field::for_api_field(f))
        }
        ApiError::Validation(ValidationError::InvalidField(f)) => {
            format!("invalid_field: {}", Field::for_api_field(f))
        }
        ApiError::Detailed { error, .. } => reason(error),
        other => other.code().to_owned(),
    }
}

/// Stores a batch's new records in one transaction; returns each ready record's
/// `(old_id, token)` in input order. Tried again, from its lookups, when another writer took
/// one of its cards or ids meanwhile. A record of a card the project already holds then
/// refreshes that card's token as `POST /tokenize` would (its data, the later expiry, its rule
/// when it names one).
async fn store_batch<'a>(
    store: &dyn Store,
    keyring: &Keyring,
    project: &Project,
    batch: &'a [Prepared],
    counts: &mut Counts,
) -> Result<Vec<(&'a str, String)>, PortError> {
    let ready: Vec<(&str, &TokenRecord)> = batch
        .iter()
        .filter_map(|p| match p {
            Prepared::Ready { old_id, token } => Some((old_id.as_str(), &**token)),
            Prepared::Refused { .. } => None,
        })
        .collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let plan = plan(store, project, &ready).await?;
        let tokens: Vec<TokenRecord> = plan.new.iter().map(|&i| ready[i].1.clone()).collect();
        let keys: Vec<(String, String)> = plan
            .keys
            .iter()
            .map(|(old, token)| ((*old).to_owned(), token.clone()))
            .collect();
        match store.import_batch(&project.id, &tokens, &keys).await {
            Ok(()) => {
                for &i in &plan.refresh {
                    refresh(store, keyring, project, ready[i].1).await?;
                }
                counts.imported += tokens.len() as u64;
                counts.already_imported += plan.already as u64;
                counts.deduplicated += plan.deduplicated as u64;
                let mut by_id: HashMap<&str, String> = plan.done;
                by_id.extend(plan.keys);
                return Ok(ready
                    .iter()
                    .filter_map(|(old, _)| by_id.get(old).map(|t| (*old, t.clone())))
                    .collect());
            }
            Err(StoreError::Conflict) if attempt < CONFLICT_RETRIES => {
                // A card's fingerprint may still be held by an expired token the sweeper has not
                // reached yet: erased now, as `POST /tokenize` erases it, and the batch tried
                // again (from its lookups: the conflict may as well be another writer's).
                let fingerprints: Vec<Vec<u8>> = tokens
                    .iter()
                    .filter_map(|t| t.fingerprint.clone())
                    .collect();
                if !fingerprints.is_empty() {
                    store
                        .shred_expired_holders(&project.id, &fingerprints)
                        .await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a batch stores: which records are new tokens, and each record's key.
struct Plan<'a> {
    /// Indexes (into the ready records) of the new tokens.
    new: Vec<usize>,
    /// `(old_id, token)` to record.
    keys: Vec<(&'a str, String)>,
    /// `old_id → token` of records an earlier run imported.
    done: HashMap<&'a str, String>,
    already: usize,
    deduplicated: usize,
    /// Indexes (into the ready records) of the records of a card the project holds: each
    /// refreshes that card's token once the batch is stored (an earlier record of the same
    /// batch may hold it).
    refresh: Vec<usize>,
}

/// Refreshes the token the project holds for `record`'s card with `record`'s data and options.
async fn refresh(
    store: &dyn Store,
    keyring: &Keyring,
    project: &Project,
    record: &TokenRecord,
) -> Result<(), PortError> {
    let Some(fingerprint) = &record.fingerprint else {
        return Ok(());
    };
    let (data, allowed) =
        TokenData::open_with_rule(keyring, &record.sealed, &project.id, &record.id)?;
    // `None`: the token was deleted (or expired) since the batch's lookup; the record's key
    // names it all the same, as a token the caller deletes after tokenizing would be named.
    refresh_held_token::<PortError>(
        store,
        keyring,
        &project.id,
        &data,
        fingerprint,
        record.expires_at,
        allowed,
    )
    .await?;
    Ok(())
}

async fn plan<'a>(
    store: &dyn Store,
    project: &Project,
    ready: &[(&'a str, &TokenRecord)],
) -> Result<Plan<'a>, PortError> {
    let ids: Vec<String> = ready.iter().map(|(old, _)| (*old).to_owned()).collect();
    let imported: HashMap<String, String> = store
        .imported_tokens(&project.id, &ids)
        .await?
        .into_iter()
        .collect();
    let mut done = HashMap::new();
    let pending: Vec<usize> = (0..ready.len())
        .filter(|&i| match imported.get(ready[i].0) {
            Some(token) => {
                done.insert(ready[i].0, token.clone());
                false
            }
            None => true,
        })
        .collect();
    let mut held: HashMap<Vec<u8>, String> = HashMap::new();
    if project.deduplicate {
        let fingerprints: Vec<Vec<u8>> = pending
            .iter()
            .filter_map(|&i| ready[i].1.fingerprint.clone())
            .collect();
        held = store
            .tokens_by_fingerprints(&project.id, &fingerprints)
            .await?
            .into_iter()
            .collect();
    }
    let mut plan = Plan {
        new: Vec::with_capacity(pending.len()),
        keys: Vec::with_capacity(pending.len()),
        already: done.len(),
        done,
        deduplicated: 0,
        refresh: Vec::new(),
    };
    for i in pending {
        let (old_id, token) = ready[i];
        match token.fingerprint.as_ref().and_then(|fp| held.get(fp)) {
            Some(existing) => {
                plan.keys.push((old_id, existing.clone()));
                plan.deduplicated += 1;
                plan.refresh.push(i);
            }
            None => {
                if let Some(fp) = &token.fingerprint {
                    // A later record of the same card in this batch maps to this token.
                    held.insert(fp.clone(), token.id.clone());
                }
                plan.keys.push((old_id, token.id.clone()));
                plan.new.push(i);
            }
        }
    }
    Ok(plan)
}

fn csv_writer<const N: usize>(
    path: &Path,
    header: [&str; N],
) -> Result<csv::Writer<std::fs::File>, PortError> {
    let file = std::fs::File::create(path).map_err(|e| PortError::io(path, e))?;
    let mut writer = csv::Writer::from_writer(file);
    write(&mut writer, path, header)?;
    Ok(writer)
}

fn write<const N: usize>(
    writer: &mut csv::Writer<std::fs::File>,
    path: &Path,
    fields: [&str; N],
) -> Result<(), PortError> {
    writer
        .write_record(fields)
        .map_err(|e| PortError::io(path, e.into()))
}

fn flush(writer: &mut csv::Writer<std::fs::File>, path: &Path) -> Result<(), PortError> {
    writer.flush().map_err(|e| PortError::io(path, e))
}
