//! `project allow|disallow|tls`: a project's destination allowlist and processor TLS settings.

use std::path::{Path, PathBuf};

use cardvault_core::destination::AllowRule;

use super::init::open_vault;
use super::{CliError, ProjectRules, VaultDir};

use crate::StartError;
use crate::store::StoreError;

pub(super) async fn change_allowlist(args: ProjectRules, add: bool) -> Result<(), CliError> {
    let rules = args
        .rules
        .iter()
        .map(|r| AllowRule::parse(r).map(|rule| rule.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, _) = open_vault(&args.vault).await?;
    let project = find_project(store.as_ref(), &args.project).await?;
    for rule in &rules {
        let changed = if add {
            store.add_destination_rule(&project.id, rule).await
        } else {
            store.remove_destination_rule(&project.id, rule).await
        };
        match changed {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(CliError::Usage(format!("{rule} is not in the allowlist")));
            }
            Err(e) => return Err(StartError::from(e).into()),
        }
    }
    let now = store
        .destination_rules(&project.id)
        .await
        .map_err(StartError::from)?;
    if now.is_empty() {
        println!(
            "{}: no allowlist (any destination the server policy permits)",
            project.id
        );
    } else {
        println!("{} may call:", project.id);
        for rule in now {
            println!("  {rule}");
        }
    }
    Ok(())
}

pub(super) struct TlsFiles {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
}

pub(super) async fn set_destination_tls(
    vault: &VaultDir,
    project: &str,
    host: &str,
    files: TlsFiles,
    remove: bool,
) -> Result<(), CliError> {
    let host = crate::admin::tls_host(host).map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, keyring) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    if remove {
        return match store.remove_destination_tls(&project.id, &host).await {
            Ok(()) => {
                println!("{}: TLS settings for {host} removed", project.id);
                Ok(())
            }
            Err(StoreError::NotFound) => {
                Err(CliError::Usage(format!("no TLS settings for {host}")))
            }
            Err(e) => Err(StartError::from(e).into()),
        };
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
    };
    if files.ca_file.is_none() && files.client_cert.is_none() {
        return Err(CliError::Usage(
            "give --ca-file, or --client-cert with --client-key (or --remove)".into(),
        ));
    }
    let tls = crate::admin::ProcessorTls {
        ca_pem: files.ca_file.as_deref().map(read).transpose()?,
        client_cert_pem: files.client_cert.as_deref().map(read).transpose()?,
        client_key_pem: files
            .client_key
            .as_deref()
            .map(read)
            .transpose()?
            .map(zeroize::Zeroizing::new),
    };
    let host = crate::admin::set_processor_tls(store.as_ref(), &keyring, &project, &host, tls)
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::Invalid(reason) => CliError::Usage(reason),
            other => CliError::Admin(other),
        })?;
    println!("{}: TLS settings for {host} saved", project.id);
    Ok(())
}

pub(super) async fn find_project(
    store: &dyn crate::store::Store,
    id: &str,
) -> Result<crate::store::Project, CliError> {
    match store.project(id).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(CliError::Usage(format!("no project {id}"))),
        Err(e) => Err(StartError::from(e).into()),
    }
}
