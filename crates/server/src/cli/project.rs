//! `project origins|show` (the web origins allowed to embed a project's card fields, a project's
//! settings at a glance) and `app list|revoke|roll-key`.

use cardvault_core::origin::OriginPattern;
use serde_json::json;

use super::destinations::find_project;
use super::init::open_vault;
use super::{CliError, VaultDir};
use crate::StartError;
use crate::store::StoreError;

pub(super) async fn set_origins(
    vault: &VaultDir,
    project: &str,
    clear: bool,
    origins: &[String],
) -> Result<(), CliError> {
    let patterns = origins
        .iter()
        .map(|o| OriginPattern::parse(o).map(|p| p.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, keyring) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    if clear || !patterns.is_empty() {
        store
            .set_allowed_origins(&project.id, &patterns)
            .await
            .map_err(StartError::from)?;
        super::audit::record(
            &store,
            &keyring,
            "project.update",
            &project.id,
            json!({"fields": ["allowed_origins"]}),
        )
        .await?;
    }
    let now = store
        .allowed_origins(&project.id)
        .await
        .map_err(StartError::from)?;
    if now.is_empty() {
        println!(
            "{}: no allowed origins (no page may embed its card fields)",
            project.id
        );
    } else {
        println!("{} card fields may be embedded by:", project.id);
        for origin in now {
            println!("  {origin}");
        }
    }
    Ok(())
}

pub(super) async fn show(vault: &VaultDir, project: &str, as_json: bool) -> Result<(), CliError> {
    let (store, _) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    let origins = store
        .allowed_origins(&project.id)
        .await
        .map_err(StartError::from)?;
    let destinations = store
        .destination_rules(&project.id)
        .await
        .map_err(StartError::from)?;
    let tls_hosts: Vec<String> = store
        .destination_tls(&project.id)
        .await
        .map_err(StartError::from)?
        .into_iter()
        .map(|t| t.host)
        .collect();
    if as_json {
        let settings = json!({
            "project_id": project.id,
            "name": project.name,
            "mode": project.mode.as_str(),
            "deduplicate": project.deduplicate,
            "allowed_origins": origins,
            "destination_allowlist": destinations,
            "tls_hosts": tls_hosts,
        });
        println!("{settings}");
        return Ok(());
    }
    let list = |items: &[String], none: &str| {
        if items.is_empty() {
            none.to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("project:               {}", project.id);
    println!("name:                  {}", project.name);
    println!("mode:                  {}", project.mode.as_str());
    println!("deduplicate:           {}", project.deduplicate);
    println!(
        "allowed origins:       {}",
        list(&origins, "none (card fields cannot be embedded)")
    );
    println!(
        "destination allowlist: {}",
        list(&destinations, "none (the server policy applies)")
    );
    println!("processor TLS hosts:   {}", list(&tls_hosts, "none"));
    Ok(())
}

pub(super) async fn list_apps(
    vault: &VaultDir,
    project: &str,
    as_json: bool,
) -> Result<(), CliError> {
    let (store, _) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    let apps = store
        .applications(&project.id)
        .await
        .map_err(StartError::from)?;
    if as_json {
        let list: Vec<_> = apps
            .iter()
            .map(|a| {
                json!({
                    "id": a.app.id,
                    "name": a.app.name,
                    "permissions": a.app.permissions.to_list(),
                    "created_at": crate::clock::rfc3339(a.created_at),
                })
            })
            .collect();
        println!("{}", json!(list));
        return Ok(());
    }
    for a in apps {
        println!(
            "{}  {}  [{}]  created {}",
            a.app.id,
            a.app.name,
            a.app.permissions.to_list(),
            crate::clock::rfc3339(a.created_at)
        );
    }
    Ok(())
}

pub(super) async fn revoke_app(vault: &VaultDir, project: &str, app: &str) -> Result<(), CliError> {
    let (store, keyring) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    match store.revoke_application(&project.id, app).await {
        Ok(()) => {
            super::audit::record(
                &store,
                &keyring,
                "application.delete",
                &project.id,
                json!({"target": app}),
            )
            .await?;
            println!(
                "{app} revoked: its keys no longer work (other running instances stop accepting them within cache_ttl_ms)"
            );
            Ok(())
        }
        Err(StoreError::NotFound) => Err(CliError::Usage(format!(
            "no live application {app} in {}",
            project.id
        ))),
        Err(e) => Err(StartError::from(e).into()),
    }
}

pub(super) async fn roll_app_key(
    vault: &VaultDir,
    project: &str,
    app: &str,
    overlap_seconds: u64,
    as_json: bool,
) -> Result<(), CliError> {
    let (store, keyring) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    let (key, old_expire_at) = crate::admin::roll_key(
        store.as_ref(),
        &keyring,
        &project,
        app,
        std::time::Duration::from_secs(overlap_seconds),
    )
    .await
    .map_err(|e| match e {
        crate::admin::AdminError::Store(StoreError::NotFound) => {
            CliError::Usage(format!("no live application {app} in {}", project.id))
        }
        other => CliError::Admin(other),
    })?;
    let old = crate::clock::rfc3339(old_expire_at);
    super::audit::record(
        &store,
        &keyring,
        "application.roll_key",
        &project.id,
        json!({"target": app, "old_keys_expire_at": old}),
    )
    .await?;
    let key = secrecy::ExposeSecret::expose_secret(&key);
    if as_json {
        println!(
            "{}",
            json!({"application_id": app, "api_key": key, "old_keys_expire_at": old})
        );
    } else {
        println!("new API key for {app}: {key}");
        println!("Store it now: it is shown only once. The old key stops working at {old}.");
    }
    Ok(())
}
