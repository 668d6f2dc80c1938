//! `init`: create a vault (its master key, schema and first project), and the helpers that
//! open one and print keys.

use std::io::Write;

use std::path::Path;
use std::sync::Arc;

use super::{CliError, VaultDir};
use crate::admin::{self, CreatedKeys, NewProject};

use crate::crypto::{MASTER_KEY_ENV, MASTER_KEY_FILE, MasterKey, MasterKeyProvider};
use crate::keys::master::ProviderSettings;
use crate::store::Database;
use crate::store::Mode;
use crate::{StartError, load_keyring, open_store};

pub(super) async fn open_vault(
    vault: &VaultDir,
) -> Result<
    (
        std::sync::Arc<dyn crate::store::Store>,
        std::sync::Arc<crate::crypto::Keyring>,
    ),
    CliError,
> {
    let store = open_store(&vault.database(), false).await?;
    let keyring = load_keyring(store.as_ref(), vault.master_key(false)?).await?;
    Ok((store, std::sync::Arc::new(keyring)))
}

pub(super) async fn init(vault: &VaultDir, json: bool) -> Result<(), CliError> {
    let data_dir = &vault.data_dir;
    let key_path = data_dir.join(MASTER_KEY_FILE);
    let database = vault.database();
    let sqlite_exists = matches!(&database, Database::Sqlite(path) if path.exists());
    if key_path.exists() || sqlite_exists {
        return Err(CliError::Usage(format!(
            "{} already holds a vault; refusing to touch it",
            data_dir.display()
        )));
    }
    create_private_dir(data_dir).map_err(|e| CliError::Path(data_dir.to_path_buf(), e))?;
    let provider = ProviderSettings::from_env(data_dir).map_err(StartError::from)?;
    // Instances that share a database share its master key: given in the environment, it is
    // used as is; in a token, it is found there (or made there); otherwise a new one is
    // written to the data directory.
    let (master, new_key_file): (Arc<dyn MasterKeyProvider>, _) = if !provider.is_file() {
        (provider.open(true).map_err(StartError::from)?, None)
    } else if let Ok(hex) = std::env::var(MASTER_KEY_ENV) {
        let key = MasterKey::from_hex(hex.trim()).map_err(StartError::from)?;
        (Arc::new(key), None)
    } else {
        let key = MasterKey::generate().map_err(StartError::from)?;
        (Arc::new(key.clone()), Some(key))
    };
    let store = open_store(&database, true).await?;
    if !store
        .data_keys()
        .await
        .map_err(StartError::from)?
        .is_empty()
    {
        return Err(CliError::Usage(
            "the database already holds a vault; refusing to touch it (give other instances its master key instead)".into(),
        ));
    }
    if let Some(key) = new_key_file {
        write_private_file(&key_path, key.to_hex().as_bytes())
            .map_err(|e| CliError::Path(key_path.clone(), e))?;
    }
    let keyring = Arc::new(load_keyring(store.as_ref(), master).await?);
    let new = NewProject {
        name: "default",
        mode: Mode::Test,
        deduplicate: false,
        first_permissions: crate::store::Permissions {
            tokenization: true,
            ..Default::default()
        },
    };
    let created = admin::create_project(store.as_ref(), &keyring, new).await?;
    super::audit::record(
        &store,
        &keyring,
        "project.create",
        &created.project_id,
        serde_json::json!({"by": "init"}),
    )
    .await?;
    print_keys(
        &created,
        json,
        &format!("vault initialized in {}", data_dir.display()),
    )
}

pub(super) fn print_keys(created: &CreatedKeys, json: bool, title: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(created).map_err(|e| CliError::Usage(e.to_string()))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    writeln!(out, "{title}")?;
    writeln!(out, "  project:         {}", created.project_id)?;
    writeln!(out, "  application:     {}", created.application_id)?;
    if let Some(pk) = &created.publishable_key {
        writeln!(out, "  publishable key: {pk}")?;
    }
    writeln!(
        out,
        "  API key:         {}",
        secrecy::ExposeSecret::expose_secret(&created.api_key)
    )?;
    writeln!(out, "Store the API key now: it is shown only once.")?;
    Ok(())
}

pub(super) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

pub(super) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
