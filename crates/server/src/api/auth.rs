//! Who is calling: the application behind `X-API-Key`, and its project.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::{ApiError, AppState};
use crate::limits::rate::Budget;
use crate::store::{Application, Project, StoreError};

/// Longer than any key we issue; refusing early keeps junk out of the hash and the database.
const MAX_KEY_LEN: usize = 256;

// Names made once, not parsed from text at each lookup (as a `&str` name is).
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const PUB_KEY: HeaderName = HeaderName::from_static("x-pub-key");

/// An authenticated caller. Its application and project are shared with the key cache: a call
/// takes two references, not copies of their strings.
pub struct Caller {
    pub app: Arc<Application>,
    pub project: Arc<Project>,
    /// The request's id, for the audit log (none outside a request's frame).
    pub request_id: Option<Arc<str>>,
}

impl Caller {
    /// An audit entry for `action` by this caller.
    pub fn audit(&self, action: &'static str) -> crate::audit::Entry {
        let mut entry = crate::audit::Entry::new(action);
        if let Some(id) = &self.request_id {
            entry.request_id = id.to_string();
        }
        entry.project_id.clone_from(&self.project.id);
        entry.application_id.clone_from(&self.app.id);
        entry
    }

    /// Takes this call from the application's `budget` (429 when it is spent).
    pub async fn within_budget(&self, state: &AppState, budget: Budget) -> Result<(), ApiError> {
        state
            .rate_limits
            .admit(budget, &self.app.id)
            .await
            .map_err(ApiError::from)
    }

    pub fn require_tokenization(&self) -> Result<(), ApiError> {
        allowed(self.app.permissions.tokenization)
    }

    /// Reading the audit log.
    pub fn require_audit(&self) -> Result<(), ApiError> {
        allowed(self.app.permissions.audit)
    }

    /// Managing the project's applications and settings (Ozura's dashboard, here a key).
    pub fn require_provisioning(&self) -> Result<(), ApiError> {
        allowed(self.app.permissions.provisioning)
    }

    /// `reveal`: reading card data back in the clear (`POST /detokenize`). Never implied by
    /// another permission and never granted by default.
    pub fn require_reveal(&self) -> Result<(), ApiError> {
        if self.app.permissions.reveal {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied)
        }
    }

    /// Checks `X-Pub-Key` names the caller's own project.
    pub async fn require_pub_key(
        &self,
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let key = header_key(headers, &PUB_KEY)
            .ok_or_else(|| ApiError::InvalidApiKey.because("the X-Pub-Key header is missing"))?;
        match project_by_pub_key(state, key).await? {
            Some(project) if project.id == self.project.id => Ok(()),
            _ => Err(ApiError::InvalidApiKey),
        }
    }
}

/// The project a publishable key belongs to (cached), if any.
pub async fn project_by_pub_key(state: &AppState, key: &str) -> Result<Option<Project>, ApiError> {
    if key.len() > MAX_KEY_LEN {
        return Ok(None);
    }
    let hash = state.keyring.key_hash(key);
    if let Some(project) = state.caches.publishable_keys.get(&hash) {
        return Ok(Some(project));
    }
    match state.store.project_by_pub_key(&hash).await {
        Ok(project) => {
            state.caches.publishable_keys.insert(hash, project.clone());
            Ok(Some(project))
        }
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn allowed(permission: bool) -> Result<(), ApiError> {
    if permission {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied)
    }
}

fn header_key<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut caller = Self::authenticate(state, &parts.headers).await?;
        if let Some(id) = parts.extensions.get::<super::request_context::RequestId>() {
            caller.request_id = Some(id.0.clone());
        }
        // Before any other extractor reads the body.
        let budget = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(Budget::Provisioning, |route| {
                super::rate_limit::budget_for(route.as_str())
            });
        caller.within_budget(state, budget).await?;
        Ok(caller)
    }
}

impl Caller {
    /// The application behind `X-API-Key`.
    pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Self, ApiError> {
        let key = header_key(headers, &API_KEY)
            .ok_or_else(|| ApiError::InvalidApiKey.because("the X-API-Key header is missing"))?;
        // Keys are looked up by their keyed hash: an attacker cannot steer the hash, so the index
        // lookup's timing says nothing about any stored key.
        let hash = state.keyring.key_hash(key);
        let found = match state.caches.callers.get(&hash) {
            Some(caller) => Ok(caller),
            None => state
                .store
                .application_by_key(&hash)
                .await
                .map(|(app, project)| {
                    let caller = (Arc::new(app), Arc::new(project));
                    state.caches.callers.insert(hash.clone(), caller.clone());
                    caller
                }),
        };
        match found {
            // A rolled key's overlap ends on time even while it sits in the cache.
            Ok((app, _))
                if app
                    .key_expires_at
                    .is_some_and(|t| t <= crate::clock::now_unix()) =>
            {
                Err(ApiError::InvalidApiKey)
            }
            Ok((app, project)) => {
                tracing::Span::current().record("app", app.id.as_str());
                Ok(Self {
                    app,
                    project,
                    request_id: None,
                })
            }
            Err(StoreError::NotFound) => Err(ApiError::InvalidApiKey),
            Err(e) => Err(e.into()),
        }
    }
}
