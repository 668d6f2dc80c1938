//! The outbound side: pooled HTTPS connections to processors (HTTP/2 written directly where the
//! processor offers it, the generic client otherwise), a resolver that refuses non-public
//! addresses, timeouts and a response size cap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use url::Url;
use zeroize::Zeroize;

mod decoding;
mod multiplexed;
mod tls;

pub use tls::{TlsProfile, add_pem_roots, check_client_identity};

use crate::cache::TtlCache;
use crate::destinations::{ConnectResolver, PolicyResolver};
use multiplexed::{Connections, Routed};

#[derive(Debug, Clone, thiserror::Error)]
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
    /// Every connection resolves names through the destination gate's resolver.
    pub resolver: Arc<PolicyResolver>,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
    pub extra_ca_file: Option<&'a Path>,
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
///
/// Each is one client per thread: a pooled connection is driven by a task on the thread that
/// opened it, so a call on a serving thread (see [`crate::serving_threads`]) sends and reads on
/// its own thread instead of waking another for every exchange.
#[derive(Clone)]
pub struct UpstreamClient {
    default: Arc<PerThread>,
    profiled: Arc<TtlCache<String, Arc<PerThread>>>,
    builder: Arc<ClientBuilder>,
    max_response_bytes: usize,
    /// HTTPS processors that offer HTTP/2 are called through these; the clients above serve the
    /// rest (plain HTTP where allowed, processors that answer ALPN with HTTP/1.1 only).
    http2: Arc<Connections>,
}

/// A client for each thread that sends.
type PerThread = thread_local::ThreadLocal<reqwest::Client>;

/// What every client and connection is built from.
struct ClientBuilder {
    roots: rustls::RootCertStore,
    resolver: Arc<PolicyResolver>,
    connect_timeout: Duration,
    total_timeout: Duration,
}

/// Bound on kept per-profile clients (each with its connection pool), and how long one is kept.
const MAX_PROFILE_CLIENTS: u64 = 256;
const PROFILE_CLIENT_TTL: Duration = Duration::from_secs(3600);

impl UpstreamClient {
    /// # Errors
    /// [`UpstreamError::Setup`] when the extra CA file cannot be read or the client not built.
    pub fn new(settings: UpstreamSettings<'_>) -> Result<Self, UpstreamError> {
        let builder = ClientBuilder {
            roots: tls::roots(settings.extra_ca_file)?,
            resolver: settings.resolver,
            connect_timeout: settings.connect_timeout,
            total_timeout: settings.total_timeout,
        };
        // Built now, on this thread, so a TLS setup that cannot work stops the start.
        let default = PerThread::default();
        default.get_or_try(|| builder.build(None))?;
        let builder = Arc::new(builder);
        Ok(Self {
            default: Arc::new(default),
            profiled: Arc::new(TtlCache::new(PROFILE_CLIENT_TTL, MAX_PROFILE_CLIENTS)),
            http2: Arc::new(Connections::new(
                builder.clone(),
                settings.max_response_bytes,
            )),
            builder,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// The client for a TLS profile, built once and kept (its pool with it).
    fn client_for(&self, profile: Option<&TlsProfile>) -> Result<reqwest::Client, UpstreamError> {
        let Some(profile) = profile else {
            return self.this_threads(&self.default, None);
        };
        let clients = match self.profiled.get(&profile.cache_key) {
            Some(clients) => clients,
            None => {
                let clients = Arc::new(PerThread::default());
                self.profiled
                    .insert(profile.cache_key.clone(), clients.clone());
                clients
            }
        };
        self.this_threads(&clients, Some(profile))
    }

    /// This thread's client of `clients`, built if there is none yet.
    fn this_threads(
        &self,
        clients: &PerThread,
        profile: Option<&TlsProfile>,
    ) -> Result<reqwest::Client, UpstreamError> {
        clients.get_or_try(|| self.builder.build(profile)).cloned()
    }

    /// Sends the filled body and reads the answer within the size cap. The body held card
    /// data: it is wiped once the exchange is over.
    pub async fn send(
        &self,
        profile: Option<&TlsProfile>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let body = Bytes::from(body);
        let answer = self
            .exchange(profile, method, url, headers, body.clone())
            .await;
        wipe(body);
        answer
    }

    async fn exchange(
        &self,
        profile: Option<&TlsProfile>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = std::time::Instant::now();
        if url.scheme() == "https" {
            match self
                .http2
                .exchange(profile, &method, &url, &headers, &body)
                .await
            {
                Routed::Done(answer) => return answer,
                Routed::NotHttp2 => {}
            }
        }
        // Boxed: reqwest's futures are kilobytes, and held inline they would be part of every
        // call's future, HTTP/2 ones included, copied at each await that moves it.
        Box::pin(self.exchange_http1(profile, method, url, headers, body, started)).await
    }

    /// The exchange with a processor that offers no HTTP/2 (or over plain HTTP).
    async fn exchange_http1(
        &self,
        profile: Option<&TlsProfile>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
        started: std::time::Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let client = self.client_for(profile)?;
        // A look at whether the processor speaks HTTP/2 counts against the call's time.
        let left = self.builder.total_timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(UpstreamError::Timeout { sent: false });
        }
        let mut request = client
            .request(method.clone(), url)
            .headers(headers)
            .timeout(left);
        if !body.is_empty() || method != Method::GET {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let mut headers = std::mem::take(response.headers_mut());
        let mut body = CappedBody::new(self.max_response_bytes, response.content_length())?;
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            body.push(&chunk)?;
        }
        // The client undid what it could (lowercase `gzip`, `deflate`, `br`); the rest is
        // undone or refused by the same rules as on the HTTP/2 path.
        let body = body.decoded(&mut headers)?;
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }
}

/// A processor's answer as it arrives, refused once it is past the size cap, then decoded
/// ([`decoding::decode`], within the same cap).
struct CappedBody {
    limit: usize,
    bytes: BytesMut,
}

impl CappedBody {
    /// Refuses at once an answer whose declared length is past the cap.
    fn new(limit: usize, declared: Option<u64>) -> Result<Self, UpstreamError> {
        if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
            return Err(UpstreamError::TooLarge(limit));
        }
        Ok(Self {
            limit,
            bytes: BytesMut::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), UpstreamError> {
        if self.bytes.len() + chunk.len() > self.limit {
            return Err(UpstreamError::TooLarge(self.limit));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn decoded(self, headers: &mut HeaderMap) -> Result<Bytes, UpstreamError> {
        decoding::decode(headers, self.bytes.freeze(), self.limit)
    }
}

/// Zeroes the sent body's memory once nothing else holds it (the HTTP client drops its
/// reference when the exchange ends).
fn wipe(body: Bytes) {
    if let Ok(mut body) = body.try_into_mut() {
        body.as_mut().zeroize();
    }
}

impl ClientBuilder {
    fn build(&self, profile: Option<&TlsProfile>) -> Result<reqwest::Client, UpstreamError> {
        let tls = tls::client_config(&self.roots, profile)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(ConnectResolver(self.resolver.clone()))
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
