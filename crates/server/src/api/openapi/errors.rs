//! The error envelope (`ApiError`'s body, see `api/error.rs`) and the error answers that many
//! routes share, for the OpenAPI document.
#![allow(
    dead_code,
    reason = "these types exist for their schemas; `ApiError::into_response` writes the body"
)]

use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use super::schemas::null;

/// Every error answer: `{"success": false, "message": "…", "data": null, "code": "…"}`, plus
/// the extension fields where they apply. `message` is exact for each `code` (see the README's
/// error table); `code` is stable.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    #[schema(example = "Invalid API key")]
    pub message: String,
    #[schema(schema_with = null)]
    pub data: (),
    pub code: ErrorCode,
    /// Extension, on some 4xx: why, naming a rule or a header, never a value from the request.
    #[schema(nullable = false, example = "the X-Pub-Key header is missing")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension, on 502 and 504: whether the processor may have received the request
    /// (`false`: retrying cannot charge twice).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_sent: Option<bool>,
    /// Extension, on 429: seconds to wait before trying again (also in `Retry-After`).
    #[schema(nullable = false, minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// The machine-readable `code` of an error answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidBody,
    MissingField,
    InvalidField,
    InvalidCardNumber,
    CardExpired,
    InvalidProxyUrl,
    InvalidTemplate,
    InvalidApiKey,
    PermissionDenied,
    TokenNotFound,
    CvcSessionNotFound,
    ClientSessionNotFound,
    ApplicationNotFound,
    ProjectNotFound,
    ApplicationNameTaken,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    OwnKeyInUse,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    BodyTooLarge,
    UriTooLong,
    HeadersTooLarge,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    Unavailable,
    Overloaded,
    Internal,
}

/// What any route may answer, whatever it does: limits on the request line and headers, load
/// shedding, a backend down, a bug.
#[derive(IntoResponses)]
pub enum Common {
    /// `uri_too_long`: the request target is over 16 KiB.
    #[response(status = 414)]
    UriTooLong(ErrorBody),
    /// `headers_too_large`: over 64 headers, or 64 KiB of them.
    #[response(status = 431)]
    HeadersTooLarge(ErrorBody),
    /// `internal`: a bug, or a stored ciphertext that failed authentication.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `overloaded`: more requests in flight than the vault serves at once (`Retry-After: 1`);
    /// `unavailable`: a backend the call needs (database, CVC session store, audit log) is down.
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait (with `overloaded`)"))
    )]
    Unavailable(ErrorBody),
}

/// What a route that reads a request body may answer about the body itself.
#[derive(IntoResponses)]
pub enum BodyLimits {
    /// `request_timeout`: the body was not received in time.
    #[response(status = 408)]
    RequestTimeout(ErrorBody),
    /// `body_too_large`: the body is over the configured limit (1 MiB by default).
    #[response(status = 413)]
    BodyTooLarge(ErrorBody),
}

/// What a route that takes an `Idempotency-Key` answers about the key.
#[derive(IntoResponses)]
pub enum Idempotent {
    /// `idempotency_key_in_use`: a call with the same `Idempotency-Key` is still running.
    #[response(status = 409)]
    InUse(ErrorBody),
    /// `idempotency_key_reused`: the `Idempotency-Key` was used with a different request.
    #[response(status = 422)]
    Reused(ErrorBody),
}

/// What a route with a rate limit answers over its budget.
#[derive(IntoResponses)]
pub enum RateLimited {
    /// `rate_limited` (`Rate limit exceeded`), with `retry_after_seconds`.
    #[response(
        status = 429,
        headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))
    )]
    RateLimited(ErrorBody),
}
