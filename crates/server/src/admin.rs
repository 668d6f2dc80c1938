//! Creating projects and applications: shared by the CLI and (later) the provisioning API.

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};

use crate::crypto::{CryptoError, Keyring};
use crate::store::{Application, Mode, Permissions, Project, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Keys are shown once, at creation; only their keyed hashes are stored. The secret key is a
/// secret from the moment it exists: it prints only where it is deliberately shown.
#[derive(Serialize)]
pub struct CreatedKeys {
    pub project_id: String,
    pub application_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishable_key: Option<String>,
    #[serde(serialize_with = "show_once")]
    pub api_key: SecretString,
}

/// The one place a created API key is written out: the answer to whoever created it.
fn show_once<S: Serializer>(key: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(key.expose_secret())
}

pub struct NewProject<'a> {
    pub name: &'a str,
    pub mode: Mode,
    pub deduplicate: bool,
}

/// A project with its publishable key and a first application allowed to tokenize.
pub async fn create_project(
    store: &dyn Store,
    keyring: &Keyring,
    new: NewProject<'_>,
) -> Result<CreatedKeys, AdminError> {
    let project = Project {
        id: format!("proj_{}", keyring.random_hex(12)?),
        name: new.name.to_owned(),
        mode: new.mode,
        deduplicate: new.deduplicate,
    };
    let publishable_key = format!("pk_{}_{}", new.mode.as_str(), keyring.random_hex(24)?);
    store
        .insert_project(&project, &keyring.key_hash(&publishable_key))
        .await?;
    let permissions = Permissions {
        tokenization: true,
        ..Permissions::default()
    };
    let mut created = create_application(store, keyring, &project, "default", permissions).await?;
    created.publishable_key = Some(publishable_key);
    Ok(created)
}

pub async fn create_application(
    store: &dyn Store,
    keyring: &Keyring,
    project: &Project,
    name: &str,
    permissions: Permissions,
) -> Result<CreatedKeys, AdminError> {
    let app = Application {
        id: format!("app_{}", keyring.random_hex(12)?),
        project_id: project.id.clone(),
        name: name.to_owned(),
        permissions,
    };
    let api_key = SecretString::from(format!(
        "key_{}_{}_pvt_{}",
        key_label(name),
        project.mode.as_str(),
        keyring.random_hex(32)?.as_str()
    ));
    store
        .insert_application(&app, &keyring.key_hash(api_key.expose_secret()))
        .await?;
    Ok(CreatedKeys {
        project_id: project.id.clone(),
        application_id: app.id,
        publishable_key: None,
        api_key,
    })
}

/// The application name as it appears inside a key: lowercase letters and digits only.
fn key_label(name: &str) -> String {
    let label: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(24)
        .collect();
    if label.is_empty() {
        "app".to_owned()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::key_label;

    #[test]
    fn key_labels_are_safe() {
        assert_eq!(key_label("Checkout Web"), "checkoutweb");
        assert_eq!(key_label("_pvt_"), "pvt");
        assert_eq!(key_label("!!"), "app");
    }
}
