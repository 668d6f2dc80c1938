//! The wire format of the API's bodies, for the OpenAPI document.
//!
//! Most handlers build their answers as JSON values (they add fields conditionally, and a
//! typed struct per answer would only be serialized once); these types describe those bodies
//! field by field, names exactly as on the wire. They cannot drift silently: the black-box
//! suite (`tests/e2e/openapi.rs`) checks real answers of every route against them, refusing
//! any field they do not declare.
#![allow(
    dead_code,
    reason = "these types exist for their schemas; the handlers build the same JSON themselves"
)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::Ref;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

/// `{}`: any JSON value.
pub(super) fn any_value() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build(),
    )
}

/// `{"type": "null"}`.
pub(super) fn null() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::Null).build())
}

// ----- tokens ------------------------------------------------------------------------------

/// `type`: what a token holds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Card,
    Bank,
}

/// `POST /tokenize`. `data` is a card when `type` is `card`, a bank account when it is `bank`.
/// Card, CVC, account and routing numbers must be JSON strings.
#[derive(Serialize, ToSchema)]
pub struct TokenizeRequest {
    #[serde(rename = "type")]
    pub kind: TokenType,
    pub data: TokenizeData,
    /// When the token stops working (RFC 3339, in the future); not with `ttl_seconds`.
    #[schema(format = DateTime, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds until the token stops working; not with `expires_at`.
    #[schema(minimum = 1, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Where the token may ever be proxied (extension): patterns of the project allowlists'
    /// language (`api.stripe.com`, `*.adyen.com/pal`), 1–32 of them. Sealed with the card;
    /// applies on top of the server's and the project's lists.
    #[schema(nullable = false, min_items = 1, max_items = 32, example = json!(["api.stripe.com", "*.adyen.com/pal"]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TokenizeData {
    Card(CardData),
    Bank(BankData),
}

/// A card: 13–19 digits (spaces and dashes are stripped), Luhn-valid; an expiry not in the
/// past; `cvv` (or `cvc`) 3 digits, 4 for American Express.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardData {
    #[schema(example = "4242 4242 4242 4242")]
    pub card_number: String,
    /// `01`–`12` (`1`–`9` accepted); a JSON integer is accepted too.
    #[schema(value_type = String, example = "12")]
    pub expiration_month: String,
    /// 2 or 4 digits; a JSON integer is accepted too.
    #[schema(value_type = String, example = "2030")]
    pub expiration_year: String,
    /// Opens a CVC session (`cvc_session_id` in the answer).
    #[schema(nullable = false, example = "123")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvv: Option<String>,
    /// Another name for `cvv`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvc: Option<String>,
    #[schema(nullable = false, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[schema(nullable = false, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

/// A US bank account: account 4–17 digits, routing number 9 digits with a valid ABA checksum.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BankData {
    #[schema(example = "000123456789")]
    pub account_number: String,
    #[schema(example = "110000000")]
    pub routing_number: String,
    #[schema(nullable = false, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[schema(nullable = false, max_length = 128)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

/// `POST /test-tokens`: a flat card; `cvc` is required. Only for projects in `test` mode.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestTokenRequest {
    #[schema(example = "4242424242424242")]
    pub card_number: String,
    #[schema(value_type = String, example = "12")]
    pub expiration_month: String,
    #[schema(value_type = String, example = "2030")]
    pub expiration_year: String,
    /// Opens a CVC session that lives a year and is not consumed by use.
    #[schema(example = "123")]
    pub cvc: String,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    #[serde(rename = "expires_at", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[schema(minimum = 1, nullable = false)]
    #[serde(rename = "ttl_seconds", skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Where the token may ever be proxied (extension): patterns of the project allowlists'
    /// language (`api.stripe.com`, `*.adyen.com/pal`), 1–32 of them. Sealed with the card;
    /// applies on top of the server's and the project's lists.
    #[schema(nullable = false, min_items = 1, max_items = 32, example = json!(["api.stripe.com", "*.adyen.com/pal"]))]
    #[serde(
        rename = "allowed_destinations",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_destinations: Option<Vec<String>>,
}

/// `201` of `POST /tokenize`: a card token or a bank token.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Tokenized {
    Card(CardTokenized),
    Bank(BankTokenized),
}

#[derive(Serialize, ToSchema)]
pub struct CardTokenized {
    pub success: bool,
    #[schema(example = "tok_3f9a0c2b7d4e4f1a9b8c7d6e5f4a3b2c")]
    pub token: String,
    /// Only when a `cvv`/`cvc` was sent.
    #[schema(format = Uuid, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvc_session_id: Option<String>,
    #[schema(example = "424242")]
    pub bin: String,
    pub mask: CardMask,
    pub data: CardSummary,
    /// True when deduplication found the card already tokenized (same token returned).
    pub deduplicated: bool,
    /// A keyed hash of the card number; only with deduplication on.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// When the token stops working; absent when it is kept until deleted.
    #[schema(format = DateTime, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The token's own `allowed_destinations`, normalized; absent when it has none.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct CardMask {
    #[schema(example = "424242******4242")]
    pub card_number: String,
}

#[derive(Serialize, ToSchema)]
pub struct CardSummary {
    #[schema(example = "424242******4242")]
    pub number: String,
    #[schema(example = "12")]
    pub expiration_month: String,
    #[schema(example = "2030")]
    pub expiration_year: String,
    /// `visa`, `mastercard`, `amex`, `discover`, `diners`, `jcb`, `unionpay`, `maestro` or
    /// `unknown`.
    #[schema(example = "visa")]
    pub brand: String,
    #[schema(example = "4242")]
    pub last4: String,
}

#[derive(Serialize, ToSchema)]
pub struct BankTokenized {
    pub success: bool,
    pub token: String,
    pub mask: BankMask,
    pub data: BankSummary,
    pub deduplicated: bool,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The token's own `allowed_destinations`, normalized; absent when it has none.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct BankMask {
    #[schema(example = "********6789")]
    pub account_number: String,
}

#[derive(Serialize, ToSchema)]
pub struct BankSummary {
    pub last4: String,
    pub routing_number: String,
}

/// `201` of `POST /test-tokens`: a card token, marked as a test token.
#[derive(Serialize, ToSchema)]
pub struct TestTokenized {
    pub success: bool,
    pub token: String,
    #[schema(format = Uuid)]
    pub cvc_session_id: String,
    pub bin: String,
    pub mask: CardMask,
    pub data: CardSummary,
    pub deduplicated: bool,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The token's own `allowed_destinations`, normalized; absent when it has none.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
    pub test_mode: bool,
    #[schema(example = "1 year (test session)")]
    pub expires_in: String,
}

/// `200` of `GET /tokens/{token}`.
#[derive(Serialize, ToSchema)]
pub struct TokenMetadataAnswer {
    pub success: bool,
    pub data: TokenMetadata,
}

/// What a token is; never the number it holds.
#[derive(Serialize, ToSchema)]
pub struct TokenMetadata {
    pub token: String,
    #[serde(rename = "type")]
    pub kind: TokenType,
    /// Card tokens only.
    #[schema(required = true)]
    pub brand: Option<String>,
    pub last4: String,
    /// Card tokens only.
    #[schema(required = true)]
    pub bin: Option<String>,
    /// Card tokens only.
    #[schema(required = true)]
    pub expiration_month: Option<String>,
    /// Card tokens only.
    #[schema(required = true)]
    pub expiration_year: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `null`: kept until deleted.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    /// Bank tokens only.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_number: Option<String>,
    /// Only with deduplication on.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Where the token may be proxied (its own rule, sealed with it, normalized); absent when
    /// it has no rule of its own (the server's and project's lists apply all the same).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_destinations: Option<Vec<String>>,
}

/// `POST /detokenize`.
#[derive(Serialize, ToSchema)]
pub struct DetokenizeRequest {
    pub token: String,
}

/// `{"success": true, "message": "…"}`.
#[derive(Serialize, ToSchema)]
pub struct Done {
    pub success: bool,
    pub message: String,
}

/// The CVC session to delete, when it is not in the path or the query string.
#[derive(Serialize, ToSchema)]
pub struct CvcSessionIdBody {
    #[schema(format = Uuid)]
    pub cvc_session_id: String,
}

// ----- proxy -------------------------------------------------------------------------------

/// The outgoing method.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Post,
    Put,
    Patch,
    Get,
    Delete,
}

/// `POST /proxy/transaction` in JSON mode. `request_data` is the processor body with
/// placeholders (`${cardNumber}`, `${expirationMonth}`, `${expirationYear}`, `${cvv}`, …),
/// encoded by the outgoing `Content-Type` taken from `http_headers`: JSON (default), a
/// form (an object is form-encoded with bracket nesting), XML (a string), or any other type
/// (a string, sent as is). Placeholders are refused in `proxy_url` and `http_headers`.
#[derive(Serialize, ToSchema)]
pub struct ProxyJsonRequest {
    pub token: String,
    /// Needed when the template uses `${cvv}` or `${cvc}`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvc_session_id: Option<String>,
    /// The processor endpoint: `https`, port 443, a public host (unless the operator relaxed
    /// these), allowed by the project's allowlist if it has one.
    #[schema(format = Uri, example = "https://api.stripe.com/v1/charges")]
    pub proxy_url: String,
    /// An object, an array or a string.
    #[schema(schema_with = any_value)]
    pub request_data: Value,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<BTreeMap<String, String>>,
    /// Default `POST`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<HttpMethod>,
    /// `true`: check everything, send nothing, answer with the masked request
    /// (`DryRunAnswer`). Default `false`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// `200` of `POST /proxy/transaction`: the processor's answer, or a dry run's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ProxyOrDryRunAnswer {
    Proxied(ProxyAnswer),
    DryRun(DryRunAnswer),
}

/// `200` of a dry run: every check passed and nothing was sent; the CVC session is not used up.
#[derive(Serialize, ToSchema)]
pub struct DryRunAnswer {
    pub success: bool,
    /// Always `true`.
    pub dry_run: bool,
    pub request: DryRunRequest,
}

/// The request the processor would have received, with every injected card number, CVC and
/// account number masked as in a scrubbed echo (`424242******4242`, `***`).
#[derive(Serialize, ToSchema)]
pub struct DryRunRequest {
    #[schema(example = "POST")]
    pub method: String,
    #[schema(format = Uri, example = "https://api.stripe.com/v1/charges")]
    pub url: String,
    /// The headers the caller's request forwards; repeated headers joined with `, `;
    /// `Authorization` and any `*-Key`, `*-Token`, `*-Secret` header shown as `***`.
    pub headers: BTreeMap<String, String>,
    /// The outgoing body, byte for byte as it would be sent, masked (always a string).
    pub body: String,
}

/// `200` of `POST /proxy/transaction`: the processor answered (whatever its status). Card
/// numbers, CVCs and account numbers it echoes are masked.
#[derive(Serialize, ToSchema)]
pub struct ProxyAnswer {
    pub success: bool,
    pub proxy_response: ProxyResponse,
}

#[derive(Serialize, ToSchema)]
pub struct ProxyResponse {
    #[schema(example = 402)]
    pub status_code: u16,
    /// The processor's headers, less hop-by-hop headers and `Set-Cookie`; repeated headers
    /// joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Parsed JSON when the processor answered JSON, else the body as a string.
    #[schema(schema_with = any_value)]
    pub body: Value,
}

// ----- browser collection ------------------------------------------------------------------

/// `POST /collect/sessions`.
#[derive(Serialize, ToSchema)]
pub struct CollectSessionRequest {
    /// The merchant's checkout id: 1 to 128 letters, digits, `-` or `_`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub tokenization_session_id: String,
    /// How many tokenize calls the wax key allows (default 3).
    #[schema(minimum = 1, maximum = 100, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokenize_calls: Option<u32>,
}

/// `201` of `POST /collect/sessions`. The wax key is shown once.
#[derive(Serialize, ToSchema)]
pub struct CollectSession {
    pub success: bool,
    #[schema(example = "wax_test_…")]
    pub wax_key: String,
    pub tokenization_session_id: String,
    pub max_tokenize_calls: u32,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

// ----- applications and projects -----------------------------------------------------------

/// `test` projects take test cards and `/test-tokens`; `live` ones real cards.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Test,
    Live,
}

/// `{"allowed": true|false}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub allowed: bool,
}

/// An application's permissions, each in Ozura's object form.
#[derive(Serialize, ToSchema)]
pub struct Permissions {
    /// Tokenize, proxy, test tokens, CVC sessions, token metadata, browser sessions.
    pub tokenization: Permission,
    /// Manage applications and project settings, provision projects.
    pub provisioning: Permission,
    /// `POST /detokenize` (extension).
    pub reveal: Permission,
    /// `GET /audit-logs` (extension).
    pub audit: Permission,
}

/// Permissions to set; those left out are not granted. Unknown names are refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionsInput {
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenization: Option<Permission>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Permission>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reveal: Option<Permission>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Permission>,
}

/// `200` of `GET /api/applications/key`.
#[derive(Serialize, ToSchema)]
pub struct KeyInfoAnswer {
    pub success: bool,
    #[schema(example = "API key is valid")]
    pub message: String,
    pub data: KeyInfo,
}

#[derive(Serialize, ToSchema)]
pub struct KeyInfo {
    pub project_id: String,
    pub application_id: String,
    pub name: String,
    pub mode: Mode,
    pub permissions: Permissions,
}

#[derive(Serialize, ToSchema)]
pub struct Application {
    #[schema(example = "app_…")]
    pub id: String,
    pub name: String,
    pub permissions: Permissions,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// An application with its new API key, shown once.
#[derive(Serialize, ToSchema)]
pub struct ApplicationWithKey {
    pub id: String,
    pub name: String,
    pub permissions: Permissions,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(example = "key_checkoutweb_test_pvt_…")]
    pub api_key: String,
}

/// An application with its rolled API key (shown once) and when its old keys stop working.
#[derive(Serialize, ToSchema)]
pub struct RolledApplication {
    pub id: String,
    pub name: String,
    pub permissions: Permissions,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub api_key: String,
    #[schema(format = DateTime)]
    pub old_keys_expire_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationAnswer {
    pub success: bool,
    pub data: Application,
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationList {
    pub success: bool,
    pub data: Vec<Application>,
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationCreated {
    pub success: bool,
    pub data: ApplicationWithKey,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRolled {
    pub success: bool,
    pub data: RolledApplication,
}

/// `POST /api/applications`. Without `permissions`, the application may tokenize only.
#[derive(Serialize, ToSchema)]
pub struct ApplicationCreate {
    /// 3 to 50 characters, unique in the project.
    #[schema(min_length = 3, max_length = 50)]
    pub name: String,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionsInput>,
}

/// `PUT /api/applications/{id}`: a new name, new permissions, or both (at least one).
#[derive(Serialize, ToSchema)]
pub struct ApplicationUpdate {
    #[schema(min_length = 3, max_length = 50, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionsInput>,
}

/// `POST /api/applications/{id}/roll-key` (the body may be empty).
#[derive(Serialize, ToSchema)]
pub struct RollKey {
    /// How long the old keys keep working (default 0: they stop now; at most a week).
    #[schema(minimum = 0, maximum = 604800, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_old_in_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectAnswer {
    pub success: bool,
    pub data: ProjectSettings,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectSettings {
    #[schema(example = "proj_…")]
    pub id: String,
    pub name: String,
    pub mode: Mode,
    pub deduplicate: bool,
    /// Origins whose pages may embed the project's card fields.
    pub allowed_origins: Vec<String>,
    /// Destination rules the proxy allows for this project.
    pub destination_allowlist: Vec<String>,
    pub processor_tls: Vec<ProcessorTlsSummary>,
}

/// A destination's TLS settings, without the certificates and keys themselves.
#[derive(Serialize, ToSchema)]
pub struct ProcessorTlsSummary {
    pub host: String,
    /// Whether a CA of its own is set.
    pub ca: bool,
    /// Whether a client certificate (mutual TLS) is set.
    pub client_certificate: bool,
}

/// `PATCH /api/projects/{id}`: any of these; lists replace the current ones. Everything is
/// checked before anything changes; any other field is refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicate: Option<bool>,
    #[schema(nullable = false, example = json!(["https://shop.example"]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    #[schema(nullable = false, example = json!(["api.stripe.com", "*.adyen.com"]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_allowlist: Option<Vec<String>>,
    /// Per destination host: its TLS settings, or `null` to remove them.
    #[schema(schema_with = processor_tls_changes)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor_tls: Option<BTreeMap<String, Option<ProcessorTls>>>,
}

/// `{"host": ProcessorTls | null, …}`.
fn processor_tls_changes() -> Schema {
    let settings_or_null = OneOfBuilder::new()
        .item(null())
        .item(Ref::from_schema_name("ProcessorTls"))
        .build();
    Schema::Object(
        ObjectBuilder::new()
            .additional_properties(Some(Schema::OneOf(settings_or_null)))
            .build(),
    )
}

/// PEM texts.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessorTls {
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

/// `POST /internal/provision`.
#[derive(Serialize, ToSchema)]
pub struct ProvisionRequest {
    #[schema(min_length = 3, max_length = 50)]
    pub name: String,
    /// Default: the caller's project's mode; a test project cannot provision a live one.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicate: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Provisioned {
    pub success: bool,
    pub data: ProvisionedProject,
}

/// The new project and its first application (tokenization and provisioning); keys shown once.
#[derive(Serialize, ToSchema)]
pub struct ProvisionedProject {
    pub project_id: String,
    pub name: String,
    pub mode: Mode,
    #[schema(example = "pk_test_…")]
    pub publishable_key: String,
    pub application_id: String,
    pub api_key: String,
}

// ----- audit, health -----------------------------------------------------------------------

/// `200` of `GET /audit-logs`, oldest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub success: bool,
    pub data: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One audit record: who did what to which token, never the data itself.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub request_id: String,
    pub application_id: String,
    #[schema(example = "proxy")]
    pub action: String,
    /// `ok`, or the error `code` the call answered with.
    pub outcome: String,
    #[schema(required = true)]
    pub token: Option<String>,
    /// The action's details (destination host, processor status, latency, …).
    #[schema(schema_with = any_value)]
    pub detail: Value,
    pub chain: String,
    pub seq: i64,
    /// Hex of the record's hash (it covers the previous record's).
    pub hash: String,
}

/// `200` of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    pub success: bool,
    #[schema(example = "ok")]
    pub message: String,
    pub data: LivenessData,
}

#[derive(Serialize, ToSchema)]
pub struct LivenessData {
    #[schema(example = "alive")]
    pub status: String,
}

/// `GET /readyz`: ready (200) when the database answers; the CVC session store is reported
/// but not required (only calls that use a CVC need it).
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub success: bool,
    /// `ready`, or `Service unavailable`.
    pub message: String,
    pub data: ReadinessData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Ok,
    Unavailable,
}

#[derive(Serialize, ToSchema)]
pub struct ReadinessData {
    pub database: BackendState,
    pub cvc_sessions: BackendState,
}

/// `503` of `GET /readyz`: not ready, or shed before it was asked (`overloaded`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum NotReady {
    NotReady(Readiness),
    Refused(super::errors::ErrorBody),
}
