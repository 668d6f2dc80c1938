//! Settings: defaults, then a TOML file, then `CARDVAULT_*` environment variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cardvault_core::destination::{AllowRule, DEFAULT_MAX_URL_BYTES, DestinationRules};
use figment::Figment;

use crate::http_server::ConnectionLimits;
use crate::limits::rate::{Budget, MAX_BURST, Period, Rate, RateLimitSettings};
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./cardvault-data";
pub const DEFAULT_CVC_TTL_SECONDS: u64 = 90;
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;
pub const DEFAULT_CLIENT_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 16;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "cardvault:";
pub const DEFAULT_CACHE_TTL_MS: u64 = 5_000;
/// Longer than the 60 s idle timeout common load balancers use, so the balancer closes first.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 75_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Enough for 1,000 calls a second to processors that take up to four seconds to answer.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 4096;
pub const DEFAULT_TEST_CVC_SESSIONS_PER_PROJECT: usize = 10_000;
/// A metrics token shorter than this is refused: it is all that guards `/metrics`.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;
/// Per application key. Well above what one merchant backend sends, so only a runaway loop or a
/// stolen key meets it, and one key cannot take a whole instance; the burst absorbs the start
/// of a batch job.
pub const DEFAULT_RATE_LIMIT_TOKENIZE: Rate = Rate::Calls {
    calls: 2000,
    per: Period::Second,
};
pub const DEFAULT_RATE_LIMIT_TOKENIZE_BURST: u32 = 10_000;
pub const DEFAULT_RATE_LIMIT_PROXY: Rate = Rate::Calls {
    calls: 2000,
    per: Period::Second,
};
pub const DEFAULT_RATE_LIMIT_PROXY_BURST: u32 = 10_000;
/// Card data in the clear: a person or a support tool looking a card up, not a bulk export
/// (`cardvault export` is the way for that), so a stolen reveal key drains slowly.
pub const DEFAULT_RATE_LIMIT_REVEAL: Rate = Rate::Calls {
    calls: 1,
    per: Period::Second,
};
pub const DEFAULT_RATE_LIMIT_REVEAL_BURST: u32 = 20;
pub const DEFAULT_RATE_LIMIT_PROVISIONING: Rate = Rate::Calls {
    calls: 10,
    per: Period::Second,
};
pub const DEFAULT_RATE_LIMIT_PROVISIONING_BURST: u32 = 100;
/// Per browser checkout: a shopper tokenizes a card or two, retrying on a typo; a wax key also
/// caps its successful calls (`max_tokenize_calls`).
pub const DEFAULT_RATE_LIMIT_BROWSER: Rate = Rate::Calls {
    calls: 1,
    per: Period::Second,
};
pub const DEFAULT_RATE_LIMIT_BROWSER_BURST: u32 = 30;

/// Every setting of the server. Field names are the environment names without `CARDVAULT_`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// PEM certificate chain to serve HTTPS with (with `tls_key_file`); absent: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    pub cvc_ttl_seconds: u64,
    pub upstream_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_ca_file: Option<PathBuf>,
    pub allow_private_destinations: bool,
    pub allow_http_destinations: bool,
    #[serde(deserialize_with = "port_list")]
    pub allowed_ports: Vec<u16>,
    /// Server-wide destination allowlist (host patterns); empty means no server-wide list.
    #[serde(deserialize_with = "string_list")]
    pub destination_allowlist: Vec<String>,
    /// When on, a project with no allowlist of its own (and no server-wide list) may call nothing.
    pub require_destination_allowlist: bool,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// Longest `proxy_url` accepted (400 `Invalid proxy URL` beyond it).
    pub max_url_bytes: usize,
    /// Time a client has to send its request headers, and then its whole body.
    pub client_read_timeout_ms: u64,
    /// A client connection (HTTP/1 keep-alive or HTTP/2) with no request for this long is closed
    /// (within half as long again: it is looked at twice a timeout).
    pub idle_timeout_ms: u64,
    /// Open client connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Requests served at once, at most; more are answered 503 with `Retry-After` at once.
    pub max_in_flight_requests: usize,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    /// `postgres://…` to share tokens and keys between instances; absent: SQLite in `data_dir`.
    pub database_url: Option<Redacted>,
    pub database_max_connections: u32,
    /// `redis://…` to share CVC sessions between instances; absent: in this process's memory.
    pub redis_url: Option<Redacted>,
    pub redis_key_prefix: String,
    /// Test-mode CVC sessions (a year long, reusable) a project keeps at most; the oldest go.
    pub test_cvc_sessions_per_project: usize,
    /// How long API keys and project settings are cached (a revoked key or a changed allowlist
    /// takes effect within this time); 0 disables the caches.
    pub cache_ttl_ms: u64,
    /// Data key version that encrypts new records; absent: the newest.
    pub active_key_version: Option<u32>,
    /// Lifetime of a wax key (a browser checkout's right to tokenize).
    pub collect_session_ttl_seconds: u64,
    /// How long a token tokenized without an expiry of its own lives (and the latest expiry a
    /// caller may ask for); absent: tokens are kept until deleted.
    pub token_retention_seconds: Option<u64>,
    /// How often expired tokens are crypto-shredded.
    pub token_sweep_interval_seconds: u64,
    /// How long the answer to a call made with an `Idempotency-Key` is kept for its retries.
    pub idempotency_ttl_seconds: u64,
    /// Bearer token that opens `GET /metrics` on the main listener; absent: no `/metrics` there.
    pub metrics_token: Option<Redacted>,
    /// Address of a separate plain-HTTP listener that serves only `/metrics`, without a token;
    /// absent: none.
    pub metrics_listen: Option<SocketAddr>,
    /// Rate limits on or off altogether (each budget can also be `off` by itself).
    pub rate_limit_enabled: bool,
    /// Each application key's budget for tokenize calls (and token reads and deletes, CVC
    /// session deletes, wax keys): a refill rate (`2000/s`, `30/min`, `5/h`, `off`) ...
    pub rate_limit_tokenize: Rate,
    /// ... and the calls the bucket holds (how many may come at once).
    pub rate_limit_tokenize_burst: u32,
    /// Each application key's budget for `/proxy/transaction`.
    pub rate_limit_proxy: Rate,
    pub rate_limit_proxy_burst: u32,
    /// Each application key's budget for `/detokenize`.
    pub rate_limit_reveal: Rate,
    pub rate_limit_reveal_burst: u32,
    /// Each application key's budget for managing applications and projects and reading the
    /// audit log.
    pub rate_limit_provisioning: Rate,
    pub rate_limit_provisioning_burst: u32,
    /// Each browser checkout's (wax key session's) budget for tokenize calls.
    pub rate_limit_browser: Rate,
    pub rate_limit_browser_burst: u32,
}

/// A setting that may carry a password (a database or Redis URL): never printed, and never
/// serialized back out (it serializes as `[redacted]`; no default carries one).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Redacted(secrecy::SecretString);

impl Redacted {
    pub fn new(value: String) -> Self {
        Self(secrecy::SecretString::from(value))
    }

    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The least severe log lines written. A closed set: a misspelt level is a start-up error
/// naming the valid ones, never a filter that silently drops every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            tls_cert_file: None,
            tls_key_file: None,
            cvc_ttl_seconds: DEFAULT_CVC_TTL_SECONDS,
            upstream_timeout_ms: DEFAULT_UPSTREAM_TIMEOUT_MS,
            upstream_connect_timeout_ms: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            upstream_ca_file: None,
            allow_private_destinations: false,
            allow_http_destinations: false,
            allowed_ports: vec![443],
            destination_allowlist: Vec::new(),
            require_destination_allowlist: false,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
            client_read_timeout_ms: DEFAULT_CLIENT_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            log_format: LogFormat::Text,
            log_level: LogLevel::Info,
            database_url: None,
            database_max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            redis_url: None,
            redis_key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            test_cvc_sessions_per_project: DEFAULT_TEST_CVC_SESSIONS_PER_PROJECT,
            active_key_version: None,
            cache_ttl_ms: DEFAULT_CACHE_TTL_MS,
            collect_session_ttl_seconds: crate::collect::DEFAULT_SESSION_TTL_SECONDS,
            token_retention_seconds: None,
            token_sweep_interval_seconds: crate::tokens::sweeper::DEFAULT_INTERVAL_SECONDS,
            idempotency_ttl_seconds: crate::idempotency::DEFAULT_TTL_SECONDS,
            metrics_token: None,
            metrics_listen: None,
            rate_limit_enabled: true,
            rate_limit_tokenize: DEFAULT_RATE_LIMIT_TOKENIZE,
            rate_limit_tokenize_burst: DEFAULT_RATE_LIMIT_TOKENIZE_BURST,
            rate_limit_proxy: DEFAULT_RATE_LIMIT_PROXY,
            rate_limit_proxy_burst: DEFAULT_RATE_LIMIT_PROXY_BURST,
            rate_limit_reveal: DEFAULT_RATE_LIMIT_REVEAL,
            rate_limit_reveal_burst: DEFAULT_RATE_LIMIT_REVEAL_BURST,
            rate_limit_provisioning: DEFAULT_RATE_LIMIT_PROVISIONING,
            rate_limit_provisioning_burst: DEFAULT_RATE_LIMIT_PROVISIONING_BURST,
            rate_limit_browser: DEFAULT_RATE_LIMIT_BROWSER,
            rate_limit_browser_burst: DEFAULT_RATE_LIMIT_BROWSER_BURST,
        }
    }
}

/// A setting that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Settings {
    /// Reads the layers in order: defaults, `file`, the environment, `overrides`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a value has the wrong type or an unknown key is set.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} not found",
                    file.display()
                )));
            }
            check_file_keys(file)?;
            figment = figment.merge(Toml::file(file));
        }
        // The master key and database URLs are read where they are used, never through figment,
        // so a secret is never echoed back in a configuration error.
        let env = Env::prefixed("CARDVAULT_").ignore(&["master_key", "config", "pkcs11_pin"]);
        let settings: Settings = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert_file and tls_key_file go together: set both for HTTPS, or neither".into(),
            ));
        }
        if self.collect_session_ttl_seconds == 0 {
            return Err(ConfigError::Invalid(
                "collect_session_ttl_seconds must be at least 1".into(),
            ));
        }
        if self.token_retention_seconds == Some(0) {
            return Err(ConfigError::Invalid(
                "token_retention_seconds must be at least 1 (leave it unset to keep tokens until deleted)".into(),
            ));
        }
        if self.idempotency_ttl_seconds == 0 {
            return Err(ConfigError::Invalid(
                "idempotency_ttl_seconds must be at least 1".into(),
            ));
        }
        if self.token_sweep_interval_seconds == 0 {
            return Err(ConfigError::Invalid(
                "token_sweep_interval_seconds must be at least 1".into(),
            ));
        }
        if self.cvc_ttl_seconds == 0 {
            return Err(ConfigError::Invalid(
                "cvc_ttl_seconds must be at least 1".into(),
            ));
        }
        if self.upstream_timeout_ms == 0
            || self.upstream_connect_timeout_ms == 0
            || self.client_read_timeout_ms == 0
            || self.idle_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "timeouts must be at least 1 ms".into(),
            ));
        }
        self.destination_allowlist()?;
        if self.test_cvc_sessions_per_project == 0 {
            return Err(ConfigError::Invalid(
                "test_cvc_sessions_per_project must be at least 1".into(),
            ));
        }
        if self.max_in_flight_requests == 0 {
            return Err(ConfigError::Invalid(
                "max_in_flight_requests must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.max_request_bytes == 0 || self.max_response_bytes == 0 || self.max_url_bytes == 0 {
            return Err(ConfigError::Invalid(
                "size limits must be at least 1 byte".into(),
            ));
        }
        self.check_metrics_token()?;
        for (budget, _, burst) in self.rate_budgets() {
            if !(1..=MAX_BURST).contains(&burst) {
                return Err(ConfigError::Invalid(format!(
                    "rate_limit_{}_burst must be from 1 to {MAX_BURST} (to lift a limit, set \
                     rate_limit_{} = \"off\")",
                    budget.name(),
                    budget.name()
                )));
            }
        }
        Ok(())
    }

    /// Each budget class with its rate and burst settings.
    fn rate_budgets(&self) -> [(Budget, Rate, u32); 5] {
        [
            (
                Budget::Tokenize,
                self.rate_limit_tokenize,
                self.rate_limit_tokenize_burst,
            ),
            (
                Budget::Proxy,
                self.rate_limit_proxy,
                self.rate_limit_proxy_burst,
            ),
            (
                Budget::Reveal,
                self.rate_limit_reveal,
                self.rate_limit_reveal_burst,
            ),
            (
                Budget::Provisioning,
                self.rate_limit_provisioning,
                self.rate_limit_provisioning_burst,
            ),
            (
                Budget::Browser,
                self.rate_limit_browser,
                self.rate_limit_browser_burst,
            ),
        ]
    }

    /// The rate limits in force: none when `rate_limit_enabled` is off.
    pub fn rate_limits(&self) -> RateLimitSettings {
        if !self.rate_limit_enabled {
            return RateLimitSettings::off();
        }
        self.rate_budgets().into_iter().fold(
            RateLimitSettings::off(),
            |limits, (budget, rate, burst)| {
                // `validate` refused a zero burst.
                let burst = std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN);
                limits.with(budget, rate, burst)
            },
        )
    }

    /// The token is never part of the message: only what is wrong with it.
    fn check_metrics_token(&self) -> Result<(), ConfigError> {
        let Some(token) = &self.metrics_token else {
            return Ok(());
        };
        let token = token.expose();
        if token.len() < MIN_METRICS_TOKEN_LEN {
            return Err(ConfigError::Invalid(format!(
                "metrics_token must be at least {MIN_METRICS_TOKEN_LEN} characters"
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(
                "metrics_token must be printable ASCII without spaces (it is sent in a header)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether metrics are exposed at all (on the main listener, their own, or both).
    pub fn metrics_enabled(&self) -> bool {
        self.metrics_token.is_some() || self.metrics_listen.is_some()
    }

    pub fn cvc_ttl(&self) -> Duration {
        Duration::from_secs(self.cvc_ttl_seconds)
    }

    pub fn collect_session_ttl(&self) -> Duration {
        Duration::from_secs(self.collect_session_ttl_seconds)
    }

    pub fn token_retention(&self) -> Option<Duration> {
        self.token_retention_seconds.map(Duration::from_secs)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_seconds)
    }

    pub fn token_sweep_interval(&self) -> Duration {
        Duration::from_secs(self.token_sweep_interval_seconds)
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_millis(self.cache_ttl_ms)
    }

    pub fn client_read_timeout(&self) -> Duration {
        Duration::from_millis(self.client_read_timeout_ms)
    }

    /// The certificate files, when HTTPS is configured.
    pub fn tls_files(&self) -> Option<crate::server_tls::CertificateFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::server_tls::CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.client_read_timeout(),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            serving_threads: self.serving_threads(),
        }
    }

    /// The threads calls are served on, each call on one thread from end to end (see
    /// [`crate::serving_threads`]); PostgreSQL and Redis connections are opened on each.
    pub fn serving_threads(&self) -> usize {
        crate::runtime::serving_threads()
    }

    pub fn destination_rules(&self) -> DestinationRules {
        DestinationRules {
            allow_http: self.allow_http_destinations,
            allow_private: self.allow_private_destinations,
            allowed_ports: self.allowed_ports.clone(),
            max_url_bytes: self.max_url_bytes,
        }
    }

    /// The server-wide allowlist, parsed. A rule that does not parse is an error, never
    /// dropped: a list that lost its only rule would permit everything.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the rule.
    pub fn destination_allowlist(&self) -> Result<Vec<AllowRule>, ConfigError> {
        self.destination_allowlist
            .iter()
            .map(|r| AllowRule::parse(r).map_err(|e| ConfigError::Invalid(e.to_string())))
            .collect()
    }
}

/// A key in the settings file that is not a setting is an error naming it and the nearest valid
/// key: ignored, a typo (`cvc_ttl = 5`) would silently leave the default in force. (Unknown
/// `CARDVAULT_*` environment variables are left alone: the environment is shared with other
/// programs.)
fn check_file_keys(file: &Path) -> Result<(), ConfigError> {
    let known = match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect::<Vec<_>>(),
        _ => return Ok(()),
    };
    let data = figment::Provider::data(&Toml::file(file))
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    for dict in data.values() {
        for key in dict.keys() {
            if known.iter().any(|k| k == key) {
                continue;
            }
            let nearest = known
                .iter()
                // A setting the typo is part of (`cvc_ttl` → `cvc_ttl_seconds`) first.
                .min_by_key(|k| {
                    let related = k.contains(key.as_str()) || key.contains(k.as_str());
                    (!related, edit_distance(k, key))
                })
                .map(String::as_str)
                .unwrap_or("");
            return Err(ConfigError::Invalid(format!(
                "unknown setting `{key}` in {}; did you mean `{nearest}`?",
                file.display()
            )));
        }
    }
    Ok(())
}

/// Levenshtein distance, for suggesting the setting a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Strings as a TOML array or as the comma list an environment variable carries.
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        Text(String),
    }
    Ok(match List::deserialize(deserializer)? {
        List::Many(list) => list,
        List::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Ports as a TOML array or as the comma list an environment variable carries.
fn port_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ports {
        List(Vec<u16>),
        One(u16),
        Text(String),
    }
    match Ports::deserialize(deserializer)? {
        Ports::List(list) => Ok(list),
        Ports::One(port) => Ok(vec![port]),
        Ports::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u16>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_in_the_file_is_refused_with_the_nearest_setting() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "cvc_ttl = 5\n")?;
            let error = Settings::load(Some(Path::new("c.toml")), Overrides::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains("unknown setting `cvc_ttl`"), "{error}");
            assert!(error.contains("did you mean `cvc_ttl_seconds`?"), "{error}");
            // An unknown CARDVAULT_* variable (other programs share the environment) is not.
            jail.create_file("ok.toml", "cvc_ttl_seconds = 5\n")?;
            jail.set_env("CARDVAULT_SOMETHING_ELSE", "x");
            let s = Settings::load(Some(Path::new("ok.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.cvc_ttl_seconds, 5);
            Ok(())
        });
    }

    #[test]
    fn log_levels_are_a_closed_set() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CARDVAULT_LOG_LEVEL", "verbose");
            let error = Settings::load(None, Overrides::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains("verbose") && error.contains("trace"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_flags_override_both() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "cvc_ttl_seconds = 5\nallowed_ports = [443, 8443]\n",
            )?;
            jail.set_env("CARDVAULT_UPSTREAM_TIMEOUT_MS", "1500");
            jail.set_env("CARDVAULT_ALLOW_PRIVATE_DESTINATIONS", "true");
            jail.set_env("CARDVAULT_LOG_FORMAT", "json");
            jail.set_env("CARDVAULT_DATA_DIR", "/from/env");
            let s = Settings::load(
                Some(Path::new("c.toml")),
                Overrides {
                    data_dir: Some("/from/flag".into()),
                    listen: None,
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.cvc_ttl_seconds, 5);
            assert_eq!(s.allowed_ports, vec![443, 8443]);
            assert_eq!(s.upstream_timeout_ms, 1500);
            assert!(s.allow_private_destinations);
            assert_eq!(s.log_format, LogFormat::Json);
            assert_eq!(s.data_dir, PathBuf::from("/from/flag"));
            jail.set_env("CARDVAULT_ALLOWED_PORTS", "443, 9443");
            jail.set_env(
                "CARDVAULT_DESTINATION_ALLOWLIST",
                "api.stripe.com, *.adyen.com/v71",
            );
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.allowed_ports, vec![443, 9443]);
            assert_eq!(
                s.destination_allowlist,
                vec!["api.stripe.com", "*.adyen.com/v71"]
            );
            assert_eq!(s.data_dir, PathBuf::from("/from/env"));
            Ok(())
        });
    }

    #[test]
    fn token_lifecycle_settings_default_to_keeping_tokens() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.token_retention(), None);
            assert_eq!(s.token_sweep_interval(), Duration::from_secs(60));
            jail.set_env("CARDVAULT_TOKEN_RETENTION_SECONDS", "86400");
            jail.set_env("CARDVAULT_TOKEN_SWEEP_INTERVAL_SECONDS", "1");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.token_retention(), Some(Duration::from_secs(86_400)));
            assert_eq!(s.token_sweep_interval(), Duration::from_secs(1));
            Ok(())
        });
    }

    #[test]
    fn a_metrics_token_must_be_long_and_header_safe_and_is_never_echoed() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert!(!s.metrics_enabled());
            for bad in ["short-secret", "a token with spaces in it"] {
                jail.set_env("CARDVAULT_METRICS_TOKEN", bad);
                let error = Settings::load(None, Overrides::default())
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(error.contains("metrics_token"), "{error}");
                assert!(!error.contains(bad), "the token is echoed: {error}");
            }
            jail.set_env("CARDVAULT_METRICS_TOKEN", "0123456789abcdef-scrape");
            jail.set_env("CARDVAULT_METRICS_LISTEN", "127.0.0.1:9464");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert!(s.metrics_enabled());
            assert_eq!(
                s.metrics_token.as_ref().map(Redacted::expose),
                Some("0123456789abcdef-scrape")
            );
            assert_eq!(s.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
            assert!(!format!("{s:?}").contains("0123456789abcdef"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CARDVAULT_CVC_TTL_SECONDS", "soon");
            assert!(Settings::load(None, Overrides::default()).is_err());
            jail.set_env("CARDVAULT_CVC_TTL_SECONDS", "0");
            assert!(Settings::load(None, Overrides::default()).is_err());
            jail.set_env("CARDVAULT_CVC_TTL_SECONDS", "90");
            jail.set_env("CARDVAULT_DESTINATION_ALLOWLIST", "*");
            assert!(Settings::load(None, Overrides::default()).is_err());
            jail.set_env("CARDVAULT_DESTINATION_ALLOWLIST", "");
            jail.set_env("CARDVAULT_TOKEN_RETENTION_SECONDS", "0");
            assert!(Settings::load(None, Overrides::default()).is_err());
            jail.set_env("CARDVAULT_TOKEN_RETENTION_SECONDS", "-1");
            assert!(Settings::load(None, Overrides::default()).is_err());
            jail.set_env("CARDVAULT_TOKEN_RETENTION_SECONDS", "86400");
            jail.set_env("CARDVAULT_TOKEN_SWEEP_INTERVAL_SECONDS", "0");
            assert!(Settings::load(None, Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn rate_limits_are_on_by_default_and_reveal_is_far_below_tokenize() {
        figment::Jail::expect_with(|_| {
            let limits = Settings::load(None, Overrides::default())
                .map_err(|e| e.to_string())?
                .rate_limits();
            for budget in Budget::ALL {
                assert!(limits.limit(budget).is_some(), "{budget:?} is limited");
            }
            let tokenize = limits.limit(Budget::Tokenize).unwrap();
            let reveal = limits.limit(Budget::Reveal).unwrap();
            assert!(reveal.interval >= tokenize.interval * 100);
            assert!(reveal.burst < tokenize.burst);
            Ok(())
        });
    }

    #[test]
    fn rate_limits_come_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "rate_limit_proxy = \"30/min\"\nrate_limit_proxy_burst = 5\nrate_limit_reveal = \"off\"\n",
            )?;
            jail.set_env("CARDVAULT_RATE_LIMIT_TOKENIZE", "100");
            jail.set_env("CARDVAULT_RATE_LIMIT_BROWSER", "OFF");
            jail.set_env("CARDVAULT_RATE_LIMIT_PROVISIONING", "1/h");
            jail.set_env("CARDVAULT_RATE_LIMIT_PROVISIONING_BURST", "3");
            let limits = Settings::load(Some(Path::new("c.toml")), Overrides::default())
                .map_err(|e| e.to_string())?
                .rate_limits();
            let limit = |budget| limits.limit(budget).map(|l| (l.interval, l.burst.get()));
            assert_eq!(limit(Budget::Proxy), Some((Duration::from_secs(2), 5)));
            assert_eq!(
                limit(Budget::Tokenize),
                Some((Duration::from_millis(10), DEFAULT_RATE_LIMIT_TOKENIZE_BURST))
            );
            assert_eq!(
                limit(Budget::Provisioning),
                Some((Duration::from_secs(3600), 3))
            );
            assert_eq!(limit(Budget::Reveal), None);
            assert_eq!(limit(Budget::Browser), None);
            // One switch turns every limit off.
            jail.set_env("CARDVAULT_RATE_LIMIT_ENABLED", "false");
            let s = Settings::load(None, Overrides::default()).map_err(|e| e.to_string())?;
            assert!(s.rate_limits().is_off());
            Ok(())
        });
    }

    #[test]
    fn bad_rate_limits_are_refused_naming_the_setting() {
        for (variable, value, named) in [
            ("CARDVAULT_RATE_LIMIT_PROXY", "0", "rate_limit_proxy"),
            ("CARDVAULT_RATE_LIMIT_PROXY", "fast", "rate_limit_proxy"),
            ("CARDVAULT_RATE_LIMIT_REVEAL", "5/week", "rate_limit_reveal"),
            (
                "CARDVAULT_RATE_LIMIT_TOKENIZE",
                "2000000/s",
                "rate_limit_tokenize",
            ),
            (
                "CARDVAULT_RATE_LIMIT_PROXY_BURST",
                "0",
                "rate_limit_proxy_burst",
            ),
            (
                "CARDVAULT_RATE_LIMIT_BROWSER_BURST",
                "-1",
                "rate_limit_browser_burst",
            ),
            (
                "CARDVAULT_RATE_LIMIT_BROWSER_BURST",
                "1000001",
                "rate_limit_browser_burst",
            ),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.set_env(variable, value);
                let error = Settings::load(None, Overrides::default())
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                // Figment names a variable by its environment name, the checks by the key.
                assert!(
                    error.to_lowercase().contains(named),
                    "{variable}={value}: {error}"
                );
                Ok(())
            });
        }
    }
}
