//! HTTP/2 to processors, written by the calling task itself: one multiplexed connection per
//! processor origin and TLS profile on each thread, and a request's headers and body queued
//! into it together, so they leave in one write and the answer wakes the caller directly.
//!
//! The generic client (hyper's) hands a request to the connection's task through a channel,
//! waits for stream capacity in a task of its own before the body may follow (h2 gives none to
//! a stream not yet open, so the headers and the body go out in two writes), and hands the
//! answer back through a task and a channel: hand-offs and a write per call that this path
//! does not have (docs/benchmarks.md, issue 17's eighth step).
//!
//! A processor that does not offer `h2` by ALPN is remembered for a while and served by the
//! generic client ([`Routed::NotHttp2`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex as AsyncMutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::{Host, Url};

use super::{CappedBody, ClientBuilder, TlsProfile, UpstreamError, UpstreamResponse, decoding};
use crate::cache::TtlCache;
use crate::idle_looks::IdleLooks;

/// hyper's HTTP/2 client settings, kept so processors see the same connection as before.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// A connection no call has taken for this long (and at most half of it more: see `drive`) is
/// closed, as the generic client's pool closes one after 90 s.
const IDLE_LIMIT: Duration = Duration::from_secs(90);
/// How long a processor that answered ALPN without `h2` is left to the generic client.
const HTTP1_MEMORY: Duration = Duration::from_secs(3600);
/// Bound on the origins one thread keeps a connection (or a memory) for.
const MAX_ORIGINS: usize = 256;
/// TLS settings are built once per profile and kept (with their session cache) this long.
const CONFIG_TTL: Duration = Duration::from_secs(3600);
const MAX_CONFIGS: u64 = 256;

/// How a call went on this path.
pub(super) enum Routed {
    Done(Result<UpstreamResponse, UpstreamError>),
    /// The processor does not speak HTTP/2: nothing was sent; the caller sends another way.
    NotHttp2,
}

/// Each thread's connections, by origin.
pub(super) struct Connections {
    /// The generic client's settings (roots, resolver, timeouts): one source for both paths.
    settings: Arc<ClientBuilder>,
    max_response_bytes: usize,
    /// Past this long since its last call, a connection can have no call in flight.
    idle_limit: Duration,
    /// By profile (`""` for none).
    tls_configs: TtlCache<String, Arc<rustls::ClientConfig>>,
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
    /// The last connection attempt failed: callers that were waiting for it share its error
    /// rather than each trying again in turn.
    Failed {
        at: Instant,
        error: UpstreamError,
    },
}

struct Open {
    sender: SendRequest<Bytes>,
    liveness: Arc<Liveness>,
}

impl Open {
    fn checkout(&self) -> Checkout {
        Checkout {
            sender: self.sender.clone(),
            liveness: self.liveness.clone(),
        }
    }
}

/// What a connection's task and its callers share.
struct Liveness {
    /// Set when the connection's task ends (closed by the processor, failed, idle), or by a
    /// call the connection could not carry.
    ended: AtomicBool,
    /// Set by every call that takes the connection, cleared by its task's idle looks: a flag
    /// rather than a time, so that a call reads no clock for it.
    taken: AtomicBool,
}

impl Liveness {
    fn new() -> Self {
        Self {
            ended: AtomicBool::new(false),
            // The call that opened it takes it.
            taken: AtomicBool::new(true),
        }
    }

    fn touch(&self) {
        self.taken.store(true, Ordering::Relaxed);
    }

    /// Whether a call took the connection since the last look.
    fn taken_since_last_look(&self) -> bool {
        self.taken.swap(false, Ordering::Relaxed)
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

/// Marks the connection ended however its task stops (finished, or dropped with its runtime).
struct EndOnDrop(Arc<Liveness>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// One call's hold on a connection.
struct Checkout {
    sender: SendRequest<Bytes>,
    liveness: Arc<Liveness>,
}

/// What a connection attempt gave.
enum Dialed {
    Http2(Open),
    NotHttp2,
}

impl Connections {
    pub fn new(settings: Arc<ClientBuilder>, max_response_bytes: usize) -> Self {
        let idle_limit = IDLE_LIMIT.max(settings.total_timeout + Duration::from_secs(1));
        Self {
            settings,
            max_response_bytes,
            idle_limit,
            tls_configs: TtlCache::new(CONFIG_TTL, MAX_CONFIGS),
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
        match tokio::time::timeout(self.settings.total_timeout, call).await {
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
        let mut request = match request_head(method, url, headers, body) {
            Ok(request) => Some(request),
            Err(e) => return Routed::Done(Err(e)),
        };
        let Some(origin) = self.origin(profile, url) else {
            return Routed::Done(Err(UpstreamError::Unresolvable));
        };
        // A connection the processor closed or is closing between two calls, or a stream it
        // refused unprocessed, leaves the request unsent: it is tried once more.
        let mut retried = false;
        loop {
            let checkout = match self.checkout(&origin, profile, url).await {
                Ok(Some(checkout)) => checkout,
                Ok(None) => return Routed::NotHttp2,
                Err(e) => return Routed::Done(Err(e)),
            };
            // The head is built again only for the rare second attempt.
            let head = match request.take() {
                Some(head) => head,
                None => match request_head(method, url, headers, body) {
                    Ok(head) => head,
                    Err(e) => return Routed::Done(Err(e)),
                },
            };
            let attempt = self
                .send_on(checkout.sender, head, body.clone(), sent)
                .await;
            match attempt {
                Ok(answer) => return Routed::Done(Ok(answer)),
                Err(Attempt::Failed(e)) => return Routed::Done(Err(e)),
                Err(Attempt::NotSent {
                    error,
                    connection_gone,
                }) => {
                    *sent = false;
                    if connection_gone {
                        // Whoever takes the origin next opens a new connection.
                        checkout.liveness.end();
                    }
                    if retried {
                        return Routed::Done(Err(UpstreamError::Unreachable(error.to_string())));
                    }
                    retried = true;
                }
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
        // The usual case, a kept connection taken without waiting, reads no clock.
        let (mut state, arrived) = match origin.try_lock() {
            Ok(state) => (state, None),
            Err(_) => {
                let arrived = Instant::now();
                (origin.lock().await, Some(arrived))
            }
        };
        if let State::Open(open) = &*state
            && !open.liveness.ended()
        {
            open.liveness.touch();
            return Ok(Some(open.checkout()));
        }
        let now = Instant::now();
        let arrived = arrived.unwrap_or(now);
        match &*state {
            State::Http1Until(until) if now < *until => return Ok(None),
            State::Failed { at, error } if *at >= arrived => return Err(error.clone()),
            _ => {}
        }
        *state = State::Unknown;
        // Boxed: the dial's future (resolution, TCP, the TLS handshake) is kilobytes, and held
        // inline it would be part of every call's future, copied at each await that moves it.
        let dial = Box::pin(self.dial(profile, url));
        let dialed = tokio::time::timeout(self.settings.connect_timeout, dial)
            .await
            .unwrap_or(Err(UpstreamError::Timeout { sent: false }));
        match dialed {
            Ok(Dialed::Http2(open)) => {
                let checkout = open.checkout();
                *state = State::Open(open);
                Ok(Some(checkout))
            }
            Ok(Dialed::NotHttp2) => {
                tracing::info!(
                    host = url.host_str().unwrap_or_default(),
                    "the processor offers no HTTP/2 by ALPN: its calls go over HTTP/1.1"
                );
                *state = State::Http1Until(now + HTTP1_MEMORY);
                Ok(None)
            }
            Err(error) => {
                *state = State::Failed {
                    at: Instant::now(),
                    error: error.clone(),
                };
                Err(error)
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
        let tcp = connect_first(&addresses, port, self.settings.connect_timeout).await?;
        let tls = TlsConnector::from(self.tls_config(profile)?)
            .connect(server_name, tcp)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("TLS handshake: {e}")))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Dialed::NotHttp2);
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("HTTP/2 handshake: {e}")))?;
        tracing::info!(
            host = url.host_str().unwrap_or_default(),
            port,
            "processor connection opened (HTTP/2)"
        );
        let liveness = Arc::new(Liveness::new());
        // Driven on this thread: the calls that use it are this thread's.
        tokio::spawn(drive(connection, liveness.clone(), self.idle_limit));
        Ok(Dialed::Http2(Open { sender, liveness }))
    }

    /// The profile's TLS settings, built on first use and kept (so sessions resume).
    fn tls_config(
        &self,
        profile: Option<&TlsProfile>,
    ) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
        let key = profile.map_or("", |p| p.cache_key.as_str());
        if let Some(config) = self.tls_configs.get(key) {
            return Ok(config);
        }
        let config = Arc::new(super::tls::client_config(&self.settings.roots, profile)?);
        self.tls_configs.insert(key.to_owned(), config.clone());
        Ok(config)
    }

    /// The URL's checked addresses (through the destination gate's resolver, as every
    /// connection) and the name the certificate must carry.
    async fn addresses(
        &self,
        url: &Url,
    ) -> Result<(Arc<[IpAddr]>, ServerName<'static>), UpstreamError> {
        match url.host() {
            Some(Host::Domain(name)) => {
                let addresses = self.settings.resolver.resolve(name).await?;
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
        self.settings.resolver.check_url(url).await?;
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
        let mut sender = sender.ready().await.map_err(Attempt::not_queued)?;
        let end_of_stream = body.is_empty();
        let (answer, mut stream) = sender
            .send_request(request, end_of_stream)
            .map_err(Attempt::not_queued)?;
        *sent = true;
        if !end_of_stream {
            // Beyond the stream's window h2 keeps the rest and sends it as the window opens.
            stream.send_data(body, true).map_err(Attempt::failed)?;
        }
        let response = answer.await.map_err(Attempt::answered_with)?;
        let (head, mut received) = response.into_parts();
        let mut collected =
            CappedBody::new(self.max_response_bytes, declared_length(&head.headers))
                .map_err(Attempt::Failed)?;
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(Attempt::failed)?;
            // Gives the window back, or a processor's long answer would stall the connection.
            let _ = received.flow_control().release_capacity(chunk.len());
            collected.push(&chunk).map_err(Attempt::Failed)?;
        }
        let mut headers = head.headers;
        let body = collected.decoded(&mut headers).map_err(Attempt::Failed)?;
        Ok(UpstreamResponse {
            status: head.status,
            headers,
            body,
        })
    }
}

/// Runs the connection until it ends, or until no call has taken it for `idle_limit` (at most
/// half of it more; then dropping it closes the socket; no call can be in flight on it by
/// then).
async fn drive(
    connection: h2::client::Connection<TlsStream<TcpStream>, Bytes>,
    liveness: Arc<Liveness>,
    idle_limit: Duration,
) {
    let _end = EndOnDrop(liveness.clone());
    tokio::pin!(connection);
    let mut idle = IdleLooks::default();
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "processor connection ended");
                }
                return;
            }
            () = tokio::time::sleep(idle_limit / IdleLooks::PER_LIMIT) => {
                if idle.idle_after_look(!liveness.taken_since_last_look()) {
                    tracing::debug!("idle processor connection closed");
                    return;
                }
            }
        }
    }
}

/// How one attempt on a connection failed.
enum Attempt {
    /// The processor cannot have processed the request.
    NotSent {
        error: h2::Error,
        /// The connection can carry no more calls.
        connection_gone: bool,
    },
    Failed(UpstreamError),
}

impl Attempt {
    fn failed(e: h2::Error) -> Self {
        Self::Failed(UpstreamError::Failed(e.to_string()))
    }

    /// The request could not be queued: the connection is gone, or (an error of h2's own use,
    /// neither from the peer nor I/O) the head was refused.
    fn not_queued(error: h2::Error) -> Self {
        if error.reason().is_none() && !error.is_io() {
            return Self::Failed(UpstreamError::Unbuildable(error.to_string()));
        }
        Self::NotSent {
            error,
            connection_gone: true,
        }
    }

    /// RFC 9113 §8.7: a stream refused with REFUSED_STREAM was not processed; nor was one the
    /// processor's graceful GOAWAY left out (h2 fails only the streams above its last stream
    /// id with it, the rule the generic client retried by).
    fn answered_with(error: h2::Error) -> Self {
        let remote = error.is_remote();
        if remote && error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Self::NotSent {
                error,
                connection_gone: false,
            };
        }
        if remote && error.is_go_away() && error.reason() == Some(h2::Reason::NO_ERROR) {
            return Self::NotSent {
                error,
                connection_gone: true,
            };
        }
        Self::failed(error)
    }
}

/// Tries each address in turn, each with its share of the connect timeout (as the generic
/// client does), so one address that never answers does not take the whole of it.
async fn connect_first(
    addresses: &[IpAddr],
    port: u16,
    connect_timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let share = connect_timeout / u32::try_from(addresses.len().max(1)).unwrap_or(u32::MAX);
    let mut last_error = None;
    for ip in addresses {
        match tokio::time::timeout(share, TcpStream::connect(SocketAddr::new(*ip, port))).await {
            Ok(Ok(tcp)) => {
                // Small requests go out at once instead of waiting on Nagle's algorithm.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last_error = Some(format!("connect: {e}")),
            Err(_) => last_error = Some("connect: timed out".to_owned()),
        }
    }
    Err(UpstreamError::Unreachable(
        last_error.unwrap_or_else(|| "no address to connect to".to_owned()),
    ))
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

fn declared_length(headers: &HeaderMap) -> Option<u64> {
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
    use std::sync::Mutex;

    use cardvault_core::destination::DestinationRules;
    use h2::server::SendResponse;
    use http::HeaderName;
    use tokio::net::TcpListener;

    use super::*;
    use crate::destinations::{PolicyResolver, SystemLookup};

    /// What a scripted processor does with the n-th stream (from 0) of its n-th connection.
    #[derive(Clone, Copy)]
    enum Move {
        Answer,
        /// Answers, then closes the connection gracefully (GOAWAY with NO_ERROR).
        AnswerAndGoAway,
        Refuse(h2::Reason),
    }

    /// An HTTP/2 processor on 127.0.0.1 run by `script(connection, stream)`; records
    /// `(connection, stream)` of every stream it received.
    struct Processor {
        port: u16,
        roots: rustls::RootCertStore,
        seen: Arc<Mutex<Vec<(usize, usize)>>>,
    }

    impl Processor {
        async fn start(script: fn(usize, usize) -> Move) -> Self {
            let rcgen::CertifiedKey { cert, signing_key } =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert.der().clone()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der())
                        .unwrap(),
                )
                .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            tokio::spawn(async move {
                for connection in 0.. {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let record = record.clone();
                    tokio::spawn(async move {
                        let mut h2 = h2::server::handshake(tls).await.unwrap();
                        let mut stream = 0;
                        while let Some(Ok((request, respond))) = h2.accept().await {
                            record.lock().unwrap().push((connection, stream));
                            drop(request);
                            let step = script(connection, stream);
                            stream += 1;
                            play(step, respond);
                            if matches!(step, Move::AnswerAndGoAway) {
                                h2.graceful_shutdown();
                            }
                        }
                    });
                }
            });
            Self { port, roots, seen }
        }

        fn url(&self) -> Url {
            Url::parse(&format!("https://127.0.0.1:{}/charge", self.port)).unwrap()
        }

        fn seen(&self) -> Vec<(usize, usize)> {
            self.seen.lock().unwrap().clone()
        }

        fn connections(&self) -> Connections {
            let rules = DestinationRules {
                allow_private: true,
                ..DestinationRules::default()
            };
            let settings = ClientBuilder {
                roots: self.roots.clone(),
                resolver: Arc::new(PolicyResolver::new(rules, Arc::new(SystemLookup))),
                connect_timeout: Duration::from_secs(5),
                total_timeout: Duration::from_secs(5),
            };
            Connections::new(Arc::new(settings), 1024)
        }
    }

    fn play(step: Move, mut respond: SendResponse<Bytes>) {
        match step {
            Move::Answer | Move::AnswerAndGoAway => {
                let mut body = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                body.send_data(Bytes::from_static(b"ok"), true).unwrap();
            }
            Move::Refuse(reason) => respond.send_reset(reason),
        }
    }

    async fn call(connections: &Connections, url: &Url) -> Result<UpstreamResponse, UpstreamError> {
        let body = Bytes::from_static(b"{}");
        match connections
            .exchange(None, &Method::POST, url, &HeaderMap::new(), &body)
            .await
        {
            Routed::Done(answer) => answer,
            Routed::NotHttp2 => panic!("the processor speaks HTTP/2"),
        }
    }

    #[tokio::test]
    async fn calls_share_one_connection_until_the_processor_closes_it() {
        let processor = Processor::start(|_, stream| {
            if stream == 1 {
                Move::AnswerAndGoAway
            } else {
                Move::Answer
            }
        })
        .await;
        let connections = processor.connections();
        for _ in 0..4 {
            let answer = call(&connections, &processor.url()).await.unwrap();
            assert_eq!(&answer.body[..], b"ok");
        }
        // Two calls on the first connection; the GOAWAY sends the rest to a second one.
        assert_eq!(processor.seen(), [(0, 0), (0, 1), (1, 0), (1, 1)]);
    }

    #[tokio::test]
    async fn a_stream_refused_unprocessed_is_sent_again_on_the_same_connection() {
        let processor = Processor::start(|_, stream| {
            if stream == 0 {
                Move::Refuse(h2::Reason::REFUSED_STREAM)
            } else {
                Move::Answer
            }
        })
        .await;
        let connections = processor.connections();
        let answer = call(&connections, &processor.url()).await.unwrap();
        assert_eq!(&answer.body[..], b"ok");
        assert_eq!(processor.seen(), [(0, 0), (0, 1)]);
    }

    /// The error of a call to a processor that resets every stream with `reason`, and the
    /// streams it saw.
    async fn reset_every_stream(reason: h2::Reason) -> (UpstreamError, Vec<(usize, usize)>) {
        let processor = Processor::start(match reason {
            h2::Reason::REFUSED_STREAM => |_, _| Move::Refuse(h2::Reason::REFUSED_STREAM),
            _ => |_, _| Move::Refuse(h2::Reason::INTERNAL_ERROR),
        })
        .await;
        let Err(error) = call(&processor.connections(), &processor.url()).await else {
            panic!("the call was answered");
        };
        (error, processor.seen())
    }

    #[tokio::test]
    async fn a_stream_reset_otherwise_may_have_been_processed_and_is_not_sent_again() {
        let (error, seen) = reset_every_stream(h2::Reason::INTERNAL_ERROR).await;
        assert!(matches!(error, UpstreamError::Failed(_)), "{error:?}");
        assert!(error.request_sent());
        assert_eq!(seen, [(0, 0)]);
    }

    #[tokio::test]
    async fn a_refusal_twice_running_reports_nothing_sent() {
        let (error, seen) = reset_every_stream(h2::Reason::REFUSED_STREAM).await;
        assert!(matches!(error, UpstreamError::Unreachable(_)), "{error:?}");
        assert!(!error.request_sent());
        assert_eq!(seen, [(0, 0), (0, 1)]);
    }

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

    #[test]
    fn a_call_taking_the_connection_is_seen_by_the_next_idle_look_only() {
        let liveness = Liveness::new();
        assert!(
            liveness.taken_since_last_look(),
            "the call that opened it took it"
        );
        assert!(!liveness.taken_since_last_look());
        liveness.touch();
        assert!(liveness.taken_since_last_look());
        assert!(!liveness.taken_since_last_look(), "a look clears the flag");
    }
}
