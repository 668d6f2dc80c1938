//! A proxy call as the caller described it, parsed and checked without any I/O. The two ways
//! of describing it (JSON mode and raw mode) are parsed by their own modules into this one type.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use cardvault_core::template::{
    Encoding, FormTemplate, JsonTemplate, Placeholder, Substitutions, Template,
};
use url::Url;
use uuid::Uuid;

use crate::api::{ApiError, BodyKind};
use crate::destinations::{Refusal, UrlChecks};

/// The body to send, with its placeholders found.
pub enum BodyTemplate {
    Json(JsonTemplate),
    Form(FormTemplate),
    Text {
        template: Template,
        encoding: Encoding,
    },
}

impl BodyTemplate {
    /// A text body; an XML one must be well-formed before anything is substituted.
    pub fn text(template: Template, encoding: Encoding, source: &str) -> Result<Self, ApiError> {
        if encoding == Encoding::Xml && !cardvault_core::xml::is_well_formed(source) {
            return Err(ApiError::InvalidBody(BodyKind::Xml));
        }
        Ok(Self::Text { template, encoding })
    }

    /// See [`Template::short_secrets_stand_alone`].
    pub fn short_secrets_stand_alone(&self) -> bool {
        match self {
            Self::Json(t) => t.short_secrets_stand_alone(),
            Self::Form(t) => t.short_secrets_stand_alone(),
            Self::Text { template, .. } => template.short_secrets_stand_alone(),
        }
    }

    /// Without a box: this runs on every call.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        let (json, form, text) = match self {
            Self::Json(t) => (Some(t.placeholders()), None, None),
            Self::Form(t) => (None, Some(t.placeholders()), None),
            Self::Text { template, .. } => (None, None, Some(template.placeholders())),
        };
        json.into_iter()
            .flatten()
            .chain(form.into_iter().flatten())
            .chain(text.into_iter().flatten())
    }

    /// The outgoing body. Escaping keeps an XML document well-formed; it is checked again all
    /// the same, since a processor receiving a broken document may act on part of it.
    pub fn render(&self, values: &Substitutions) -> Result<Vec<u8>, ApiError> {
        Ok(match self {
            Self::Json(t) => t
                .render_bytes(values)
                .map_err(|e| ApiError::Internal(Box::new(e)))?,
            Self::Form(t) => t.render(values).into_bytes(),
            Self::Text { template, encoding } => {
                let text = template.render(values, *encoding);
                if *encoding == Encoding::Xml && !cardvault_core::xml::is_well_formed(&text) {
                    return Err(ApiError::InvalidBody(BodyKind::Xml));
                }
                text.into_bytes()
            }
        })
    }
}

/// The CVC session a call names, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvcSessionRef {
    Id(Uuid),
    /// Not even a session id: no such session exists (404 when it is needed).
    Unknown,
}

pub struct ProxyRequest {
    pub token: String,
    /// The session to take, present exactly when the template uses the CVC.
    pub cvc_session: Option<CvcSessionRef>,
    pub url: Url,
    pub method: Method,
    pub headers: HeaderMap,
    pub body: BodyTemplate,
    /// Everything but the sending: the call answers with the request it would have sent.
    pub dry_run: bool,
}

impl ProxyRequest {
    /// The checks both modes end with: short secrets must stand alone, and a CVC placeholder
    /// needs a session id (one given for a template without the CVC is not used).
    ///
    /// # Errors
    /// `400 invalid_template`, or `400 Missing required field: cvc_session_id`.
    pub fn new(
        token: String,
        cvc_session_id: Option<String>,
        url: Url,
        method: Method,
        headers: HeaderMap,
        body: BodyTemplate,
    ) -> Result<Self, ApiError> {
        // A CVC or account number glued to other characters could be echoed back in a form
        // the response scrubber cannot tell from ordinary digits.
        if !body.short_secrets_stand_alone() {
            return Err(ApiError::InvalidTemplate
                .because("${cvv}, ${cvc} and ${accountNumber} must each be a whole value"));
        }
        let cvc_session = if body.placeholders().any(|p| p == Placeholder::Cvc) {
            let id = cvc_session_id.ok_or(ApiError::missing("cvc_session_id"))?;
            Some(Uuid::parse_str(id.trim()).map_or(CvcSessionRef::Unknown, CvcSessionRef::Id))
        } else {
            None
        };
        Ok(Self {
            token,
            cvc_session,
            url,
            method,
            headers,
            body,
            dry_run: false,
        })
    }

    /// This call as a dry run (`"dry_run": true`, `X-Dry-Run: true`) or a real one.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// A dry-run flag's text (`X-Dry-Run`): `true` or `false`, in any case.
///
/// # Errors
/// `400 Invalid value for dry_run`.
pub fn dry_run_flag(text: &str) -> Result<bool, ApiError> {
    match text.trim() {
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ApiError::invalid("dry_run")),
    }
}

/// Headers never forwarded: they describe this hop rather than the processor request, carry the
/// vault's own credentials and control values, or could smuggle a second request.
/// `accept-encoding` is dropped so the upstream client negotiates (and undoes) compression
/// itself: a compressed answer could not be scrubbed of echoed card data.
const NEVER_FORWARDED: [&str; 22] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "cookie",
    "forwarded",
    "accept-encoding",
    "x-api-key",
    "x-pub-key",
    "x-token",
    "x-proxy-url",
    "x-cvc-session-id",
    "x-proxy-method",
    "x-dry-run",
];

/// Whether a header the caller supplied may go to the processor.
pub fn forwardable(name: &HeaderName, connection: &HeaderMap) -> bool {
    let name = name.as_str();
    if NEVER_FORWARDED.contains(&name) || name.starts_with("x-forwarded-") {
        return false;
    }
    // Headers listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    !connection
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name))
}

/// The `detail` of a template naming a `${…}` that is no placeholder.
pub const UNKNOWN_PLACEHOLDER: &str = "the template names an unknown placeholder";

/// Card data must never land in a URL or a header: any placeholder there is refused.
pub fn refuse_template(text: &str) -> Result<(), ApiError> {
    match Template::parse_if_templated(text) {
        Ok(None) => Ok(()),
        _ => Err(ApiError::InvalidTemplate
            .because("placeholders are not allowed in the URL or in headers")),
    }
}

pub fn refuse_template_in_header(value: &HeaderValue) -> Result<(), ApiError> {
    refuse_template(&String::from_utf8_lossy(value.as_bytes()))
}

/// The destination, checked against the rules (no I/O). The reason for a refusal is logged at
/// debug level; the caller gets `Invalid proxy URL`.
///
/// # Errors
/// `400 Invalid proxy URL` (or `invalid_template` for a placeholder in it).
pub fn destination(raw: &str, urls: &UrlChecks) -> Result<Url, ApiError> {
    refuse_template(raw)?;
    urls.check(raw.trim())
        .map_err(|e| ApiError::InvalidProxyUrl.because(Refusal::Url(e).reason()))
}

pub fn method(raw: Option<&str>) -> Result<Method, ApiError> {
    let Some(raw) = raw else {
        return Ok(Method::POST);
    };
    match raw.trim().to_ascii_uppercase().as_str() {
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        "PATCH" => Ok(Method::PATCH),
        "GET" => Ok(Method::GET),
        "DELETE" => Ok(Method::DELETE),
        _ => Err(ApiError::invalid("http_method")),
    }
}
