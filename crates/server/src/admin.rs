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
    #[error("an application name is 3 to 50 characters, without control characters")]
    InvalidName,
    #[error("the project already has an application of that name")]
    NameTaken,
    /// Settings that cannot be used, with the reason (never a key's text).
    #[error("{0}")]
    Invalid(String),
}

/// A project's TLS settings for one processor host, as given (PEM texts).
pub struct ProcessorTls {
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<zeroize::Zeroizing<String>>,
}

/// The host part of a TLS setting, normalized as allowlist patterns are (no path).
pub fn tls_host(host: &str) -> Result<String, AdminError> {
    let rule = cardvault_core::destination::AllowRule::parse(host)
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    let host = rule.to_string();
    if host.contains('/') {
        return Err(AdminError::Invalid("a TLS host takes no path".into()));
    }
    Ok(host)
}

/// Checks and stores TLS settings for one processor host; the client key is sealed like card
/// data, bound to the project and host.
pub async fn set_processor_tls(
    store: &dyn Store,
    keyring: &Keyring,
    project: &Project,
    host: &str,
    tls: ProcessorTls,
) -> Result<String, AdminError> {
    let host = tls_host(host)?;
    if let Some(pem) = &tls.ca_pem {
        crate::upstream::add_pem_roots(&mut rustls::RootCertStore::empty(), pem)
            .map_err(AdminError::Invalid)?;
    }
    let client_key = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            crate::upstream::check_client_identity(cert, key).map_err(AdminError::Invalid)?;
            let aad = crate::crypto::aad::tls_client_key(&project.id, &host);
            Some(keyring.seal(key.as_bytes(), &aad)?)
        }
        (None, None) => None,
        _ => {
            return Err(AdminError::Invalid(
                "a client certificate and its key go together".into(),
            ));
        }
    };
    if tls.ca_pem.is_none() && client_key.is_none() {
        return Err(AdminError::Invalid(
            "give a CA, or a client certificate with its key".into(),
        ));
    }
    let stored = crate::store::DestinationTls {
        host: host.clone(),
        ca_pem: tls.ca_pem,
        client_cert_pem: tls.client_cert_pem,
        client_key,
        updated_at_ms: crate::store::now_unix_ms(),
    };
    store.put_destination_tls(&project.id, &stored).await?;
    Ok(host)
}

/// Shortest and longest application names (as Ozura's).
const NAME_CHARS: std::ops::RangeInclusive<usize> = 3..=50;

/// Checks an application name: 3 to 50 characters, none of them control characters.
pub fn check_application_name(name: &str) -> Result<(), AdminError> {
    let chars = name.chars().count();
    if NAME_CHARS.contains(&chars) && !name.chars().any(char::is_control) && name.trim() == name {
        Ok(())
    } else {
        Err(AdminError::InvalidName)
    }
}

fn name_taken(e: StoreError) -> AdminError {
    match e {
        StoreError::Conflict => AdminError::NameTaken,
        other => AdminError::Store(other),
    }
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
    /// What the project's first application may do.
    pub first_permissions: Permissions,
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
    let mut created =
        create_application(store, keyring, &project, "default", new.first_permissions).await?;
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
        key_expires_at: None,
    };
    check_application_name(name)?;
    let api_key = new_api_key(keyring, name, project)?;
    store
        .insert_application(&app, &keyring.key_hash(api_key.expose_secret()))
        .await
        .map_err(name_taken)?;
    Ok(CreatedKeys {
        project_id: project.id.clone(),
        application_id: app.id,
        publishable_key: None,
        api_key,
    })
}

fn new_api_key(
    keyring: &Keyring,
    name: &str,
    project: &Project,
) -> Result<SecretString, CryptoError> {
    Ok(SecretString::from(format!(
        "key_{}_{}_pvt_{}",
        key_label(name),
        project.mode.as_str(),
        keyring.random_hex(32)?.as_str()
    )))
}

/// Renames and re-permits an application.
pub async fn update_application(
    store: &dyn Store,
    project: &Project,
    id: &str,
    name: &str,
    permissions: Permissions,
) -> Result<(), AdminError> {
    check_application_name(name)?;
    store
        .update_application(&project.id, id, name, permissions)
        .await
        .map_err(name_taken)
}

/// A new key for an application; its other keys keep working for `overlap`, then stop.
/// Returns the key (shown once) and when the old ones stop (unix seconds).
pub async fn roll_key(
    store: &dyn Store,
    keyring: &Keyring,
    project: &Project,
    id: &str,
    overlap: std::time::Duration,
) -> Result<(SecretString, i64), AdminError> {
    let app = store.application(&project.id, id).await?;
    let api_key = new_api_key(keyring, &app.app.name, project)?;
    let overlap = i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX);
    let old_keys_expire_at = crate::clock::now_unix().saturating_add(overlap);
    store
        .roll_application_key(
            &project.id,
            id,
            &keyring.key_hash(api_key.expose_secret()),
            old_keys_expire_at,
        )
        .await?;
    Ok((api_key, old_keys_expire_at))
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
