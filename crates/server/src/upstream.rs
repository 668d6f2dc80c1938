//! The outbound side: one pooled HTTPS client for every processor, a resolver that refuses
//! non-public addresses, timeouts and a response size cap.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cardvault_core::destination::DestinationRules;
use http::{HeaderMap, Method, StatusCode};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

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
}

pub struct UpstreamSettings<'a> {
    pub rules: DestinationRules,
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

/// One shared client: connections are pooled per host and reused across requests.
#[derive(Clone)]
pub struct UpstreamClient {
    client: reqwest::Client,
    resolver: Arc<PolicyResolver>,
    max_response_bytes: usize,
}

impl UpstreamClient {
    /// # Errors
    /// [`UpstreamError::Setup`] when the extra CA file cannot be read or the client not built.
    pub fn new(settings: UpstreamSettings<'_>) -> Result<Self, UpstreamError> {
        let tls = tls_config(settings.extra_ca_file)?;
        let resolver = Arc::new(PolicyResolver {
            rules: settings.rules,
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(resolver.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.total_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Setup(e.to_string()))?;
        Ok(Self {
            client,
            resolver,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// Resolves the destination and checks every address, without connecting, so a refused
    /// destination fails before a CVC session is consumed. The connection itself resolves
    /// through the same check, so an answer that changes in between cannot slip through.
    pub async fn check_destination(&self, url: &Url) -> Result<(), UpstreamError> {
        match url.host() {
            Some(url::Host::Domain(name)) => self.resolver.resolve_checked(name).await.map(drop),
            Some(url::Host::Ipv4(ip)) => self.resolver.check_ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => self.resolver.check_ip(ip.into()),
            None => Err(UpstreamError::Unresolvable),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut request = self.client.request(method.clone(), url).headers(headers);
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
            Self::NonPublicAddress | Self::Unresolvable | Self::Unreachable(_) | Self::Setup(_) => {
                false
            }
            Self::Timeout { sent } => *sent,
            Self::Failed(_) | Self::TooLarge(_) => true,
        }
    }
}

fn classify(e: reqwest::Error) -> UpstreamError {
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
    if e.is_connect() {
        UpstreamError::Unreachable(message)
    } else {
        UpstreamError::Failed(message)
    }
}

fn tls_config(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, UpstreamError> {
    let setup = |e: String| UpstreamError::Setup(e);
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
        let mut count = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| setup(format!("bad certificate in {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| setup(format!("unusable certificate in {}: {e}", path.display())))?;
            count += 1;
        }
        if count == 0 {
            return Err(setup(format!("no certificate in {}", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Resolves names with the system resolver and refuses the lot if any address is not public.
pub struct PolicyResolver {
    rules: DestinationRules,
}

impl PolicyResolver {
    fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), UpstreamError> {
        if self.rules.allows_address(ip) {
            Ok(())
        } else {
            Err(UpstreamError::NonPublicAddress)
        }
    }

    async fn resolve_checked(&self, name: &str) -> Result<Vec<SocketAddr>, UpstreamError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|_| UpstreamError::Unresolvable)?
            .collect();
        if addrs.is_empty() {
            return Err(UpstreamError::Unresolvable);
        }
        // One bad address spoils the answer: a mixed answer is how rebinding attacks start.
        for addr in &addrs {
            self.check_ip(addr.ip())?;
        }
        Ok(addrs)
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.rules.clone();
        Box::pin(async move {
            let resolver = PolicyResolver { rules };
            let addrs = resolver.resolve_checked(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
