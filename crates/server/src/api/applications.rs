//! Applications over HTTP, as Ozura documents them: `GET /api/applications/key` (what the
//! presented key is), and, for a key with `provisioning`, creating, listing, reading, changing,
//! deleting applications of its own project and rolling their keys (cardvault has no user
//! accounts: the `provisioning` permission stands in for Ozura's dashboard login).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::body::{RawBody, json_object, required_text};
use super::idempotency::create_once;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::admin::{self, AdminError};
use crate::clock::rfc3339;
use crate::store::{ApplicationRecord, Permissions, StoreError};

/// Longest overlap a rolled key may keep its predecessor working: a week.
const MAX_ROLL_OVERLAP_SECONDS: u64 = 7 * 24 * 3600;

#[utoipa::path(
    get,
    path = "/api/applications/key",
    tag = "applications",
    summary = "Describe the calling key",
    operation_id = "getApiKeyInfo",
    description = "What the presented key is: its application, project and permissions.",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`API key is valid`", body = doc::KeyInfoAnswer),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn current_key(caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "success": true,
        "message": "API key is valid",
        "data": {
            "project_id": caller.project.id,
            "application_id": caller.app.id,
            "name": caller.app.name,
            "mode": caller.project.mode.as_str(),
            "permissions": permissions_json(caller.app.permissions),
        },
    })))
}

/// `POST /api/applications`
#[utoipa::path(
    post,
    path = "/api/applications",
    tag = "applications",
    summary = "Create an application",
    operation_id = "createApplication",
    description = "Creates an application of the caller's project and its API key (shown once).",
    security(("api_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Makes retries safe: the first call with it runs, a retry of the same request gets its answer (with `Idempotent-Replayed: true`); 1 to 255 printable ASCII characters, per project"),
    ),
    request_body = doc::ApplicationCreate,
    responses(
        (status = 201, description = "Created", body = doc::ApplicationCreated, headers(("Idempotent-Replayed" = bool, description = "`true` on an answer replayed for a repeated `Idempotency-Key`"))),
        (status = 400, description = "`invalid_body`, `missing_field`, `invalid_field` (`name`: 3 to 50 characters; `permissions`)", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 409, description = "`application_name_taken`; `idempotency_key_in_use`: a call with the same `Idempotency-Key` is still running", body = doc::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the `Idempotency-Key` was used with a different request", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn create(
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
        "application.create",
        request,
        body,
        |state, caller, body| async move { create_application(&state, &caller, &body).await },
    )
    .await
}

async fn create_application(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_object(body)?;
    let name = application_name(&body)?;
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => Permissions {
            tokenization: true,
            ..Permissions::default()
        },
        Some(value) => permissions_from_json(value)?,
    };
    let created = admin::create_application(
        state.store.as_ref(),
        &state.keyring,
        &caller.project,
        &name,
        permissions,
    )
    .await
    .map_err(admin_error)?;
    let mut entry = caller.audit("application.create");
    entry.detail.set("target", created.application_id.clone());
    state.audit(entry).await?;
    let record = state
        .store
        .application(&caller.project.id, &created.application_id)
        .await?;
    let mut data = application_json(&record);
    data["api_key"] = json!(created.api_key.expose_secret());
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": data})),
    ))
}

/// `GET /api/applications`
#[utoipa::path(
    get,
    path = "/api/applications",
    tag = "applications",
    summary = "List applications",
    operation_id = "listApplications",
    description = "The live applications of the caller's project (never their keys).",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The applications", body = doc::ApplicationList),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_provisioning()?;
    let apps = state.store.applications(&caller.project.id).await?;
    let data: Vec<Value> = apps.iter().map(application_json).collect();
    Ok(Json(json!({"success": true, "data": data})))
}

/// `GET /api/applications/{id}`
#[utoipa::path(
    get,
    path = "/api/applications/{id}",
    tag = "applications",
    summary = "Read an application",
    operation_id = "getApplication",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The application (`app_…`)")),
    responses(
        (status = 200, description = "The application", body = doc::ApplicationAnswer),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`application_not_found`: unknown, revoked, or another project's", body = doc::ErrorBody),
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
    let record = find(&state, &caller, id).await?;
    Ok(Json(
        json!({"success": true, "data": application_json(&record)}),
    ))
}

/// `PUT /api/applications/{id}`: a new name, new permissions, or both.
#[utoipa::path(
    put,
    path = "/api/applications/{id}",
    tag = "applications",
    summary = "Change an application",
    operation_id = "updateApplication",
    description = "Renames an application, sets its permissions, or both.",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The application (`app_…`)")),
    request_body = doc::ApplicationUpdate,
    responses(
        (status = 200, description = "Changed", body = doc::ApplicationAnswer),
        (status = 400, description = "`invalid_body`, `missing_field` (neither `name` nor `permissions`), `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`application_not_found`: unknown, revoked, or another project's", body = doc::ErrorBody),
        (status = 409, description = "`application_name_taken`", body = doc::ErrorBody),
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
    let record = find(&state, &caller, id).await?;
    let body = json_object(&body)?;
    if !body.contains_key("name") && !body.contains_key("permissions") {
        return Err(ApiError::missing("name"));
    }
    let name = match body.get("name") {
        None => record.app.name.clone(),
        Some(_) => application_name(&body)?,
    };
    let permissions = match body.get("permissions") {
        None => record.app.permissions,
        Some(value) => permissions_from_json(value)?,
    };
    admin::update_application(
        state.store.as_ref(),
        &caller.project,
        &record.app.id,
        &name,
        permissions,
    )
    .await
    .map_err(admin_error)?;
    let mut entry = caller.audit("application.update");
    entry.detail.set("target", record.app.id.clone());
    entry.detail.set("permissions", permissions.to_list());
    // A narrowed permission must not outlive this instance's key cache, even when the
    // record below cannot be written.
    state.caches.callers.clear();
    state.audit(entry).await?;
    let record = state
        .store
        .application(&caller.project.id, &record.app.id)
        .await?;
    Ok(Json(
        json!({"success": true, "data": application_json(&record)}),
    ))
}

/// `DELETE /api/applications/{id}`: the application and every key of it stop working.
#[utoipa::path(
    delete,
    path = "/api/applications/{id}",
    tag = "applications",
    summary = "Revoke an application",
    operation_id = "deleteApplication",
    description = "Revokes an application: every key of it stops working.",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The application (`app_…`)")),
    responses(
        (status = 200, description = "`Application deleted`", body = doc::Done),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`application_not_found`: unknown, revoked, or another project's", body = doc::ErrorBody),
        (status = 409, description = "`own_key_in_use`: the application is the caller's own", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_provisioning()?;
    let record = find(&state, &caller, id).await?;
    if record.app.id == caller.app.id {
        return Err(ApiError::OwnKeyInUse);
    }
    match state
        .store
        .revoke_application(&caller.project.id, &record.app.id)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::ApplicationNotFound),
        Err(e) => return Err(e.into()),
    }
    let mut entry = caller.audit("application.delete");
    entry.detail.set("target", record.app.id.clone());
    // Before the record: the change is made, whether or not it can be audited.
    state.caches.callers.clear();
    state.audit(entry).await?;
    Ok(Json(
        json!({"success": true, "message": "Application deleted"}),
    ))
}

/// `POST /api/applications/{id}/roll-key`: a new key; the old ones keep working for
/// `expire_old_in_seconds` (default 0: they stop now).
#[utoipa::path(
    post,
    path = "/api/applications/{id}/roll-key",
    tag = "applications",
    summary = "Roll an application's key",
    operation_id = "rollApplicationKey",
    description = "Gives an application a new API key (shown once); its old keys keep working \
        for `expire_old_in_seconds` (extension).",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The application (`app_…`)")),
    request_body(content = Option<doc::RollKey>, description = "May be empty"),
    responses(
        (status = 200, description = "The new key", body = doc::KeyRolled),
        (status = 400, description = "`invalid_body`, `invalid_field` (`expire_old_in_seconds`: 0 to 604800)", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `provisioning`", body = doc::ErrorBody),
        (status = 404, description = "`application_not_found`: unknown, revoked, or another project's", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn roll_key(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_provisioning()?;
    let record = find(&state, &caller, id).await?;
    let overlap = if body.iter().all(u8::is_ascii_whitespace) {
        0
    } else {
        match json_object(&body)?.get("expire_old_in_seconds") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|s| *s <= MAX_ROLL_OVERLAP_SECONDS)
                .ok_or_else(|| {
                    ApiError::invalid("expire_old_in_seconds").because("0 to 604800 seconds")
                })?,
            Some(_) => {
                return Err(
                    ApiError::invalid("expire_old_in_seconds").because("0 to 604800 seconds")
                );
            }
        }
    };
    let (api_key, old_expire_at) = admin::roll_key(
        state.store.as_ref(),
        &state.keyring,
        &caller.project,
        &record.app.id,
        std::time::Duration::from_secs(overlap),
    )
    .await
    .map_err(admin_error)?;
    let mut entry = caller.audit("application.roll_key");
    entry.detail.set("target", record.app.id.clone());
    entry
        .detail
        .set("old_keys_expire_at", rfc3339(old_expire_at));
    // Before the record: the change is made, whether or not it can be audited.
    state.caches.callers.clear();
    state.audit(entry).await?;
    let mut data = application_json(&record);
    data["api_key"] = json!(api_key.expose_secret());
    data["old_keys_expire_at"] = json!(rfc3339(old_expire_at));
    Ok(Json(json!({"success": true, "data": data})))
}

/// The live application `id` of the caller's project; anything else is `Application not found`.
async fn find(
    state: &AppState,
    caller: &Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<ApplicationRecord, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::ApplicationNotFound);
    };
    match state.store.application(&caller.project.id, &id).await {
        Ok(record) => Ok(record),
        Err(StoreError::NotFound) => Err(ApiError::ApplicationNotFound),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn application_name(body: &Map<String, Value>) -> Result<String, ApiError> {
    let name = required_text(body, "name")?;
    admin::check_application_name(&name)
        .map_err(|_| ApiError::invalid("name").because("3 to 50 characters"))?;
    Ok(name)
}

pub fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::Store(StoreError::NotFound) => ApiError::ApplicationNotFound,
        AdminError::Store(e) => e.into(),
        AdminError::Crypto(e) => e.into(),
        AdminError::InvalidName => ApiError::invalid("name").because("3 to 50 characters"),
        AdminError::NameTaken => ApiError::ApplicationNameTaken,
        AdminError::Invalid(_) => ApiError::invalid("processor_tls"),
    }
}

pub fn application_json(record: &ApplicationRecord) -> Value {
    json!({
        "id": record.app.id,
        "name": record.app.name,
        "permissions": permissions_json(record.app.permissions),
        "created_at": rfc3339(record.created_at),
    })
}

/// Permissions in Ozura's object form: `{"tokenization": {"allowed": true}, …}`.
pub fn permissions_json(p: Permissions) -> Value {
    json!({
        "tokenization": {"allowed": p.tokenization},
        "provisioning": {"allowed": p.provisioning},
        "reveal": {"allowed": p.reveal},
        "audit": {"allowed": p.audit},
    })
}

/// Reads the object form; a permission that does not exist, or anything but
/// `{"allowed": true|false}`, is `Invalid value for permissions`. Absent ones are not granted.
pub fn permissions_from_json(value: &Value) -> Result<Permissions, ApiError> {
    let invalid = || ApiError::invalid("permissions");
    let Value::Object(entries) = value else {
        return Err(invalid());
    };
    let mut p = Permissions::default();
    for (name, setting) in entries {
        let allowed = match setting {
            Value::Object(s) if s.len() == 1 => s.get("allowed").and_then(Value::as_bool),
            _ => None,
        }
        .ok_or_else(invalid)?;
        let slot = match name.as_str() {
            "tokenization" => &mut p.tokenization,
            "provisioning" => &mut p.provisioning,
            "reveal" => &mut p.reveal,
            "audit" => &mut p.audit,
            _ => {
                return Err(invalid()
                    .because("permissions are tokenization, provisioning, reveal and audit"));
            }
        };
        *slot = allowed;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip_in_the_object_form() {
        let p = Permissions {
            tokenization: true,
            reveal: true,
            ..Permissions::default()
        };
        assert_eq!(permissions_from_json(&permissions_json(p)).unwrap(), p);
        let partial = json!({"provisioning": {"allowed": true}});
        assert!(permissions_from_json(&partial).unwrap().provisioning);
    }

    #[test]
    fn anything_else_is_an_invalid_value() {
        for bad in [
            json!({"admin": {"allowed": true}}),
            json!({"tokenization": true}),
            json!({"tokenization": {"allowed": "yes"}}),
            json!({"tokenization": {"allowed": true, "x": 1}}),
            json!(["tokenization"]),
        ] {
            assert!(permissions_from_json(&bad).is_err(), "{bad}");
        }
    }
}
