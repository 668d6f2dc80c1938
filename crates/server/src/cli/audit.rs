//! `audit verify|export`, and the CLI's own records of what it changes.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::init::open_vault;
use super::{CliError, VaultDir};
use crate::StartError;
use crate::audit::{AuditRow, Head, chain};
use crate::store::{AuditFilter, Store};

/// Records read per query.
const PAGE: i64 = 10_000;

async fn all_records(
    store: &dyn Store,
    project: Option<String>,
) -> Result<Vec<AuditRow>, CliError> {
    let mut rows = Vec::new();
    let mut filter = AuditFilter {
        project_id: project,
        limit: PAGE,
        ..AuditFilter::default()
    };
    loop {
        let page = store
            .audit_records(&filter)
            .await
            .map_err(StartError::from)?;
        let Some(last) = page.last() else {
            break;
        };
        filter.after_id = last.id;
        rows.extend(page);
    }
    Ok(rows)
}

pub(super) async fn verify(
    vault: &VaultDir,
    heads: Option<&Path>,
    write_heads: Option<&Path>,
) -> Result<(), CliError> {
    let (store, keyring) = open_vault(vault).await?;
    let kept = match heads {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Path(path.to_path_buf(), e))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                Head::parse(l).ok_or_else(|| {
                    CliError::Usage(format!("{}: not a head line: {l}", path.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let rows = all_records(store.as_ref(), None).await?;
    match chain::verify(&keyring, &rows, &kept) {
        Ok(found) => {
            let lines: Vec<String> = found.iter().map(Head::to_line).collect();
            if let Some(path) = write_heads {
                std::fs::write(path, lines.join("\n") + "\n")
                    .map_err(|e| CliError::Path(path.to_path_buf(), e))?;
            }
            println!(
                "audit log intact: {} records in {} chains",
                rows.len(),
                found.len()
            );
            for line in lines {
                println!("head {line}");
            }
            Ok(())
        }
        Err(broken) => Err(CliError::Usage(format!("audit log broken at {broken}"))),
    }
}

pub(super) async fn export(vault: &VaultDir, project: Option<String>) -> Result<(), CliError> {
    let (store, _) = open_vault(vault).await?;
    let rows = all_records(store.as_ref(), project).await?;
    let mut out = std::io::stdout().lock();
    for row in rows {
        let detail: serde_json::Value =
            serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null);
        let line = json!({
            "id": row.id,
            "chain": row.chain,
            "seq": row.seq,
            "at": crate::clock::rfc3339(row.at_ms / 1000),
            "at_ms": row.at_ms,
            "request_id": row.request_id,
            "project_id": row.project_id,
            "application_id": row.application_id,
            "action": row.action,
            "outcome": row.outcome,
            "token": row.token,
            "detail": detail,
            "prev_hash": hex::encode(&row.prev_hash),
            "hash": hex::encode(&row.hash),
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Records a change the CLI made, in a chain of this run's own.
pub(super) async fn record(
    store: &std::sync::Arc<dyn Store>,
    keyring: &std::sync::Arc<crate::crypto::Keyring>,
    action: &'static str,
    project_id: &str,
    detail: serde_json::Value,
) -> Result<(), CliError> {
    let log = crate::audit::AuditLog::start(
        store.clone(),
        keyring.clone(),
        "cli",
        crate::audit::ChainPerThread(false),
    )
    .await
    .map_err(StartError::from)?;
    let mut entry = crate::audit::Entry::new(action);
    entry.project_id = project_id.to_owned();
    entry.detail = crate::audit::Detail::from_json(detail);
    log.record(entry)
        .await
        .map_err(|e| CliError::Usage(format!("{e}: the change was made but not recorded")))
}
