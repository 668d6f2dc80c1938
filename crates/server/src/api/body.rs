//! Reading a request body within the size limit, with refusals in the API's envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::{ApiError, AppState, BodyKind};

/// The raw request body: at most the configured size (413 beyond it), read within the
/// configured time (408 after it), so a client dribbling its body cannot hold a worker.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let read = Bytes::from_request(req, state);
        match tokio::time::timeout(state.policy.body_read_timeout, read).await {
            Err(_) => Err(ApiError::RequestTimeout),
            Ok(Ok(bytes)) => Ok(Self(bytes)),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge)
            }
            Ok(Err(_)) => Err(ApiError::InvalidBody(BodyKind::Json)),
        }
    }
}

/// Parses a JSON object; anything else is `Invalid JSON`.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::InvalidBody(BodyKind::Json)),
    }
}

/// A text field that may be absent (or null). Integers are accepted as their decimal text,
/// because some clients send `"expirationMonth": 12`.
pub fn optional_text(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(ApiError::invalid(field)),
    }
}

pub fn required_text(obj: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    optional_text(obj, field)?.ok_or(ApiError::missing(field))
}
