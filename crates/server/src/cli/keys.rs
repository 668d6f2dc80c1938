//! `keys rotate|status|retire|rewrap`: the data keys' and master key's life, from the command
//! line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{CliError, VaultDir};
use crate::crypto::{Keyring, MasterKey, MasterKeyProvider};
use crate::keys::master::{self, ProviderSettings};
use crate::keys::pkcs11::Pkcs11Settings;
use crate::keys::rewrap;
use crate::keys::rotation::{self, Progress, Rotation};
use crate::store::{SealedKind, Store};
use crate::{StartError, load_keyring, open_store};

async fn open(vault: &VaultDir) -> Result<(Arc<dyn Store>, Arc<Keyring>), CliError> {
    let store = open_store(&vault.database(), false).await?;
    let keyring = Arc::new(load_keyring(store.as_ref(), vault.master_key(false)?).await?);
    Ok((store, keyring))
}

pub(super) async fn rotate(
    vault: &VaultDir,
    cache_ttl: Duration,
    batch_size: u32,
    json: bool,
) -> Result<(), CliError> {
    let (store, keyring) = open(vault).await?;
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn(stop_on_signal(stop.clone()));
    let rotation = Rotation {
        store: store.clone(),
        keyring: &keyring,
        settle: cache_ttl + Duration::from_secs(1),
        batch_size,
        stop: &stop,
    };
    let mut display = Display::new(json);
    let outcome = rotation.run(&mut |p| display.show(p)).await;
    display.finish();
    let rotated = outcome.map_err(|e| CliError::Usage(crate::error_chain::chain(&e)))?;
    super::audit::record(
        &store,
        &keyring,
        "keys.rotate",
        "",
        json!({"version": rotated.version, "resealed": rotated.resealed}),
    )
    .await?;
    if json {
        println!(
            "{}",
            json!({"event": "done", "version": rotated.version, "resealed": rotated.resealed})
        );
    } else {
        println!(
            "rotated: data key version {} seals every record ({} resealed)",
            rotated.version, rotated.resealed
        );
    }
    Ok(())
}

/// Ctrl-C or SIGTERM: finish the batch in progress, then stop.
async fn stop_on_signal(stop: Arc<AtomicBool>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("cardvault: stopping after the batch in progress…");
    stop.store(true, Ordering::Relaxed);
}

/// Progress as a bar on a terminal, or as JSON lines for automation.
struct Display {
    json: bool,
    meter: super::progress::Meter,
}

impl Display {
    fn new(json: bool) -> Self {
        Self {
            json,
            meter: super::progress::Meter::new(json, "resealing", "records"),
        }
    }

    fn show(&mut self, progress: &Progress) {
        match *progress {
            Progress::Added { version } => self.event(
                json!({"event": "added", "version": version}),
                format!("added data key version {version}"),
            ),
            Progress::Resuming { version } => self.event(
                json!({"event": "resuming", "version": version}),
                format!("resuming the rotation to data key version {version}"),
            ),
            Progress::Settling {
                version,
                activating,
                seconds,
            } => {
                let (event, text) = if activating {
                    (
                        "activated",
                        "version {v} now seals new records; waiting {s} s for every instance to switch",
                    )
                } else {
                    (
                        "waiting",
                        "waiting {s} s for every instance to load version {v}",
                    )
                };
                self.event(
                    json!({"event": event, "version": version, "seconds": seconds}),
                    text.replace("{v}", &version.to_string())
                        .replace("{s}", &seconds.to_string()),
                );
            }
            Progress::Resealed { done, total } => self.meter.set(done, total, &[]),
        }
    }

    fn event(&self, line: serde_json::Value, text: String) {
        if self.json {
            println!("{line}");
        } else {
            eprintln!("{text}");
        }
    }

    fn finish(&mut self) {
        self.meter.finish();
    }
}

pub(super) async fn status(vault: &VaultDir, json: bool) -> Result<(), CliError> {
    let (store, keyring) = open(vault).await?;
    let wrapped = store.data_keys().await.map_err(StartError::from)?;
    let counts = store.sealed_counts().await.map_err(StartError::from)?;
    let job = rotation::job(store.as_ref())
        .await
        .map_err(StartError::from)?;
    let sealing = keyring.sealing_version();
    let mut by_version: BTreeMap<u32, [u64; 2]> =
        wrapped.iter().map(|k| (k.version, [0, 0])).collect();
    for (kind, version, n) in counts {
        let slot = by_version.entry(version).or_default();
        slot[usize::from(kind == SealedKind::TlsClientKey)] += n;
    }
    let rotation = job.and_then(|j| {
        let target = j.target_version?;
        Some((target, !j.owner.is_empty()))
    });
    if json {
        let versions: Vec<_> = by_version
            .iter()
            .map(|(v, [tokens, tls])| {
                json!({
                    "version": v,
                    "stored": wrapped.iter().any(|k| k.version == *v),
                    "active": wrapped.iter().any(|k| k.version == *v && k.active),
                    "sealing": *v == sealing,
                    "tokens": tokens,
                    "tls_client_keys": tls,
                })
            })
            .collect();
        let rotation =
            rotation.map(|(target, running)| json!({"target_version": target, "running": running}));
        println!(
            "{}",
            json!({"sealing_version": sealing, "versions": versions, "rotation": rotation})
        );
        return Ok(());
    }
    println!("version  state      tokens  tls client keys");
    for (v, [tokens, tls]) in &by_version {
        let state = match wrapped.iter().find(|k| k.version == *v) {
            None => "missing",
            Some(_) if *v == sealing => "sealing",
            Some(k) if k.active => "active",
            Some(_) => "added",
        };
        println!("{v:>7}  {state:<9} {tokens:>7}  {tls:>15}");
    }
    match rotation {
        Some((target, true)) => println!("a rotation to version {target} is running"),
        Some((target, false)) => println!(
            "a rotation to version {target} was stopped; run `cardvault keys rotate` to resume it"
        ),
        None => {}
    }
    Ok(())
}

pub(super) async fn retire(vault: &VaultDir, version: u32) -> Result<(), CliError> {
    let (store, keyring) = open(vault).await?;
    if version == keyring.sealing_version() {
        return Err(CliError::Usage(format!(
            "data key version {version} seals new records; rotate to a new one first (`cardvault keys rotate`)"
        )));
    }
    let job = rotation::job(store.as_ref())
        .await
        .map_err(StartError::from)?;
    if job.and_then(|j| j.target_version) == Some(version) {
        return Err(CliError::Usage(format!(
            "a rotation is moving records to data key version {version}; let it finish first"
        )));
    }
    match store.delete_unused_data_key(version).await {
        Ok(0) => {}
        Ok(in_use) => {
            return Err(CliError::Usage(format!(
                "{in_use} records are still sealed with data key version {version}; run `cardvault keys rotate` first"
            )));
        }
        Err(crate::store::StoreError::NotFound) => {
            return Err(CliError::Usage(format!(
                "there is no data key version {version}"
            )));
        }
        Err(e) => return Err(StartError::from(e).into()),
    }
    super::audit::record(
        &store,
        &keyring,
        "keys.retire",
        "",
        json!({"version": version}),
    )
    .await?;
    println!("data key version {version} retired: it is gone from the database");
    Ok(())
}

/// Where `keys rewrap` moves the master key to.
#[derive(clap::Args)]
pub(super) struct NewMasterKey {
    /// Where the new master key lives.
    #[arg(long, value_enum)]
    to: ProviderKind,
    /// With --to file: the new key file; a fresh key is written there if it does not exist.
    /// Afterwards it replaces the data directory's master.key (or CARDVAULT_MASTER_KEY).
    #[arg(long, required_if_eq("to", "file"))]
    new_master_key_file: Option<PathBuf>,
    /// With --to pkcs11: the new key's label in the token (generated there if it is not).
    #[arg(long, required_if_eq("to", "pkcs11"))]
    new_pkcs11_key_label: Option<String>,
    /// With --to pkcs11: the token's PKCS#11 module.
    #[arg(long, env = master::PKCS11_MODULE_ENV)]
    new_pkcs11_module: Option<PathBuf>,
    /// With --to pkcs11: the token's label.
    #[arg(long, env = master::PKCS11_TOKEN_LABEL_ENV)]
    new_pkcs11_token_label: Option<String>,
    /// With --to pkcs11: a file holding the token's PIN [default: CARDVAULT_PKCS11_PIN or
    /// CARDVAULT_PKCS11_PIN_FILE].
    #[arg(long)]
    new_pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProviderKind {
    File,
    Pkcs11,
}

impl NewMasterKey {
    fn open(&self) -> Result<Arc<dyn MasterKeyProvider>, CliError> {
        let missing = |flag: &str| CliError::Usage(format!("--to pkcs11 needs {flag}"));
        match self.to {
            ProviderKind::File => {
                let path = self.new_master_key_file.as_ref().ok_or_else(|| {
                    CliError::Usage("--to file needs --new-master-key-file".into())
                })?;
                Ok(Arc::new(new_key_file(path)?))
            }
            ProviderKind::Pkcs11 => {
                let pin = match &self.new_pkcs11_pin_file {
                    Some(path) => master::read_pin_file(path),
                    None => master::pin_from_env(),
                }
                .map_err(StartError::from)?;
                let settings = Pkcs11Settings {
                    module: self
                        .new_pkcs11_module
                        .clone()
                        .ok_or_else(|| missing("--new-pkcs11-module"))?,
                    token_label: self
                        .new_pkcs11_token_label
                        .clone()
                        .ok_or_else(|| missing("--new-pkcs11-token-label"))?,
                    pin,
                    key_label: self
                        .new_pkcs11_key_label
                        .clone()
                        .ok_or_else(|| missing("--new-pkcs11-key-label"))?,
                };
                Ok(ProviderSettings::Pkcs11(settings)
                    .open(true)
                    .map_err(StartError::from)?)
            }
        }
    }
}

/// The key in `path`, or a fresh one written there (0600) when there is no such file.
fn new_key_file(path: &std::path::Path) -> Result<MasterKey, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(MasterKey::from_hex(zeroize::Zeroizing::new(text).trim())
                .map_err(StartError::from)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate().map_err(StartError::from)?;
            super::init::write_private_file(path, key.to_hex().as_bytes())
                .map_err(|e| CliError::Path(path.to_path_buf(), e))?;
            Ok(key)
        }
        Err(e) => Err(CliError::Path(path.to_path_buf(), e)),
    }
}

pub(super) async fn rewrap(
    vault: &VaultDir,
    to: &NewMasterKey,
    json: bool,
) -> Result<(), CliError> {
    let store = open_store(&vault.database(), false).await?;
    let current = vault.master_key(false)?;
    let keyring = Arc::new(load_keyring(store.as_ref(), current.clone()).await?);
    let new = to.open()?;
    let moved = rewrap::rewrap(store.as_ref(), current.as_ref(), new.as_ref())
        .await
        .map_err(|e| CliError::Usage(crate::error_chain::chain(&e)))?;
    let target = match to.to {
        ProviderKind::File => "file",
        ProviderKind::Pkcs11 => "pkcs11",
    };
    super::audit::record(
        &store,
        &keyring,
        "keys.rewrap",
        "",
        json!({"data_keys": moved, "to": target}),
    )
    .await?;
    if json {
        println!(
            "{}",
            json!({"data_keys": moved, "to": target, "master_key": new.describe()})
        );
    } else {
        println!(
            "rewrapped: {moved} data keys and the root secret are now wrapped by {}.\n\
             Start every instance with that key's settings (CARDVAULT_KEY_PROVIDER and its \
             settings); running instances keep serving until they are restarted.",
            new.describe()
        );
    }
    Ok(())
}
