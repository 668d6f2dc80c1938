//! `GET /audit-logs`: the project's audit records (the `audit` permission), newest last, with
//! filters (`action`, `token`, `since`, `until`) and a cursor (`cursor`, `limit`).

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::auth::Caller;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::store::AuditFilter;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[utoipa::path(
    get,
    path = "/audit-logs",
    tag = "audit",
    summary = "List audit records",
    operation_id = "listAuditLogs",
    description = "The project's audit records, oldest first, a page at a time (extension; \
        `audit` permission). Never card data, keys or full URLs.",
    security(("api_key" = [])),
    params(
        ("action" = Option<String>, Query, nullable = false, description = "Only this action (e.g. `proxy`, `tokenize`)"),
        ("token" = Option<String>, Query, nullable = false, description = "Only records about this token"),
        ("since" = Option<String>, Query, nullable = false, description = "From this time: Unix seconds or RFC 3339"),
        ("until" = Option<String>, Query, nullable = false, description = "Up to this time: Unix seconds or RFC 3339"),
        ("cursor" = Option<String>, Query, nullable = false, description = "The `next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "Records per page (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of records", body = doc::AuditPage),
        (status = 400, description = "`invalid_field`: a malformed filter, or an unknown one", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `audit`", body = doc::ErrorBody),
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_audit()?;
    let mut filter = AuditFilter {
        project_id: Some(caller.project.id.clone()),
        limit: DEFAULT_LIMIT,
        ..AuditFilter::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "action" => filter.action = Some(value),
            "token" => filter.token = Some(value),
            "since" => filter.since_ms = Some(time(&value).ok_or(ApiError::invalid("since"))?),
            "until" => filter.until_ms = Some(time(&value).ok_or(ApiError::invalid("until"))?),
            "cursor" => {
                filter.after_id = value
                    .parse()
                    .ok()
                    .filter(|c| *c >= 0)
                    .ok_or(ApiError::invalid("cursor"))?;
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or(ApiError::invalid("limit").because("1 to 1000"))?;
            }
            _ => {
                return Err(ApiError::invalid("query")
                    .because("the filters are action, token, since, until, cursor and limit"));
            }
        }
    }
    let rows = state.store.audit_records(&filter).await?;
    let next_cursor = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "at": crate::clock::rfc3339(r.at_ms / 1000),
                "request_id": r.request_id,
                "application_id": r.application_id,
                "action": r.action,
                "outcome": r.outcome,
                "token": if r.token.is_empty() { Value::Null } else { json!(r.token) },
                "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
                "chain": r.chain,
                "seq": r.seq,
                "hash": hex::encode(&r.hash),
            })
        })
        .collect();
    Ok(Json(
        json!({"success": true, "data": data, "next_cursor": next_cursor}),
    ))
}

/// Unix seconds or an RFC 3339 UTC time, as milliseconds.
fn time(text: &str) -> Option<i64> {
    let seconds = match text.parse::<i64>() {
        Ok(s) => s,
        Err(_) => crate::clock::parse_rfc3339(text)?,
    };
    seconds.checked_mul(1000)
}
