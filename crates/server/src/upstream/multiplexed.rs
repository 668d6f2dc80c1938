//! HTTP/2 to processors, written by the calling task itself: one multiplexed connection per
//! processor origin and TLS profile on each thread, and a request's headers and body queued
//! into it together, so they leave in one write and the answer wakes the caller directly.
//!
//! The generic client (hyper's) hands a request to the connection's task through a channel,
//! waits for stream capacity in a task of its own before the body may follow (so the headers
//! and the body go out in two writes), and hands the answer back through another task: three
//! wake-ups and a write per call that this path does not have.
//!
//! A processor that does not offer `h2` by ALPN is remembered for a while and served by the
//! generic client ([`Routed::NotHttp2`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex as AsyncMutex;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use super::decoding;
use super::{TlsProfile, UpstreamError, UpstreamResponse};
use crate::destinations::PolicyResolver;

/// hyper's HTTP/2 client settings, kept so processors see the same connection as before.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// A connection unused this long is replaced rather than trusted (as the generic client's pool).
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// How long a processor that answered ALPN without `h2` is left to the generic client.
const HTTP1_MEMORY: Duration = Duration::from_secs(3600);
/// Bound on the origins one thread keeps a connection (or a memory) for.
const MAX_ORIGINS: usize = 256;

/// How a call went on this path.
pub(super) enum Routed {
    Done(Result<UpstreamResponse, UpstreamError>),
    /// The processor does not speak HTTP/2: nothing was sent; the caller sends another way.
    NotHttp2,
}

/// Settings every connection is made with.
pub(super) struct Dialer {
    pub roots: rustls::RootCertStore,
    pub resolver: Arc<PolicyResolver>,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
}

/// Each thread's connections, by origin.
pub(super) struct Connections {
    dialer: Dialer,
    threads: thread_local::ThreadLocal<std::sync::Mutex<HashMap<OriginKey, Arc<Origin>>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct OriginKey {
    profile: Option<String>,
    host: String,
    port: u16,
}

/// One origin on one thread. The lock is held while connecting, so callers arriving meanwhile
/// wait for that connection instead of opening their own.
type Origin = AsyncMutex<State>;

enum State {
    Unknown,
    Open(Open),
    Http1Until(Instant),
}

struct Open {
    sender: SendRequest<Bytes>,
    /// Set by the connection's task when it ends (closed by the processor, failed), or by a
    /// call the connection could not carry.
    ended: Arc<AtomicBool>,
    last_used: Instant,
}

impl Open {
    fn usable(&self, now: Instant) -> bool {
        !self.ended.load(Ordering::Acquire) && now.duration_since(self.last_used) < IDLE_LIMIT
    }

    fn checkout(&self) -> Checkout {
        Checkout {
            sender: self.sender.clone(),
            ended: self.ended.clone(),
        }
    }
}

/// One call's hold on a connection.
struct Checkout {
    sender: SendRequest<Bytes>,
    ended: Arc<AtomicBool>,
}

/// Why a connection attempt gave nothing to send on.
enum Dialed {
    Http2(Open),
    NotHttp2,
}

impl Connections {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            threads: thread_local::ThreadLocal::new(),
        }
    }

    /// Sends `body` to `url` over HTTP/2 and reads the answer, within the total timeout.
    pub async fn exchange(
        &self,
        profile: Option<&TlsProfile>,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Routed {
        let mut sent = false;
        let call = self.exchange_untimed(profile, method, url, headers, body, &mut sent);
        match tokio::time::timeout(self.dialer.total_timeout, call).await {
            Ok(routed) => routed,
            Err(_) => Routed::Done(Err(UpstreamError::Timeout { sent })),
        }
    }

    async fn exchange_untimed(
        &self,
        profile: Option<&TlsProfile>,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
        sent: &mut bool,
    ) -> Routed {
        let request = match request_head(method, url, headers, body) {
            Ok(request) => request,
            Err(e) => return Routed::Done(Err(e)),
        };
        let Some(origin) = self.origin(profile, url) else {
            return Routed::Done(Err(UpstreamError::Unresolvable));
        };
        // A connection the processor closed between two calls refuses the stream before
        // anything is sent: such a call is tried once more on a new connection.
        let mut retried = false;
        loop {
            let checkout = match self.checkout(&origin, profile, url).await {
                Ok(Some(checkout)) => checkout,
                Ok(None) => return Routed::NotHttp2,
                Err(e) => return Routed::Done(Err(e)),
            };
            match self
                .send_on(checkout.sender, request.clone(), body.clone(), sent)
                .await
            {
                Err(Attempt::NotSent(e)) => {
                    // Whoever checks the origin out next opens a new connection.
                    checkout.ended.store(true, Ordering::Release);
                    if retried {
                        return Routed::Done(Err(UpstreamError::Unreachable(e.to_string())));
                    }
                    retried = true;
                }
                Err(Attempt::Failed(e)) => return Routed::Done(Err(e)),
                Ok(answer) => return Routed::Done(Ok(answer)),
            }
        }
    }

    /// This thread's entry for the URL's origin (`None` for a URL without a host).
    fn origin(&self, profile: Option<&TlsProfile>, url: &Url) -> Option<Arc<Origin>> {
        let key = OriginKey {
            profile: profile.map(|p| p.cache_key.clone()),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        };
        let mut origins = self
            .threads
            .get_or_default()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(origin) = origins.get(&key) {
            return Some(origin.clone());
        }
        if origins.len() >= MAX_ORIGINS {
            // Entries in use stay alive through their callers' references; the rest reconnect.
            origins.clear();
        }
        let origin = Arc::new(AsyncMutex::new(State::Unknown));
        origins.insert(key, origin.clone());
        Some(origin)
    }

    /// A usable connection: the kept one, else a new one. `None` when the processor does not
    /// speak HTTP/2.
    async fn checkout(
        &self,
        origin: &Origin,
        profile: Option<&TlsProfile>,
        url: &Url,
    ) -> Result<Option<Checkout>, UpstreamError> {
        let mut state = origin.lock().await;
        let now = Instant::now();
        match &mut *state {
            State::Open(open) if open.usable(now) => {
                open.last_used = now;
                return Ok(Some(open.checkout()));
            }
            State::Http1Until(until) if now < *until => return Ok(None),
            _ => {}
        }
        *state = State::Unknown;
        let dialed = tokio::time::timeout(self.dialer.connect_timeout, self.dial(profile, url))
            .await
            .map_err(|_| UpstreamError::Timeout { sent: false })??;
        match dialed {
            Dialed::Http2(open) => {
                let checkout = open.checkout();
                *state = State::Open(open);
                Ok(Some(checkout))
            }
            Dialed::NotHttp2 => {
                *state = State::Http1Until(now + HTTP1_MEMORY);
                Ok(None)
            }
        }
    }

    /// Connects to the first checked address that answers, over TLS, and starts HTTP/2 if the
    /// processor chose it by ALPN.
    async fn dial(&self, profile: Option<&TlsProfile>, url: &Url) -> Result<Dialed, UpstreamError> {
        let (addresses, server_name) = self.addresses(url).await?;
        let port = url
            .port_or_known_default()
            .ok_or(UpstreamError::Unresolvable)?;
        let tcp = connect_first(&addresses, port).await?;
        let config = super::tls::client_config(&self.dialer.roots, profile)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("TLS handshake: {e}")))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Dialed::NotHttp2);
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("HTTP/2 handshake: {e}")))?;
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        // Driven on this thread: the calls that use it are this thread's.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "processor connection ended");
            }
            flag.store(true, Ordering::Release);
        });
        Ok(Dialed::Http2(Open {
            sender,
            ended,
            last_used: Instant::now(),
        }))
    }

    /// The URL's checked addresses (through the destination gate's resolver, as every
    /// connection) and the name the certificate must carry.
    async fn addresses(
        &self,
        url: &Url,
    ) -> Result<(Arc<[IpAddr]>, ServerName<'static>), UpstreamError> {
        match url.host() {
            Some(Host::Domain(name)) => {
                let addresses = self.dialer.resolver.resolve(name).await?;
                let server_name = ServerName::try_from(name.to_owned())
                    .map_err(|e| UpstreamError::Unbuildable(e.to_string()))?;
                Ok((addresses, server_name))
            }
            Some(Host::Ipv4(ip)) => self.literal(url, ip.into()).await,
            Some(Host::Ipv6(ip)) => self.literal(url, ip.into()).await,
            None => Err(UpstreamError::Unresolvable),
        }
    }

    async fn literal(
        &self,
        url: &Url,
        ip: IpAddr,
    ) -> Result<(Arc<[IpAddr]>, ServerName<'static>), UpstreamError> {
        self.dialer.resolver.check_url(url).await?;
        Ok((Arc::from([ip]), ServerName::IpAddress(ip.into())))
    }

    /// One exchange on `sender`'s connection: the headers and the whole body are queued before
    /// the connection's task runs, so both leave in one write.
    async fn send_on(
        &self,
        sender: SendRequest<Bytes>,
        request: Request<()>,
        body: Bytes,
        sent: &mut bool,
    ) -> Result<UpstreamResponse, Attempt> {
        let mut sender = sender.ready().await.map_err(Attempt::NotSent)?;
        let end_of_stream = body.is_empty();
        let (answer, mut stream) = sender
            .send_request(request, end_of_stream)
            .map_err(Attempt::NotSent)?;
        *sent = true;
        if !end_of_stream {
            // Beyond the stream's window h2 keeps the rest and sends it as the window opens.
            stream.send_data(body, true).map_err(Attempt::failed)?;
        }
        let response = answer.await.map_err(Attempt::refused_or_failed)?;
        let (head, mut received) = response.into_parts();
        let limit = self.dialer.max_response_bytes;
        if declared_length(&head.headers).is_some_and(|length| length > limit) {
            return Err(Attempt::Failed(UpstreamError::TooLarge(limit)));
        }
        let mut collected = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(Attempt::failed)?;
            // Gives the window back, or a processor's long answer would stall the connection.
            let _ = received.flow_control().release_capacity(chunk.len());
            if collected.len() + chunk.len() > limit {
                return Err(Attempt::Failed(UpstreamError::TooLarge(limit)));
            }
            collected.extend_from_slice(&chunk);
        }
        let mut headers = head.headers;
        let body =
            decoding::decode(&mut headers, collected.freeze(), limit).map_err(Attempt::Failed)?;
        Ok(UpstreamResponse {
            status: head.status,
            headers,
            body,
        })
    }
}

/// How one attempt on a connection failed.
enum Attempt {
    /// The processor cannot have seen the request (the connection was gone, or it refused the
    /// stream unprocessed).
    NotSent(h2::Error),
    Failed(UpstreamError),
}

impl Attempt {
    fn failed(e: h2::Error) -> Self {
        Self::Failed(UpstreamError::Failed(e.to_string()))
    }

    /// RFC 9113 §8.7: a stream refused with REFUSED_STREAM was not processed.
    fn refused_or_failed(e: h2::Error) -> Self {
        if e.reason() == Some(h2::Reason::REFUSED_STREAM) && e.is_remote() {
            Self::NotSent(e)
        } else {
            Self::failed(e)
        }
    }
}

/// Tries each address in turn; the first that accepts is used.
async fn connect_first(addresses: &[IpAddr], port: u16) -> Result<TcpStream, UpstreamError> {
    let mut last_error = None;
    for ip in addresses {
        match TcpStream::connect(SocketAddr::new(*ip, port)).await {
            Ok(tcp) => {
                // Small requests go out at once instead of waiting on Nagle's algorithm.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(UpstreamError::Unreachable(match last_error {
        Some(e) => format!("connect: {e}"),
        None => "no address to connect to".to_owned(),
    }))
}

/// The request's head as HTTP/2 carries it: the URL's scheme, authority and path as
/// pseudo-headers, the caller's headers, and what the generic client would add.
fn request_head(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Request<()>, UpstreamError> {
    let uri: Uri = url
        .as_str()
        .parse()
        .map_err(|e: http::uri::InvalidUri| UpstreamError::Unbuildable(e.to_string()))?;
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let head = request.headers_mut();
    head.reserve(headers.len() + 3);
    for (name, value) in headers {
        // HTTP/2 forbids connection-specific fields; the caller's hop-by-hop filter already
        // dropped them, this keeps a stray one from failing the whole request.
        if !is_connection_specific(name) {
            head.append(name.clone(), value.clone());
        }
    }
    if !head.contains_key(ACCEPT) {
        head.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
    head.insert(
        ACCEPT_ENCODING,
        HeaderValue::from_static(decoding::ACCEPTED),
    );
    if !body.is_empty() || has_payload_semantics(method) {
        head.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(request)
}

fn is_connection_specific(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
    [CONNECTION, TRANSFER_ENCODING, UPGRADE, TE, HOST].contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// Methods whose empty body still gets `content-length: 0` (as hyper does).
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn head(method: Method, headers: &[(&str, &str)], body: &'static [u8]) -> Request<()> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let url = Url::parse("https://pay.example:8443/v1/charges?expand=source").unwrap();
        request_head(&method, &url, &map, &Bytes::from_static(body)).unwrap()
    }

    #[test]
    fn the_head_carries_the_url_and_the_callers_headers() {
        let request = head(
            Method::POST,
            &[("authorization", "Bearer sk"), ("x-a", "1"), ("x-a", "2")],
            b"{}",
        );
        assert_eq!(
            request.uri().to_string(),
            "https://pay.example:8443/v1/charges?expand=source"
        );
        let headers = request.headers();
        assert_eq!(headers["authorization"], "Bearer sk");
        assert_eq!(headers.get_all("x-a").iter().count(), 2);
        assert_eq!(headers[ACCEPT], "*/*");
        assert_eq!(headers[ACCEPT_ENCODING], "gzip,deflate,br");
        assert_eq!(headers[CONTENT_LENGTH], "2");
    }

    #[test]
    fn fields_http2_forbids_are_left_out_and_the_callers_accept_kept() {
        let request = head(
            Method::POST,
            &[
                ("connection", "close"),
                ("keep-alive", "5"),
                ("te", "gzip"),
                ("upgrade", "h2c"),
                ("host", "elsewhere.example"),
                ("accept", "application/json"),
                ("accept-encoding", "identity"),
            ],
            b"",
        );
        let headers = request.headers();
        for name in ["connection", "keep-alive", "te", "upgrade", "host"] {
            assert!(headers.get(name).is_none(), "{name}");
        }
        assert_eq!(headers[ACCEPT], "application/json");
        // The vault undoes these codings itself: the caller cannot ask for others.
        assert_eq!(headers[ACCEPT_ENCODING], "gzip,deflate,br");
    }

    #[test]
    fn an_empty_body_has_a_length_only_where_the_method_defines_a_payload() {
        for (method, length) in [
            (Method::POST, Some("0")),
            (Method::PUT, Some("0")),
            (Method::PATCH, Some("0")),
            (Method::GET, None),
            (Method::DELETE, None),
            (Method::HEAD, None),
        ] {
            let request = head(method.clone(), &[], b"");
            assert_eq!(
                request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap()),
                length,
                "{method}"
            );
        }
        assert_eq!(
            head(Method::DELETE, &[], b"abc").headers()[CONTENT_LENGTH],
            "3"
        );
    }
}
