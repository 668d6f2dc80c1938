//! cardvault's server: everything with I/O around the pure `cardvault-core`.
#![forbid(unsafe_code)]
// Standard output belongs to the CLI (`cli.rs` allows it); everything else reports through
// `tracing`, whose subscriber decides where and in what format.
#![warn(clippy::print_stdout)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod config;
pub mod crypto;
pub mod cvc;
pub mod destinations;
pub mod error_chain;
pub mod http_server;
pub mod idempotency;
pub mod idle_looks;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod portability;
pub mod redis_connection;
pub mod runtime;
pub mod server_tls;
pub mod serving_threads;
pub mod store;
pub mod tokens;
pub mod upstream;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{AppState, RequestPolicy};
use crate::config::Settings;
use crate::crypto::{CryptoError, Keyring, MasterKeyProvider};
use crate::cvc::{CvcSessions, MemoryCvcStore, RedisCvcStore};
use crate::destinations::{DestinationSettings, Destinations, NameLookup, SystemLookup};
use crate::store::{Database, SqlStore, Store, StoreError};
use crate::upstream::{UpstreamClient, UpstreamSettings};

/// How often expired CVC sessions are swept from memory.
const CVC_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the master key does not match this vault (check CARDVAULT_MASTER_KEY or master.key, or the CARDVAULT_KEY_PROVIDER and CARDVAULT_PKCS11_* settings)"
    )]
    WrongMasterKey,
    #[error("no vault in {0}: run `cardvault init --data-dir {0}` first")]
    NotInitialized(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("server I/O")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cvc(#[from] cvc::CvcError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("TLS certificate: {0}")]
    Tls(#[from] server_tls::CertificateError),
    #[error("redis_url cannot be used")]
    Redis(#[source] redis::RedisError),
}

/// Where a started vault answers: its address, and whether it speaks HTTPS there.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub addr: std::net::SocketAddr,
    pub https: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// Where the vault's durable data lives: PostgreSQL when a URL is given, else the SQLite file in
/// the data directory.
pub fn database(data_dir: &Path, database_url: Option<&str>, max_connections: u32) -> Database {
    match database_url {
        Some(url) => Database::Postgres {
            url: secrecy::SecretString::from(url),
            max_connections,
            serving_threads: 0,
        },
        None => Database::Sqlite(data_dir.join("cardvault.db")),
    }
}

/// The database the settings name.
pub fn settings_database(settings: &Settings) -> Database {
    let mut database = database(
        &settings.data_dir,
        settings.database_url.as_ref().map(config::Redacted::expose),
        settings.database_max_connections,
    );
    if let Database::Postgres {
        serving_threads, ..
    } = &mut database
    {
        *serving_threads = settings.serving_threads();
    }
    database
}

/// Opens the database (which `cardvault init` created) and brings its schema up to date.
pub async fn open_store(database: &Database, create: bool) -> Result<Arc<dyn Store>, StartError> {
    if let Database::Sqlite(path) = database
        && !create
        && !path.exists()
    {
        let dir = path.parent().unwrap_or(path);
        return Err(StartError::NotInitialized(dir.display().to_string()));
    }
    Ok(Arc::new(SqlStore::open(database, create).await?))
}

/// Loads the key ring, creating the root secret and first data key if the database has none yet.
pub async fn load_keyring(
    store: &dyn Store,
    master: Arc<dyn MasterKeyProvider>,
) -> Result<Keyring, StartError> {
    let mut wrapped = store.data_keys().await?;
    let root = keys::master::load_root_secret(store, master.as_ref(), wrapped.is_empty()).await?;
    if wrapped.is_empty() {
        match store
            .insert_data_key(&Keyring::wrap_new_data_key(master.as_ref(), 1)?)
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        wrapped = store.data_keys().await?;
    }
    // The data keys are the first thing the master key opens: if they do not open, the key is
    // not this vault's (a mistyped CARDVAULT_MASTER_KEY, another vault's key file).
    Keyring::with_master(master, &root, &wrapped).map_err(keys::master::wrong_key_on_decrypt)
}

/// Builds everything a request needs from the settings.
pub async fn build_state(settings: &Settings) -> Result<AppState, StartError> {
    build_state_with(settings, Arc::new(SystemLookup)).await
}

/// As [`build_state`], resolving destination names through `lookup` (tests plug a fake in).
pub async fn build_state_with(
    settings: &Settings,
    lookup: Arc<dyn NameLookup>,
) -> Result<AppState, StartError> {
    let store = open_store(&settings_database(settings), false).await?;
    let master = keys::master::ProviderSettings::from_env(&settings.data_dir)?.open(false)?;
    let mut keyring = load_keyring(store.as_ref(), master).await?;
    if let Some(version) = settings.active_key_version {
        keyring = keyring.with_active_version(version)?;
    }
    let keyring = Arc::new(keyring);
    // With caching off (0) the keys are still reloaded, four times a second.
    let key_reload = settings
        .cache_ttl()
        .max(std::time::Duration::from_millis(250));
    keys::follow_stored_keys(store.clone(), &keyring, key_reload);
    let redis = settings
        .redis_url
        .as_ref()
        .map(|url| redis_connection::connect(url.expose()))
        .transpose()
        .map_err(StartError::Redis)?;
    let cvc_store: Arc<dyn cvc::CvcStore> = match &redis {
        Some(connection) => {
            let redis = RedisCvcStore::new(
                connection.clone(),
                &settings.redis_key_prefix,
                settings.test_cvc_sessions_per_project,
            );
            // Not fatal (everything without a CVC still works, and the store reconnects by
            // itself), but said at start rather than found in /readyz later.
            if let Err(e) = cvc::CvcStore::ping(&redis).await {
                let warning = format!(
                    "the CVC session store (Redis) is unreachable: {}; calls that need a CVC \
                     session answer 503 until it is back",
                    error_chain::chain(&e)
                );
                tracing::warn!("{warning}");
                eprintln!("cardvault: {warning}");
            }
            Arc::new(redis)
        }
        None => MemoryCvcStore::start(CVC_SWEEP_INTERVAL, settings.test_cvc_sessions_per_project),
    };
    let cvc = CvcSessions::new(cvc_store, keyring.clone());
    let destinations = Arc::new(Destinations::new(
        DestinationSettings {
            rules: settings.destination_rules(),
            allowlist: settings.destination_allowlist()?,
            require_allowlist: settings.require_destination_allowlist,
            cache_ttl: settings.cache_ttl(),
            lookup,
        },
        store.clone(),
        keyring.clone(),
    ));
    // Calls are served on threads of their own (see `serving_threads`, always at least one):
    // each uses processor connections (`UpstreamClient`) and an audit chain of its own thread's.
    let upstream = UpstreamClient::new(UpstreamSettings {
        resolver: destinations.resolver(),
        connect_timeout: settings.upstream_connect_timeout(),
        total_timeout: settings.upstream_timeout(),
        max_response_bytes: settings.max_response_bytes,
        extra_ca_file: settings.upstream_ca_file.as_deref(),
    })?;
    let audit = audit::AuditLog::start(
        store.clone(),
        keyring.clone(),
        "serve",
        audit::ChainPerThread(true),
    )
    .await?;
    // Installed only when exposed: until then every recording site is a no-op.
    let metrics = settings.metrics_enabled().then(|| {
        let scraper =
            crate::metrics::Scraper::new(crate::metrics::install(), store.clone(), cvc.clone());
        Arc::new(api::metrics::MetricsAccess::new(
            scraper,
            settings.metrics_token.as_ref(),
        ))
    });
    let rate_limits = settings.rate_limits();
    // With Redis, every instance draws on the same budgets.
    let rate_limit_store: Option<Arc<dyn limits::rate::RateLimitStore>> =
        match (rate_limits.is_off(), redis) {
            (true, _) => None,
            (false, Some(connection)) => Some(Arc::new(limits::rate::RedisRateLimits::new(
                connection,
                &settings.redis_key_prefix,
                rate_limits,
            ))),
            (false, None) => Some(limits::rate::MemoryRateLimits::start(&rate_limits)),
        };
    let idempotency =
        idempotency::Idempotency::new(store.clone(), keyring.clone(), settings.idempotency_ttl());
    idempotency.sweep_expired();
    Ok(AppState::new(api::Handles {
        metrics,
        audit,
        idempotency,
        caches: Arc::new(api::Caches::new(settings.cache_ttl())),
        collect: Arc::new(collect::Collect::new(
            store.clone(),
            keyring.clone(),
            settings.collect_session_ttl(),
            settings.cache_ttl(),
        )),
        store,
        keyring,
        cvc,
        destinations,
        upstream,
        rate_limits: limits::rate::RateLimits::new(rate_limit_store),
        policy: Arc::new(RequestPolicy {
            cvc_ttl: settings.cvc_ttl(),
            max_in_flight_requests: settings.max_in_flight_requests,
            max_request_bytes: settings.max_request_bytes,
            body_read_timeout: settings.client_read_timeout(),
            token_retention: settings.token_retention(),
        }),
    }))
}

/// Serves the API on `listener` until `shutdown` completes, then lets in-flight requests finish.
///
/// # Errors
/// [`StartError`] if the vault cannot be opened (not initialized, store, keys, CVC store,
/// upstream client) or the listener fails.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    ready: impl FnOnce(Endpoint) + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve_with_lookup(listener, settings, Arc::new(SystemLookup), ready, shutdown).await
}

/// As [`serve`], resolving destination names through `lookup`: the seam through which
/// in-process tests put a resolver of their own (e.g. a hostile DNS) under the real server.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_lookup(
    listener: TcpListener,
    settings: Settings,
    lookup: Arc<dyn NameLookup>,
    ready: impl FnOnce(Endpoint) + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    warn_about_relaxations(&settings);
    let tls = settings
        .tls_files()
        .map(server_tls::ServerTls::load)
        .transpose()?
        .map(Arc::new);
    let state = build_state_with(&settings, lookup).await?;
    // Runs while the vault serves; dropped (stopped) when it returns.
    let _sweeper = tokens::sweeper::start(state.store.clone(), settings.token_sweep_interval());
    let _metrics_listener = match (settings.metrics_listen, &state.metrics) {
        (Some(addr), Some(access)) => Some(
            api::metrics::serve_own_listener(
                addr,
                access.scraper.clone(),
                settings.connection_limits(),
            )
            .await?,
        ),
        _ => None,
    };
    let app = api::router(state);
    let endpoint = Endpoint {
        addr: listener.local_addr()?,
        https: tls.is_some(),
    };
    if !endpoint.https && !endpoint.addr.ip().is_loopback() {
        tracing::warn!(
            addr = %endpoint.addr,
            "serving plain HTTP on a non-loopback address: keys and card data cross the network \
             unencrypted unless a TLS-terminating proxy sits in front (or set tls_cert_file and tls_key_file)"
        );
    }
    let acceptor = tls.map(|tls| {
        let acceptor = tls.acceptor();
        tls.watch();
        acceptor
    });
    // Only now, with the database open, the keys loaded and the routes built, is the vault
    // ready: whoever waits for this (a harness, a supervisor) may send requests.
    ready(endpoint);
    tracing::info!(%endpoint, "cardvault listening");
    let limits = settings.connection_limits().fit_to_open_file_limit();
    http_server::run(listener, app, limits, acceptor, shutdown).await?;
    tracing::info!("cardvault stopped");
    Ok(())
}

/// Testing relaxations are announced on stderr directly as well as in the log, so no log level
/// or filter (a misconfigured `RUST_LOG` included) can hide them.
fn warn_about_relaxations(settings: &Settings) {
    let mut warnings = Vec::new();
    if settings.allow_private_destinations {
        warnings.push(
            "DANGER: allow_private_destinations is on: the proxy may reach loopback, private and \
             IP-literal destinations on any port. For local testing only, never in production.",
        );
    }
    if settings.allow_http_destinations {
        warnings.push(
            "DANGER: allow_http_destinations is on: card data may be sent without TLS. \
             For local testing only, never in production.",
        );
    }
    for warning in warnings {
        tracing::warn!("{warning}");
        eprintln!("cardvault: {warning}");
    }
}
