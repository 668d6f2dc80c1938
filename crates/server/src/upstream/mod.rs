//! The outbound side: one pooled HTTPS client for every processor, a resolver that refuses
//! non-public addresses, timeouts and a response size cap.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cardvault_core::destination::DestinationRules;
use http::{HeaderMap, Method, StatusCode};
use url::Url;

mod resolver;
mod tls;

pub use resolver::{NameLookup, PolicyResolver, SystemLookup};
pub use tls::{TlsProfile, add_pem_roots, check_client_identity};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the destination resolves to a non-public address")]
    NonPublicAddress,
    #[error("the destination name does not resolve")]
    Unresolvable,
    #[error("no connection to the upstream (nothing was sent): {0}")]
    Unreachable(String),
    #[error("the upstream exchange failed: {0}")]
    Failed(String),
    #[error("the upstream did not answer in time")]
    Timeout {
        /// False when the connection itself timed out, so the request never left.
        sent: bool,
    },
    #[error("the upstream response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("upstream client setup: {0}")]
    Setup(String),
    #[error("the request could not be built (nothing was sent): {0}")]
    Unbuildable(String),
}

pub struct UpstreamSettings<'a> {
    pub rules: DestinationRules,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
    pub extra_ca_file: Option<&'a Path>,
    /// How names are resolved (the system resolver in production, a fake in tests).
    pub lookup: Arc<dyn NameLookup>,
}

/// What the processor answered.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Pooled clients: one shared by every destination with default TLS settings, and one per
/// project TLS profile (its own roots or client certificate), so a pooled connection is only
/// ever reused with the TLS settings it was made with.
#[derive(Clone)]
pub struct UpstreamClient {
    default: reqwest::Client,
    profiled: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    roots: Arc<rustls::RootCertStore>,
    resolver: Arc<PolicyResolver>,
    connect_timeout: Duration,
    total_timeout: Duration,
    max_response_bytes: usize,
}

/// Bound on cached per-profile clients; beyond it the cache starts over.
const MAX_PROFILE_CLIENTS: usize = 256;

impl UpstreamClient {
    /// # Errors
    /// [`UpstreamError::Setup`] when the extra CA file cannot be read or the client not built.
    pub fn new(settings: UpstreamSettings<'_>) -> Result<Self, UpstreamError> {
        let roots = Arc::new(tls::roots(settings.extra_ca_file)?);
        let resolver = Arc::new(PolicyResolver::new(settings.rules, settings.lookup));
        let mut upstream = Self {
            default: reqwest::Client::new(),
            profiled: Arc::new(Mutex::new(HashMap::new())),
            roots,
            resolver,
            connect_timeout: settings.connect_timeout,
            total_timeout: settings.total_timeout,
            max_response_bytes: settings.max_response_bytes,
        };
        upstream.default = upstream.build_client(None)?;
        Ok(upstream)
    }

    fn build_client(&self, profile: Option<&TlsProfile>) -> Result<reqwest::Client, UpstreamError> {
        let tls = tls::client_config(&self.roots, profile)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(resolver::ConnectResolver(self.resolver.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(self.total_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Setup(e.to_string()))
    }

    /// The client for a TLS profile, built once and kept (its pool with it).
    fn client_for(&self, profile: Option<&TlsProfile>) -> Result<reqwest::Client, UpstreamError> {
        let Some(profile) = profile else {
            return Ok(self.default.clone());
        };
        let mut clients = self.profiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&profile.cache_key) {
            return Ok(client.clone());
        }
        let client = self.build_client(Some(profile))?;
        if clients.len() >= MAX_PROFILE_CLIENTS {
            clients.clear();
        }
        clients.insert(profile.cache_key.clone(), client.clone());
        Ok(client)
    }

    /// Resolves the destination and checks every address, without connecting, so a refused
    /// destination fails before a CVC session is consumed. The connection itself resolves
    /// through the same check, so an answer that changes in between cannot slip through.
    pub async fn check_destination(&self, url: &Url) -> Result<(), UpstreamError> {
        self.resolver.check_url(url).await
    }

    pub async fn send(
        &self,
        profile: Option<&TlsProfile>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let client = self.client_for(profile)?;
        let mut request = client.request(method.clone(), url).headers(headers);
        if !body.is_empty() || method != Method::GET {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if let Some(length) = response.content_length()
            && length > self.max_response_bytes as u64
        {
            return Err(UpstreamError::TooLarge(self.max_response_bytes));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(UpstreamError::TooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

impl UpstreamError {
    /// Whether the processor may have received the request: callers decide on retries by it.
    pub fn request_sent(&self) -> bool {
        match self {
            Self::NonPublicAddress
            | Self::Unresolvable
            | Self::Unreachable(_)
            | Self::Setup(_)
            | Self::Unbuildable(_) => false,
            Self::Timeout { sent } => *sent,
            Self::Failed(_) | Self::TooLarge(_) => true,
        }
    }
}

fn classify(e: reqwest::Error) -> UpstreamError {
    // The URL may carry a processor's credentials in its query: never into a log line.
    let e = e.without_url();
    if e.is_timeout() {
        return UpstreamError::Timeout {
            sent: !e.is_connect(),
        };
    }
    // The source chain says why (refused, reset, TLS); it names hosts, never card data.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_builder() {
        UpstreamError::Unbuildable(message)
    } else if e.is_connect() {
        UpstreamError::Unreachable(message)
    } else {
        UpstreamError::Failed(message)
    }
}
