//! `POST /tokenize` and `POST /test-tokens`: validate, seal, store, answer with masks only.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cardvault_core::bank::{AccountNumber, RoutingNumber};
use cardvault_core::card::{Cvc, Expiry, Pan};
use cardvault_core::date::YearMonth;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::body::{
    RawBody, TargetHeadersBody, json_object, optional_text, required_text, required_text_or_integer,
};
use super::idempotency::Once;
use super::openapi as doc;
use super::{ApiError, AppState};
use crate::clock::rfc3339;
use crate::cvc::TEST_SESSION_TTL;
use crate::store::{Mode, Project, StoreError, TokenKind, TokenRecord, now_unix};
use crate::tokens::expiry::{self, ExpiryError};
use crate::tokens::{
    AllowedDestinations, Holder, InvalidAllowedDestinations, TokenData, refresh_held_token,
};
use zeroize::Zeroizing;

/// Holder names are free text, but bounded and printable.
const MAX_NAME_CHARS: usize = 128;

/// `POST /tokenize`, by a backend (`X-API-Key` and `X-Pub-Key`) or by the vault's own
/// tokenizer frame in a shopper's browser (`X-Pub-Key` and a wax key, no secret key).
#[utoipa::path(
    post,
    path = "/tokenize",
    tag = "tokens",
    summary = "Tokenize a card or a bank account",
    operation_id = "tokenize",
    description = "Stores a card or a bank account and answers with its token and masks only. \
        A backend sends `X-API-Key` (with `tokenization`) and `X-Pub-Key` of the same project; \
        the vault's tokenizer frame sends `X-Pub-Key`, `X-Wax-Key`, `X-Tokenization-Session-Id` \
        and `X-Collect-Origin`.",
    security(("api_key" = [], "pub_key" = []), ("pub_key" = [], "wax_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "Makes retries safe: the first call with it runs, a retry of the same request gets its answer (with `Idempotent-Replayed: true`); 1 to 255 printable ASCII characters, per project"),
        ("X-Tokenization-Session-Id" = Option<String>, Header, nullable = false, description = "Browser calls: the checkout the wax key was minted for"),
        ("X-Collect-Origin" = Option<String>, Header, nullable = false, description = "Browser calls: the origin of the page embedding the card fields"),
    ),
    request_body = doc::TokenizeRequest,
    responses(
        (status = 201, description = "Tokenized", body = doc::Tokenized, headers(("Idempotent-Replayed" = bool, description = "`true` on an answer replayed for a repeated `Idempotency-Key`"))),
        doc::Idempotent,
        (status = 400, description = "`invalid_body`, `missing_field`, `invalid_field`, `invalid_card_number`, `card_expired`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`: a key missing, unknown, revoked, or of another project", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`, or the page's origin is not allowed", body = doc::ErrorBody),
        (status = 404, description = "`client_session_not_found` (browser calls): the wax key is unknown, expired, revoked, used up or another checkout's", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn tokenize(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<super::request_context::RequestId>,
    TargetHeadersBody { uri, headers, body }: TargetHeadersBody,
) -> Result<Response, ApiError> {
    let mut entry = crate::audit::Entry::new("tokenize");
    entry.request_id = request_id.0.to_string();
    let (project, browser) =
        if headers.contains_key("x-wax-key") && !headers.contains_key("x-api-key") {
            let (project, grant) = super::collect::authorize_browser(&state, &headers).await?;
            entry.detail.set("by", "browser");
            (std::sync::Arc::new(project), Some(grant))
        } else {
            let caller = Caller::authenticate(&state, &headers).await?;
            caller
                .within_budget(&state, crate::limits::rate::Budget::Tokenize)
                .await?;
            caller.require_tokenization()?;
            caller.require_pub_key(&state, &headers).await?;
            entry.application_id.clone_from(&caller.app.id);
            (caller.project, None)
        };
    entry.project_id.clone_from(&project.id);
    let once = Once::new(
        &state,
        &project.id,
        &Method::POST,
        &uri,
        &headers,
        &body,
        || entry.clone(),
    )?;
    let call_state = state.clone();
    let call = async move {
        let result = tokenize_for(&call_state, &project, browser, &body).await;
        entry.outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        if let Ok((_, Json(answer))) = &result {
            entry.token = answer["token"].as_str().unwrap_or("").to_owned();
        }
        call_state.audit(entry).await?;
        result.map(IntoResponse::into_response)
    };
    once.run(&state, call).await
}

async fn tokenize_for(
    state: &AppState,
    project: &Project,
    browser: Option<crate::collect::Grant>,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_object(body)?;
    let kind = required_text(&body, "type")?;
    let data = match body.get("data") {
        None | Some(Value::Null) => return Err(ApiError::missing("data")),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(ApiError::invalid("data")),
    };
    let expires_at = token_expiry(state, &body)?;
    let allowed = allowed_destinations(&body)?;
    // A browser's call is counted once the request is known to be well formed, and before
    // anything is stored: a used-up wax key stores nothing.
    let take = |grant: Option<crate::collect::Grant>| async {
        match grant {
            Some(grant) => state
                .collect
                .take(grant)
                .await
                .map_err(super::collect::refusal),
            None => Ok(()),
        }
    };
    let response = match kind.as_str() {
        "card" => {
            let card = CardInput::parse(data, "cvv", false)?;
            take(browser).await?;
            store_card(state, project, card, expires_at, allowed.as_ref(), None).await?
        }
        "bank" => {
            let bank = bank_data(data)?;
            take(browser).await?;
            store_bank(state, project, bank, expires_at, allowed.as_ref()).await?
        }
        _ => return Err(ApiError::invalid("type")),
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// `POST /test-tokens`: a test card with a CVC session that lives a year and is not used up.
#[utoipa::path(
    post,
    path = "/test-tokens",
    tag = "tokens",
    summary = "Tokenize a test card",
    operation_id = "createTestToken",
    description = "Tokenizes a test card (projects in `test` mode only). Its CVC session lives a \
        year and is not consumed by use. `X-Pub-Key`, when sent, must be the project's.",
    security(("api_key" = []), ("api_key" = [], "pub_key" = [])),
    request_body = doc::TestTokenRequest,
    responses(
        (status = 201, description = "Tokenized", body = doc::TestTokenized),
        (status = 400, description = "`invalid_body`, `missing_field`, `invalid_field`, `invalid_card_number`, `card_expired`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `tokenization`, or the project is in `live` mode", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn test_token(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_tokenization()?;
    if headers.contains_key("x-pub-key") {
        caller.require_pub_key(&state, &headers).await?;
    }
    if caller.project.mode != Mode::Test {
        return Err(ApiError::PermissionDenied);
    }
    let body = json_object(&body)?;
    let card = CardInput::parse(&body, "cvc", true)?;
    let expires_at = token_expiry(&state, &body)?;
    let allowed = allowed_destinations(&body)?;
    let mut response = store_card(
        &state,
        &caller.project,
        card,
        expires_at,
        allowed.as_ref(),
        Some(TEST_SESSION_TTL),
    )
    .await?;
    response["test_mode"] = json!(true);
    response["expires_in"] = json!("1 year (test session)");
    let mut entry = caller.audit("tokenize");
    entry.token = response["token"].as_str().unwrap_or("").to_owned();
    entry.detail.set("by", "test-tokens");
    state.audit(entry).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// The token's expiry from the body's top-level `expires_at` or `ttl_seconds`, bounded by the
/// vault's retention period (see [`expiry::requested_expiry`]).
fn token_expiry(state: &AppState, body: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    expiry::requested_expiry(body, now_unix(), state.policy.token_retention)
        .map_err(|e: ExpiryError| ApiError::invalid(e.field()).because(e.reason()))
}

/// The token's own rule on where it may be sent, from the body's top-level
/// `allowed_destinations` (absent or `null`: no rule of its own).
fn allowed_destinations(
    body: &Map<String, Value>,
) -> Result<Option<AllowedDestinations>, ApiError> {
    const FIELD: &str = "allowed_destinations";
    let refused = |e: InvalidAllowedDestinations| ApiError::invalid(FIELD).because(e.reason());
    let list = match body.get(FIELD) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(refused(InvalidAllowedDestinations::NotAList)),
    };
    let patterns = list
        .iter()
        .map(|v| v.as_str())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| refused(InvalidAllowedDestinations::NotAList))?;
    AllowedDestinations::parse(&patterns)
        .map(Some)
        .map_err(refused)
}

/// A card as submitted, validated.
struct CardInput {
    pan: Pan,
    expiry: Expiry,
    cvc: Option<Cvc>,
    first_name: Option<String>,
    last_name: Option<String>,
}

impl CardInput {
    /// Validates fields in the order API.md lists them. `cvc_field` is the name the body
    /// should use for the code (either `cvv` or `cvc` is accepted).
    fn parse(
        data: &Map<String, Value>,
        cvc_field: &'static str,
        cvc_required: bool,
    ) -> Result<Self, ApiError> {
        // The raw text of a secret is wiped as soon as it is parsed into its typed value.
        let number = Zeroizing::new(required_text(data, "cardNumber")?);
        let pan = Pan::parse(&number)?;
        let month = required_text_or_integer(data, "expirationMonth")?;
        let year = required_text_or_integer(data, "expirationYear")?;
        let expiry = Expiry::parse(&month, &year, YearMonth::from_unix(now_unix() as u64))?;
        let (cvv, cvc) = (
            optional_text(data, "cvv")?.map(Zeroizing::new),
            optional_text(data, "cvc")?.map(Zeroizing::new),
        );
        let cvc = match (cvv, cvc) {
            (Some(code), _) => Some(Cvc::parse(&code, pan.brand(), "cvv")?),
            (None, Some(code)) => Some(Cvc::parse(&code, pan.brand(), "cvc")?),
            (None, None) if cvc_required => return Err(ApiError::missing(cvc_field)),
            (None, None) => None,
        };
        Ok(Self {
            pan,
            expiry,
            cvc,
            first_name: holder_name(data, "firstName")?,
            last_name: holder_name(data, "lastName")?,
        })
    }
}

fn holder_name(data: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ApiError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.chars().count() > MAX_NAME_CHARS || s.chars().any(char::is_control) {
                return Err(ApiError::invalid(field));
            }
            Ok(if s.is_empty() {
                None
            } else {
                Some(s.to_owned())
            })
        }
        Some(_) => Err(ApiError::invalid(field)),
    }
}

/// Stores a card and opens a CVC session when a code came with it. `test_ttl` marks a test
/// token: its session lives that long and is not consumed by use.
async fn store_card(
    state: &AppState,
    project: &Project,
    card: CardInput,
    expires_at: Option<i64>,
    allowed: Option<&AllowedDestinations>,
    test_ttl: Option<std::time::Duration>,
) -> Result<Value, ApiError> {
    let masked = card.pan.masked();
    let (bin, last4, brand) = (
        card.pan.bin().to_owned(),
        card.pan.last4().to_owned(),
        card.pan.brand().as_str(),
    );
    let (month, year) = (
        card.expiry.month().to_owned(),
        card.expiry.year().to_owned(),
    );
    let record = NewToken {
        kind: TokenKind::Card,
        bin: Some(bin.clone()),
        last4: last4.clone(),
        brand: Some(brand.to_owned()),
        expires_at,
        allowed,
    };
    let data = TokenData::Card {
        pan: card.pan,
        expiry: card.expiry,
        holder: Holder {
            first_name: card.first_name,
            last_name: card.last_name,
        },
    };
    // The session first: if its store is down the call fails with nothing stored, so a retry
    // cannot leave a duplicate token behind.
    let cvc_session_id = match &card.cvc {
        Some(cvc) => {
            let ttl = test_ttl.unwrap_or(state.policy.cvc_ttl);
            Some(
                state
                    .cvc
                    .create(&project.id, cvc, ttl, test_ttl.is_some())
                    .await?
                    .to_string(),
            )
        }
        None => None,
    };
    let stored = store_token(state, project, &data, record).await?;
    let mut response = json!({
        "success": true,
        "token": stored.token_id,
        "bin": bin,
        "mask": {"card_number": masked},
        "data": {
            "number": masked,
            "expiration_month": month,
            "expiration_year": year,
            "brand": brand,
            "last4": last4,
        },
        "deduplicated": stored.deduplicated,
    });
    if let Some(id) = cvc_session_id {
        response["cvc_session_id"] = json!(id);
    }
    stored.describe(&mut response);
    Ok(response)
}

/// A bank account as submitted, validated.
fn bank_data(data: &Map<String, Value>) -> Result<TokenData, ApiError> {
    let account = AccountNumber::parse(&Zeroizing::new(required_text(data, "accountNumber")?))?;
    let routing = RoutingNumber::parse(&required_text(data, "routingNumber")?)?;
    Ok(TokenData::Bank {
        account,
        routing,
        holder: Holder {
            first_name: holder_name(data, "firstName")?,
            last_name: holder_name(data, "lastName")?,
        },
    })
}

async fn store_bank(
    state: &AppState,
    project: &Project,
    token_data: TokenData,
    expires_at: Option<i64>,
    allowed: Option<&AllowedDestinations>,
) -> Result<Value, ApiError> {
    let TokenData::Bank {
        account, routing, ..
    } = &token_data
    else {
        return Err(ApiError::Internal("bank data expected".into()));
    };
    let (masked, last4, routing_number) = (
        account.masked(),
        account.last4().to_owned(),
        routing.as_str().to_owned(),
    );
    let record = NewToken {
        kind: TokenKind::Bank,
        bin: None,
        last4: last4.clone(),
        brand: None,
        expires_at,
        allowed,
    };
    let stored = store_token(state, project, &token_data, record).await?;
    let mut response = json!({
        "success": true,
        "token": stored.token_id,
        "mask": {"account_number": masked},
        "data": {"last4": last4, "routing_number": routing_number},
        "deduplicated": stored.deduplicated,
    });
    stored.describe(&mut response);
    Ok(response)
}

struct NewToken<'a> {
    kind: TokenKind,
    bin: Option<String>,
    last4: String,
    brand: Option<String>,
    /// Unix seconds; `None`: kept until deleted.
    expires_at: Option<i64>,
    /// Sealed with the data; `None`: no rule of the token's own.
    allowed: Option<&'a AllowedDestinations>,
}

struct StoredToken {
    token_id: String,
    deduplicated: bool,
    fingerprint: Option<String>,
    /// The token's expiry as stored (a deduplicated token keeps the later one).
    expires_at: Option<i64>,
    /// The rule sealed with it, normalized.
    allowed_destinations: Option<Vec<String>>,
}

impl StoredToken {
    /// Adds the optional fields to a tokenize answer: `fingerprint` with deduplication on,
    /// and (extension) `expires_at` when the token has one.
    fn describe(&self, response: &mut Value) {
        if let Some(fingerprint) = &self.fingerprint {
            response["fingerprint"] = json!(fingerprint);
        }
        if let Some(at) = self.expires_at {
            response["expires_at"] = json!(rfc3339(at));
        }
        if let Some(patterns) = &self.allowed_destinations {
            response["allowed_destinations"] = json!(patterns);
        }
    }
}

/// Seals and stores a token. With deduplication on, a card already held by the project keeps
/// its token, and its sealed data is refreshed (a new expiry or name replaces the old one).
///
/// The new token is inserted first and the held one looked for only when the insert meets it
/// (the unique fingerprint index): a new card is one write instead of a read and a write —
/// on PostgreSQL one round trip (and its pool check) fewer, docs/benchmarks.md, issue 17. Only
/// when no live token holds the card (an expired one not swept yet, or one deleted meanwhile)
/// does the second attempt erase an expired holder and insert again.
async fn store_token(
    state: &AppState,
    project: &Project,
    data: &TokenData,
    new: NewToken<'_>,
) -> Result<StoredToken, ApiError> {
    let fingerprint = project
        .deduplicate
        .then(|| state.keyring.fingerprint(&project.id, &data.identity()));
    let (expires_at, allowed) = (new.expires_at, new.allowed);
    for attempt in 0..2 {
        let token_id = format!("tok_{}", state.keyring.random_hex(16)?);
        let record = TokenRecord {
            id: token_id.clone(),
            project_id: project.id.clone(),
            kind: new.kind,
            sealed: data.seal_with_rule(allowed, &state.keyring, &project.id, &token_id)?,
            fingerprint: fingerprint.clone(),
            bin: new.bin.clone(),
            last4: new.last4.clone(),
            brand: new.brand.clone(),
            created_at: now_unix(),
            expires_at,
        };
        let inserted = if attempt == 0 {
            state.store.insert_token_unless_held(&record).await
        } else {
            state.store.insert_token(&record).await
        };
        match inserted {
            Ok(()) => {
                return Ok(StoredToken {
                    token_id,
                    deduplicated: false,
                    fingerprint: fingerprint.map(hex::encode),
                    expires_at,
                    allowed_destinations: allowed.map(AllowedDestinations::patterns),
                });
            }
            // The project holds this card already: answer with its token, refreshed.
            Err(StoreError::Conflict) => match &fingerprint {
                Some(fp) => {
                    if let Some(held) =
                        refresh_existing(state, project, data, fp, expires_at, allowed).await?
                    {
                        return Ok(held);
                    }
                }
                None => return Err(StoreError::Conflict.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(
        "deduplication conflict without a token".into(),
    ))
}

/// The project's live token for this card, refreshed (see [`refresh_held_token`]); `None`
/// when there is none (a deleted or expired token is none).
async fn refresh_existing(
    state: &AppState,
    project: &Project,
    data: &TokenData,
    fingerprint: &[u8],
    expires_at: Option<i64>,
    allowed: Option<&AllowedDestinations>,
) -> Result<Option<StoredToken>, ApiError> {
    let refreshed = refresh_held_token::<ApiError>(
        state.store.as_ref(),
        &state.keyring,
        &project.id,
        data,
        fingerprint,
        expires_at,
        allowed.cloned(),
    )
    .await?;
    Ok(refreshed.map(|token| StoredToken {
        token_id: token.token_id,
        deduplicated: true,
        fingerprint: Some(hex::encode(fingerprint)),
        expires_at: token.expires_at,
        allowed_destinations: token.allowed.as_ref().map(AllowedDestinations::patterns),
    }))
}

/// A token's own options from a body's top level, validated as `POST /tokenize` validates
/// them: its expiry (`expires_at` or `ttl_seconds`, bounded by `retention`, which also gives
/// the expiry of a token that asks for none) and its `allowed_destinations`. Bulk imports use
/// it for their records' options.
pub(crate) fn validate_options(
    body: &Map<String, Value>,
    now: i64,
    retention: Option<std::time::Duration>,
) -> Result<(Option<i64>, Option<AllowedDestinations>), ApiError> {
    let expires_at = expiry::requested_expiry(body, now, retention)
        .map_err(|e: ExpiryError| ApiError::invalid(e.field()).because(e.reason()))?;
    Ok((expires_at, allowed_destinations(body)?))
}

/// A card or a bank account validated exactly as `POST /tokenize` validates one, with the
/// metadata stored in the clear beside it. Bulk imports (`cardvault import`) use it, so a
/// record is refused there for the same reasons, with the same codes, as at the API.
pub(crate) struct Validated {
    pub data: TokenData,
    pub kind: TokenKind,
    pub bin: Option<String>,
    pub last4: String,
    pub brand: Option<String>,
}

/// Validates `data` (the fields of `/tokenize`'s `data`, by their API names) as a `kind`
/// (`card` or `bank`). A code given with a card is validated too, then dropped: bulk records
/// open no CVC session.
pub(crate) fn validate(kind: &str, data: &Map<String, Value>) -> Result<Validated, ApiError> {
    match kind {
        "card" => {
            let card = CardInput::parse(data, "cvv", false)?;
            Ok(Validated {
                bin: Some(card.pan.bin().to_owned()),
                last4: card.pan.last4().to_owned(),
                brand: Some(card.pan.brand().as_str().to_owned()),
                kind: TokenKind::Card,
                data: TokenData::Card {
                    pan: card.pan,
                    expiry: card.expiry,
                    holder: Holder {
                        first_name: card.first_name,
                        last_name: card.last_name,
                    },
                },
            })
        }
        "bank" => {
            let data = bank_data(data)?;
            let last4 = match &data {
                TokenData::Bank { account, .. } => account.last4().to_owned(),
                TokenData::Card { .. } => return Err(ApiError::invalid("type")),
            };
            Ok(Validated {
                data,
                kind: TokenKind::Bank,
                bin: None,
                last4,
                brand: None,
            })
        }
        _ => Err(ApiError::invalid("type")),
    }
}
