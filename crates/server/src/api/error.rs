//! The API's one error type, and the one place it becomes an HTTP response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cardvault_core::ValidationError;
use serde_json::json;

use crate::crypto::CryptoError;
use crate::cvc::CvcError;
use crate::destinations::LoadError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Which body parser refused the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Xml,
    Form,
}

/// Every way an API call can fail, each mapped to API.md's status, message and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid body")]
    InvalidBody(BodyKind),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("invalid proxy URL")]
    InvalidProxyUrl,
    #[error("invalid template")]
    InvalidTemplate,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("permission denied")]
    PermissionDenied,
    #[error("token not found")]
    TokenNotFound,
    #[error("CVC session not found")]
    CvcSessionNotFound,
    /// A wax key that is unknown, revoked, expired, used up, or bound to another checkout or
    /// project: told apart for no one.
    #[error("client session not found")]
    ClientSessionNotFound,
    #[error("application not found")]
    ApplicationNotFound,
    #[error("project not found")]
    ProjectNotFound,
    #[error("application name taken")]
    ApplicationNameTaken,
    /// A call with the same `Idempotency-Key` is still running.
    #[error("idempotency key in use")]
    IdempotencyKeyInUse,
    /// An `Idempotency-Key` already used with another request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// Revoking the application whose key made the request would lock the caller out.
    #[error("own key in use")]
    OwnKeyInUse,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("request target too long")]
    UriTooLong,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("upstream error: {cause}")]
    Upstream { cause: String, request_sent: bool },
    #[error("upstream timeout")]
    UpstreamTimeout { request_sent: bool },
    #[error("service unavailable")]
    Unavailable(#[source] BoxError),
    #[error("too many requests in flight")]
    Overloaded,
    /// The caller's budget for this kind of call is spent; it holds a call again after this
    /// many seconds (at least 1).
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    /// A 4xx with the reason spelled out for the integrator (extension field `detail`). The
    /// reason names a rule or a header, never a value from the request.
    #[error("{error}: {detail}")]
    Detailed {
        error: Box<ApiError>,
        detail: &'static str,
    },
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// The typed cause of a 5xx, kept (not flattened to text) so the log shows the whole chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ApiError {
    pub fn missing(field: &'static str) -> Self {
        Self::Validation(ValidationError::MissingField(field))
    }

    pub fn invalid(field: &'static str) -> Self {
        Self::Validation(ValidationError::InvalidField(field))
    }

    /// This error with the reason for the integrator attached (a 4xx's `detail`).
    pub fn because(self, detail: &'static str) -> Self {
        Self::Detailed {
            error: Box::new(self),
            detail,
        }
    }

    /// The stable `code` this error answers with (what the audit log records as the outcome).
    pub fn code(&self) -> &'static str {
        self.parts().2
    }

    fn parts(&self) -> (StatusCode, String, &'static str) {
        use ValidationError as V;
        let fixed = |status, message: &str, code| (status, message.to_owned(), code);
        match self {
            Self::Detailed { error, .. } => error.parts(),
            Self::InvalidBody(BodyKind::Json) => {
                fixed(StatusCode::BAD_REQUEST, "Invalid JSON", "invalid_body")
            }
            Self::InvalidBody(BodyKind::Xml) => {
                fixed(StatusCode::BAD_REQUEST, "Invalid XML", "invalid_body")
            }
            Self::InvalidBody(BodyKind::Form) => {
                fixed(StatusCode::BAD_REQUEST, "Invalid form body", "invalid_body")
            }
            Self::Validation(e @ V::MissingField(_)) => {
                (StatusCode::BAD_REQUEST, e.to_string(), "missing_field")
            }
            Self::Validation(e @ V::InvalidField(_)) => {
                (StatusCode::BAD_REQUEST, e.to_string(), "invalid_field")
            }
            Self::Validation(e @ V::InvalidCardNumber) => (
                StatusCode::BAD_REQUEST,
                e.to_string(),
                "invalid_card_number",
            ),
            Self::Validation(e @ V::CardExpired) => {
                (StatusCode::BAD_REQUEST, e.to_string(), "card_expired")
            }
            Self::InvalidProxyUrl => fixed(
                StatusCode::BAD_REQUEST,
                "Invalid proxy URL",
                "invalid_proxy_url",
            ),
            Self::InvalidTemplate => fixed(
                StatusCode::BAD_REQUEST,
                "Invalid value for request_data",
                "invalid_template",
            ),
            Self::InvalidApiKey => fixed(
                StatusCode::UNAUTHORIZED,
                "Invalid API key",
                "invalid_api_key",
            ),
            Self::PermissionDenied => fixed(
                StatusCode::FORBIDDEN,
                "This API key does not have permission for this operation",
                "permission_denied",
            ),
            Self::TokenNotFound => {
                fixed(StatusCode::NOT_FOUND, "Token not found", "token_not_found")
            }
            Self::CvcSessionNotFound => fixed(
                StatusCode::NOT_FOUND,
                "CVC session expired or not found",
                "cvc_session_not_found",
            ),
            Self::ClientSessionNotFound => fixed(
                StatusCode::NOT_FOUND,
                "Client session expired or not found",
                "client_session_not_found",
            ),
            Self::ApplicationNotFound => fixed(
                StatusCode::NOT_FOUND,
                "Application not found",
                "application_not_found",
            ),
            Self::ProjectNotFound => fixed(
                StatusCode::NOT_FOUND,
                "Project not found",
                "project_not_found",
            ),
            Self::ApplicationNameTaken => fixed(
                StatusCode::CONFLICT,
                "Application name already exists",
                "application_name_taken",
            ),
            Self::IdempotencyKeyInUse => fixed(
                StatusCode::CONFLICT,
                "Idempotency key in use",
                "idempotency_key_in_use",
            ),
            Self::IdempotencyKeyReused => fixed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency key reused with a different request",
                "idempotency_key_reused",
            ),
            Self::OwnKeyInUse => fixed(
                StatusCode::CONFLICT,
                "An application cannot revoke the key it is calling with",
                "own_key_in_use",
            ),
            Self::BodyTooLarge => fixed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
                "body_too_large",
            ),
            Self::RequestTimeout => fixed(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                "request_timeout",
            ),
            Self::UriTooLong => fixed(
                StatusCode::URI_TOO_LONG,
                "Request URI too long",
                "uri_too_long",
            ),
            Self::HeadersTooLarge => fixed(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request headers too large",
                "headers_too_large",
            ),
            Self::RouteNotFound => fixed(StatusCode::NOT_FOUND, "Not found", "not_found"),
            Self::MethodNotAllowed => fixed(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "method_not_allowed",
            ),
            Self::Upstream { .. } => fixed(
                StatusCode::BAD_GATEWAY,
                "Failed to proxy request",
                "upstream_error",
            ),
            Self::UpstreamTimeout { .. } => fixed(
                StatusCode::GATEWAY_TIMEOUT,
                "Request timeout",
                "upstream_timeout",
            ),
            Self::Overloaded => fixed(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "overloaded",
            ),
            Self::RateLimited { .. } => fixed(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "rate_limited",
            ),
            Self::Unavailable(_) => fixed(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "unavailable",
            ),
            Self::Internal(_) => fixed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "internal",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, code) = self.parts();
        // The cause of a 5xx is logged once, here; its body stays generic. Causes are built from
        // driver and network errors, never from request data.
        if status.is_server_error() {
            tracing::error!(code, cause = %crate::error_chain::chain(&self), "request failed");
        } else {
            tracing::debug!(code, reason = %self, "request refused");
        }
        let mut body = json!({"success": false, "message": message, "data": null, "code": code});
        if let Self::Detailed { detail, .. } = &self {
            body["detail"] = json!(detail);
        }
        // Extension: whether the processor may have seen the request, so a caller knows if a
        // retry could charge twice.
        if let Self::Upstream { request_sent, .. } | Self::UpstreamTimeout { request_sent } = &self
        {
            body["request_sent"] = json!(request_sent);
        }
        if let Self::RateLimited {
            retry_after_seconds,
        } = &self
        {
            body["retry_after_seconds"] = json!(retry_after_seconds);
        }
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Self::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited {
            retry_after_seconds,
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}

impl From<crate::limits::rate::Limited> for ApiError {
    fn from(limited: crate::limits::rate::Limited) -> Self {
        Self::RateLimited {
            retry_after_seconds: limited.retry_after_seconds(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(e) => e.into(),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<CvcError> for ApiError {
    fn from(e: CvcError) -> Self {
        match e {
            e @ CvcError::Unavailable(_) => Self::Unavailable(Box::new(e)),
            CvcError::Crypto(e) => e.into(),
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        let request_sent = e.request_sent();
        match e {
            UpstreamError::NonPublicAddress => {
                Self::InvalidProxyUrl.because("the host resolves to a non-public address")
            }
            UpstreamError::Timeout { .. } => Self::UpstreamTimeout { request_sent },
            UpstreamError::Unresolvable
            | UpstreamError::Unreachable(_)
            | UpstreamError::Failed(_)
            | UpstreamError::TooLarge(_)
            | UpstreamError::Setup(_)
            | UpstreamError::Unbuildable(_) => Self::Upstream {
                cause: e.to_string(),
                request_sent,
            },
        }
    }
}
