//! `GET /api/applications/key`: what the presented API key is.

use axum::Json;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;

pub async fn current_key(caller: Caller) -> Result<Json<Value>, ApiError> {
    let p = caller.app.permissions;
    Ok(Json(json!({
        "success": true,
        "message": "API key is valid",
        "data": {
            "project_id": caller.project.id,
            "application_id": caller.app.id,
            "name": caller.app.name,
            "mode": caller.project.mode.as_str(),
            "permissions": {
                "tokenization": {"allowed": p.tokenization},
                "provisioning": {"allowed": p.provisioning},
                "reveal": {"allowed": p.reveal},
            },
        },
    })))
}
