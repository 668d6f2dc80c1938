//! `import` and `export`: cards in from another vault's export, and out to another vault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde_json::json;
use zeroize::Zeroizing;

use super::destinations::find_project;
use super::init::open_vault;
use super::progress::Meter;
use super::{CliError, VaultDir};
use crate::portability::import::{self, Counts};
use crate::portability::layout::Mapping;
use crate::portability::openpgp::{DecryptionKey, Recipient};
use crate::portability::{Format, PortError, export};

/// The environment variable an import's key passphrase may come from.
pub const PASSPHRASE_ENV: &str = "CARDVAULT_IMPORT_PASSPHRASE";

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum FormatArg {
    Csv,
    Jsonl,
}

#[derive(Args)]
pub(super) struct ImportArgs {
    #[command(flatten)]
    vault: VaultDir,
    /// The project's id (`proj_…`).
    #[arg(long)]
    project: String,
    /// The file to import: plain, or OpenPGP-encrypted (with --decrypt-key).
    input: PathBuf,
    /// `csv` (a header line naming the columns) or `jsonl` (one JSON object per line, the
    /// layout `cardvault export` writes).
    #[arg(long, value_enum, default_value = "csv")]
    format: FormatArg,
    /// Where a field is, when its column (or key) has none of the common names: FIELD=COLUMN,
    /// repeated. Fields: id, type, number, exp_month, exp_year, expiry, first_name, last_name,
    /// name, account_number, routing_number.
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    map: Vec<String>,
    /// OpenPGP private key (armored or binary) the input is encrypted to; it is decrypted as
    /// it is read, never to disk.
    #[arg(long)]
    decrypt_key: Option<PathBuf>,
    /// A file holding the key's passphrase [default: CARDVAULT_IMPORT_PASSPHRASE, else none].
    #[arg(long, requires = "decrypt_key")]
    passphrase_file: Option<PathBuf>,
    /// Where to write `old_id,token` lines [default: INPUT.mapping.csv].
    #[arg(long)]
    mapping_file: Option<PathBuf>,
    /// Where to write `line,reason` for each refused record [default: INPUT.rejects.csv].
    #[arg(long)]
    reject_file: Option<PathBuf>,
    /// Records stored per transaction.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    batch_size: u32,
    /// The vault's retention period: imported tokens that name no `expires_at` expire after
    /// this many seconds, and none may name a later one.
    #[arg(long, env = "CARDVAULT_TOKEN_RETENTION_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    token_retention_seconds: Option<u64>,
    /// Progress as JSON lines on stdout (events: checked, progress, done) instead of a bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    vault: VaultDir,
    /// The project's id (`proj_…`).
    #[arg(long)]
    project: String,
    /// The OpenPGP public key (armored or binary) to encrypt the export to.
    #[arg(long)]
    recipient: PathBuf,
    /// The encrypted file to write.
    #[arg(long)]
    output: PathBuf,
    /// Write ASCII-armored OpenPGP instead of binary.
    #[arg(long)]
    armor: bool,
    /// Required: the export holds every card number of the project (encrypted to the
    /// recipient).
    #[arg(long)]
    i_understand_this_exports_card_data: bool,
    /// Progress as JSON lines on stdout (events: progress, done) instead of a bar.
    #[arg(long)]
    json: bool,
}

fn beside(input: &Path, suffix: &str) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn passphrase(file: Option<&Path>) -> Result<Zeroizing<String>, CliError> {
    match file {
        Some(path) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| CliError::Path(path.to_path_buf(), e))?,
            );
            Ok(Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        }
        None => Ok(Zeroizing::new(
            std::env::var(PASSPHRASE_ENV).unwrap_or_default(),
        )),
    }
}

fn failed(e: &PortError) -> CliError {
    CliError::Usage(crate::error_chain::chain(e))
}

pub(super) async fn import(args: ImportArgs) -> Result<(), CliError> {
    let mapping = Mapping::parse(&args.map).map_err(CliError::Usage)?;
    let decryption = match &args.decrypt_key {
        Some(path) => {
            let pass = passphrase(args.passphrase_file.as_deref())?;
            Some(Arc::new(
                DecryptionKey::load(path, pass).map_err(|e| failed(&e))?,
            ))
        }
        None => None,
    };
    let (store, keyring) = open_vault(&args.vault).await?;
    let project = find_project(store.as_ref(), &args.project).await?;
    let mapping_out = args
        .mapping_file
        .clone()
        .unwrap_or_else(|| beside(&args.input, ".mapping.csv"));
    let rejects_out = args
        .reject_file
        .clone()
        .unwrap_or_else(|| beside(&args.input, ".rejects.csv"));
    let options = import::Options {
        input: args.input.clone(),
        format: match args.format {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
        },
        mapping,
        decryption: decryption.clone(),
        mapping_out: mapping_out.clone(),
        rejects_out: rejects_out.clone(),
        batch_size: args.batch_size as usize,
        retention: args
            .token_retention_seconds
            .map(std::time::Duration::from_secs),
    };
    let options = Arc::new(options);
    let json = args.json;
    let started = std::time::Instant::now();
    // A run refused here (a wrong key, a tampered file) stored nothing and is not audited.
    let total = import::check(&options).await.map_err(|e| failed(&e))?;
    if json {
        println!("{}", json!({"event": "checked", "total": total}));
    } else {
        eprintln!("the input is intact and holds {total} records; importing");
    }
    // Recorded before the first batch is stored, so a run that stops midway (killed, or the
    // database failing) leaves a trace: a `cards.import.started` with no `cards.import` after
    // it. The run that resumes it records the counts, `resumed` when it found records stored
    // before.
    let encrypted = decryption.is_some();
    super::audit::record(
        &store,
        &keyring,
        "cards.import.started",
        &project.id,
        json!({"rows": total, "encrypted": encrypted}),
    )
    .await?;
    let mut meter = Meter::new(json, "importing", "records");
    let mut show = |counts: Counts, total| {
        meter.set(counts.rows, total, &[("rejected", counts.rejected)]);
    };
    let outcome = import::store(
        store.clone(),
        keyring.clone(),
        &project,
        options,
        total,
        &mut show,
    )
    .await;
    meter.finish();
    let seconds = started.elapsed().as_secs_f64();
    let counts = outcome.map_err(|e| failed(&e))?;
    super::audit::record(
        &store,
        &keyring,
        "cards.import",
        &project.id,
        json!({
            "rows": counts.rows,
            "imported": counts.imported,
            "already_imported": counts.already_imported,
            "deduplicated": counts.deduplicated,
            "rejected": counts.rejected,
            "encrypted": encrypted,
            "resumed": counts.already_imported > 0,
        }),
    )
    .await?;
    let rate = if seconds > 0.0 {
        (counts.rows as f64 / seconds).round()
    } else {
        0.0
    };
    if json {
        println!(
            "{}",
            json!({
                "event": "done",
                "rows": counts.rows,
                "imported": counts.imported,
                "already_imported": counts.already_imported,
                "deduplicated": counts.deduplicated,
                "rejected": counts.rejected,
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "rate_per_second": rate,
                "mapping_file": mapping_out,
                "reject_file": rejects_out,
            })
        );
    } else {
        println!(
            "{} records read in {seconds:.1} s ({rate} a second): {} imported, {} already imported, {} deduplicated, {} rejected",
            counts.rows,
            counts.imported,
            counts.already_imported,
            counts.deduplicated,
            counts.rejected
        );
        println!("mapping (old_id,token): {}", mapping_out.display());
        println!("rejects (line,reason):  {}", rejects_out.display());
    }
    Ok(())
}

pub(super) async fn export(args: ExportArgs) -> Result<(), CliError> {
    if !args.i_understand_this_exports_card_data {
        return Err(CliError::Usage(
            "an export holds every card of the project: pass --i-understand-this-exports-card-data"
                .into(),
        ));
    }
    let recipient = Arc::new(Recipient::load(&args.recipient).map_err(|e| failed(&e))?);
    let (store, keyring) = open_vault(&args.vault).await?;
    let project = find_project(store.as_ref(), &args.project).await?;
    let mut meter = Meter::new(args.json, "exporting", "tokens");
    let mut show = |done, total| meter.set(done, total, &[]);
    let options = export::Options {
        output: args.output.clone(),
        armor: args.armor,
    };
    let outcome = export::run(
        store.clone(),
        keyring.clone(),
        &project,
        recipient,
        options,
        &mut show,
    )
    .await;
    meter.finish();
    let exported = outcome.map_err(|e| failed(&e))?;
    super::audit::record(
        &store,
        &keyring,
        "cards.export",
        &project.id,
        json!({"exported": exported}),
    )
    .await?;
    if args.json {
        println!(
            "{}",
            json!({"event": "done", "exported": exported, "output": args.output})
        );
    } else {
        println!(
            "{exported} tokens exported, encrypted to the recipient, to {}",
            args.output.display()
        );
    }
    Ok(())
}
