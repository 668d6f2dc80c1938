//! A project's settings over HTTP (`GET|PATCH /api/projects/{id}`, a key with `provisioning`,
//! its own project only) and sub-projects (`POST /internal/provision`, Ozura's path).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use cardvault_core::destination::AllowRule;
use cardvault_core::origin::OriginPattern;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::applications::admin_error;
use super::auth::Caller;
use super::body::{RawBody, json_object};
use super::idempotency::create_once;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::admin::{self, AdminError, NewProject, ProcessorTls};
use crate::store::{Mode, Permissions, Project, StoreError};

/// `GET /api/projects/{id}`
#[utoipa::path(
    get,
    path = "/api/projects/{id}",
    tag = "projects",
    summary = "Read the project's settings",
    operation_id = "getProject",
    description = "The caller's project's settings (extension).",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The caller's own project (`proj_…`)")),
    responses(
        (status = 200, description = "The settings", body = doc::ProjectAnswer),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`project_not_found`: not the caller's own project", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_provisioning()?;
    own_project(&caller, id)?;
    let project = state.store.project(&caller.project.id).await?;
    Ok(Json(
        json!({"success": true, "data": settings_json(&state, &project).await?}),
    ))
}

/// `PATCH /api/projects/{id}`: any of `deduplicate`, `allowed_origins`,
/// `destination_allowlist` (lists replace the current ones) and `processor_tls` (per host:
/// settings, or `null` to remove them). Everything is checked before anything is changed.
#[utoipa::path(
    patch,
    path = "/api/projects/{id}",
    tag = "projects",
    summary = "Change the project's settings",
    operation_id = "updateProject",
    description = "Changes the caller's project's settings (extension); other instances see the \
        change within the cache period.",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The caller's own project (`proj_…`)")),
    request_body = doc::ProjectPatch,
    responses(
        (status = 200, description = "The settings, changed", body = doc::ProjectAnswer),
        (status = 400, description = "`invalid_body` (also for an unknown setting), `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`project_not_found`: not the caller's own project", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_provisioning()?;
    own_project(&caller, id)?;
    let body = json_object(&body)?;
    const FIELDS: [&str; 4] = [
        "deduplicate",
        "allowed_origins",
        "destination_allowlist",
        "processor_tls",
    ];
    // The unknown key is not logged: it is the caller's text, and could be anything.
    if body.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::InvalidBody(super::BodyKind::Json).because(
            "settings are deduplicate, allowed_origins, destination_allowlist and processor_tls",
        ));
    }
    let deduplicate = match body.get("deduplicate") {
        None => None,
        Some(Value::Bool(on)) => Some(*on),
        Some(_) => return Err(ApiError::invalid("deduplicate")),
    };
    let origins = text_list(&body, "allowed_origins", |o| {
        OriginPattern::parse(o).map(|p| p.to_string()).ok()
    })?;
    let destinations = text_list(&body, "destination_allowlist", |r| {
        AllowRule::parse(r).map(|r| r.to_string()).ok()
    })?;
    let tls = processor_tls(&body)?;

    let project = &caller.project;
    let store = state.store.as_ref();
    if let Some(on) = deduplicate {
        store.set_deduplicate(&project.id, on).await?;
    }
    if let Some(origins) = origins {
        store.set_allowed_origins(&project.id, &origins).await?;
    }
    if let Some(rules) = destinations {
        store.set_destination_rules(&project.id, &rules).await?;
    }
    for (host, settings) in tls {
        match settings {
            Some(settings) => {
                admin::set_processor_tls(store, &state.keyring, project, &host, settings)
                    .await
                    .map_err(|e| match e {
                        AdminError::Invalid(_) => ApiError::invalid("processor_tls")
                            .because("unusable certificate, key or CA"),
                        other => admin_error(other),
                    })?;
            }
            None => match store.remove_destination_tls(&project.id, &host).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            },
        }
    }
    let mut entry = caller.audit("project.update");
    entry
        .detail
        .set("fields", body.keys().cloned().collect::<Vec<_>>());
    // This instance sees the change at once (the record below failing or not); others within
    // the cache period.
    state.caches.callers.clear();
    state.caches.publishable_keys.clear();
    state.destinations.forget(&project.id);
    state.collect.forget_origins(&project.id);
    state.audit(entry).await?;
    let project = state.store.project(&caller.project.id).await?;
    Ok(Json(
        json!({"success": true, "data": settings_json(&state, &project).await?}),
    ))
}

/// `POST /internal/provision`: a sub-project with its publishable key and a first application
/// (tokenization and provisioning), keys shown once.
#[utoipa::path(
    post,
    path = "/internal/provision",
    tag = "projects",
    summary = "Provision a sub-project",
    operation_id = "provisionProject",
    description = "Creates a sub-project with its publishable key and a first application \
        (`tokenization` and `provisioning`); the keys are shown once.",
    security(("api_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Makes retries safe: the first call with it runs, a retry of the same request gets its answer (with `Idempotent-Replayed: true`); 1 to 255 printable ASCII characters, per project"),
    ),
    request_body = doc::ProvisionRequest,
    responses(
        (status = 201, description = "Provisioned", body = doc::Provisioned, headers(("Idempotent-Replayed" = bool, description = "`true` on an answer replayed for a repeated `Idempotency-Key`"))),
        doc::Idempotent,
        (status = 400, description = "`invalid_body`, `missing_field` (`name`), `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`, or a test project asks for a live one", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn provision(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require_provisioning()?;
    let request = (&uri, &headers);
    create_once(
        state,
        caller,
        "project.provision",
        request,
        body,
        |state, caller, body| async move { provision_project(&state, &caller, &body).await },
    )
    .await
}

async fn provision_project(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_object(body)?;
    let name = super::applications::application_name(&body)?;
    let mode = match body.get("mode") {
        None | Some(Value::Null) => caller.project.mode,
        Some(Value::String(m)) => Mode::parse(m).ok_or_else(|| ApiError::invalid("mode"))?,
        Some(_) => return Err(ApiError::invalid("mode")),
    };
    if caller.project.mode == Mode::Test && mode == Mode::Live {
        return Err(
            ApiError::PermissionDenied.because("a test project cannot provision a live one")
        );
    }
    let deduplicate = match body.get("deduplicate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(on)) => *on,
        Some(_) => return Err(ApiError::invalid("deduplicate")),
    };
    let new = NewProject {
        name: &name,
        mode,
        deduplicate,
        first_permissions: Permissions {
            tokenization: true,
            provisioning: true,
            ..Permissions::default()
        },
    };
    let created = admin::create_project(state.store.as_ref(), &state.keyring, new)
        .await
        .map_err(admin_error)?;
    let mut entry = caller.audit("project.provision");
    entry.detail.set("target", created.project_id.clone());
    state.audit(entry).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "success": true,
            "data": {
                "project_id": created.project_id,
                "name": name,
                "mode": mode.as_str(),
                "publishable_key": created.publishable_key,
                "application_id": created.application_id,
                "api_key": created.api_key.expose_secret(),
            },
        })),
    ))
}

fn own_project(caller: &Caller, id: Result<Path<String>, PathRejection>) -> Result<(), ApiError> {
    match id {
        Ok(Path(id)) if id == caller.project.id => Ok(()),
        _ => Err(ApiError::ProjectNotFound),
    }
}

async fn settings_json(state: &AppState, project: &Project) -> Result<Value, ApiError> {
    let store = state.store.as_ref();
    let tls: Vec<Value> = store
        .destination_tls(&project.id)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "host": t.host,
                "ca": t.ca_pem.is_some(),
                "client_certificate": t.client_cert_pem.is_some(),
            })
        })
        .collect();
    Ok(json!({
        "id": project.id,
        "name": project.name,
        "mode": project.mode.as_str(),
        "deduplicate": project.deduplicate,
        "allowed_origins": store.allowed_origins(&project.id).await?,
        "destination_allowlist": store.destination_rules(&project.id).await?,
        "processor_tls": tls,
    }))
}

/// A list of strings each of which `parse` normalizes; `None` when the field is absent.
fn text_list(
    body: &Map<String, Value>,
    field: &'static str,
    parse: impl Fn(&str) -> Option<String>,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(value) = body.get(field) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(field));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .and_then(&parse)
                .ok_or_else(|| ApiError::invalid(field))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `processor_tls`: `{"host": {"ca_pem", "client_cert_pem", "client_key_pem"} | null, …}`.
fn processor_tls(
    body: &Map<String, Value>,
) -> Result<Vec<(String, Option<ProcessorTls>)>, ApiError> {
    let invalid = || ApiError::invalid("processor_tls");
    let Some(value) = body.get("processor_tls") else {
        return Ok(Vec::new());
    };
    let Value::Object(hosts) = value else {
        return Err(invalid());
    };
    let mut out = Vec::new();
    for (host, settings) in hosts {
        let host = admin::tls_host(host).map_err(|_| invalid())?;
        let settings = match settings {
            Value::Null => None,
            Value::Object(s) => {
                let text = |name: &str| match s.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(t)) => Ok(Some(t.clone())),
                    Some(_) => Err(invalid()),
                };
                if s.keys()
                    .any(|k| !["ca_pem", "client_cert_pem", "client_key_pem"].contains(&k.as_str()))
                {
                    return Err(invalid());
                }
                Some(ProcessorTls {
                    ca_pem: text("ca_pem")?,
                    client_cert_pem: text("client_cert_pem")?,
                    client_key_pem: text("client_key_pem")?.map(zeroize::Zeroizing::new),
                })
            }
            _ => return Err(invalid()),
        };
        out.push((host, settings));
    }
    Ok(out)
}
