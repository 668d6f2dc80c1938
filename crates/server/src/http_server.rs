//! The listening side: accepts connections and serves the router over HTTP/1.1 and HTTP/2, with
//! the connection-level bounds `axum::serve` does not set: a slow client cannot hold a
//! connection open by dribbling its headers, an idle connection is closed (HTTP/1 keep-alive and
//! HTTP/2 alike), the number of open connections is capped with a clear refusal beyond it, and a
//! graceful shutdown lets in-flight requests finish. With a certificate it speaks HTTPS (see
//! [`crate::server_tls`]); the TLS handshake counts as part of sending the request's headers.
//!
//! Header limits come in two tiers. The API's own (at most [`MAX_HEADERS`] headers and
//! [`MAX_HEADER_BYTES`], a request target of at most [`MAX_URI_BYTES`]) are checked per request
//! in the router, so the answer is the API's JSON envelope (`414`, `431`) on both protocols.
//! The protocol libraries' hard limits sit above them, as a backstop against requests too
//! large to parse at all (HTTP/1's header count at hyper's default, the bytes a few times the
//! API's); past those the connection gets a bare status line.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::idle_looks::IdleLooks;
use crate::serving_threads::ServingThreads;

/// Most headers a request may carry, on either protocol (API answer: 431).
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values a request may carry (API answer: 431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target (path and query) accepted (API answer: 414).
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// The protocol libraries' own limits, beyond which a request cannot even be parsed. HTTP/1's
/// count of headers is hyper's default (100), left unset: set, hyper fills a table of that many
/// entries anew for each request (on the heap above 100), ~3,000 instructions a request at 256
/// (docs/benchmarks.md, issue 17's twenty-second step), where at its default the table is on
/// the stack and not filled.
const HARD_MAX_HEADER_BYTES: usize = 4 * MAX_HEADER_BYTES;
/// In-flight requests get this long to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long the serving threads get, once their connections are done, to drop what is left on
/// them (processor connections, audit writers, their blocking work) before the server reports
/// it stopped: the process's exit handlers (a PKCS#11 module's among them) must not run under a
/// thread still dropping its tasks. Longer than SQLite's busy timeout (5 s), which an audit
/// write waiting for the file's lock may still be sitting out.
const SERVING_THREADS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals at the connection cap in progress at once; beyond that a connection is just closed.
const MAX_PENDING_REFUSALS: usize = 256;
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// File descriptors kept back from the connection cap: each request may hold an upstream
/// connection too, and the database, logs and listener need their own.
const RESERVED_FILES: u64 = 256;

/// The per-connection bounds, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send its request line and headers.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (within half as long
    /// again).
    pub idle_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Threads serving connections (see [`crate::serving_threads`]); 0: served on the
    /// listener's runtime.
    pub serving_threads: usize,
}

impl ConnectionLimits {
    /// Lowers the connection cap if the open-file limit cannot hold it (two descriptors a
    /// connection: the client's and an upstream one), so accepting never fails for everyone for
    /// lack of descriptors.
    pub fn fit_to_open_file_limit(mut self) -> Self {
        let Some(files) = raise_open_file_limit() else {
            return self;
        };
        let fits = usize::try_from(files.saturating_sub(RESERVED_FILES) / 2).unwrap_or(usize::MAX);
        if fits < self.max_connections {
            tracing::warn!(
                open_files = files,
                max_connections = fits,
                "the open-file limit is too low for max_connections: serving fewer connections"
            );
            self.max_connections = fits.max(1);
        }
        self
    }
}

/// Raises this process's open-file limit to the most the system allows; returns the limit
/// now in force (`None` if it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => Some(files),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            None
        }
    }
}

/// Serves `app` until `shutdown` completes; over TLS when `tls` is given. Returns once the
/// connections are done (or [`SHUTDOWN_GRACE`] is over) and the serving threads are gone.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HARD_MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(HARD_MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    let (stop, stopping) = watch::channel(false);
    let serving = match limits.serving_threads {
        0 => None,
        n => Some(ServingThreads::start(n)?),
    };
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let builder = builder.clone();
                        let app = app.clone();
                        let stopping = stopping.clone();
                        let tls = tls.clone();
                        match &serving {
                            None => {
                                tokio::spawn(async move {
                                    serve_accepted(stream, builder, app, limits, tls, stopping).await;
                                    drop(permit);
                                });
                            }
                            Some(threads) => {
                                // The socket is registered anew on the thread that serves it:
                                // left with this listener's runtime, its every readiness event
                                // would be handed to that thread by a wake-up.
                                let stream = match stream.into_std() {
                                    Ok(stream) => stream,
                                    Err(e) => {
                                        tracing::debug!(error = %e, "an accepted connection could not be handed over");
                                        continue;
                                    }
                                };
                                threads.spawn(async move {
                                    match TcpStream::from_std(stream) {
                                        Ok(stream) => serve_accepted(stream, builder, app, limits, tls, stopping).await,
                                        Err(e) => tracing::debug!(error = %e, "a connection could not be served on its thread"),
                                    }
                                    drop(permit);
                                });
                            }
                        }
                    }
                    // Over TLS the refusal would need a handshake first, the very work the cap
                    // is there to avoid: the connection is just closed.
                    Err(_) if tls.is_some() => {
                        crate::metrics::load_shed(crate::metrics::Shed::Connections);
                        drop(stream);
                    }
                    Err(_) => {
                        crate::metrics::load_shed(crate::metrics::Shed::Connections);
                        if let Ok(permit) = refusals.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                refuse(stream).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over: closing the remaining connections");
    }
    if let Some(threads) = serving
        && !threads.stop(SERVING_THREADS_STOP_TIMEOUT).await
    {
        tracing::warn!("a serving thread was still dropping its tasks when the server stopped");
    }
    Ok(())
}

/// Serves an accepted connection: its TLS handshake first when `tls` is given.
async fn serve_accepted(
    stream: TcpStream,
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    stopping: watch::Receiver<bool>,
) {
    match tls {
        None => serve_connection(builder, stream, app, limits.idle_timeout, stopping).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    serve_connection(builder, stream, app, limits.idle_timeout, stopping).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// One connection, until the client closes it, it has been idle for `idle_timeout` (and at most
/// half of it more), or the server stops (then in-flight requests get [`SHUTDOWN_GRACE`] to
/// finish).
async fn serve_connection(
    builder: Arc<Builder<TokioExecutor>>,
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    app: Router,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = Tracked {
        app,
        activity: activity.clone(),
    };
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let mut connection = pin!(connection);
    let mut closing_by: Option<Instant> = None;
    let mut idle = IdleLooks::default();
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if closing_by.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + SHUTDOWN_GRACE);
                }
            }
            () = tokio::time::sleep(idle_timeout / IdleLooks::PER_LIMIT), if closing_by.is_none() => {
                if idle.idle_after_look(activity.idle_since_last_look()) {
                    tracing::debug!("closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + SHUTDOWN_GRACE);
                }
            }
            () = tokio::time::sleep_until(closing_by.unwrap_or_else(Instant::now)), if closing_by.is_some() => {
                return;
            }
        }
    }
}

/// Answers a connection over the cap with the API's 503 and closes it; a client that does not
/// read its answer within a second is simply closed.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"success":false,"message":"Service unavailable","data":null,"code":"unavailable"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\n\
         connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::debug!("connection refused: at the connection cap");
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Whether a connection has a request in flight, and whether one began or ended since the last
/// idle look. Flags rather than times: a request reads no clock and takes no lock for them.
struct Activity {
    in_flight: AtomicUsize,
    /// Set when a request begins and when it ends (so that one that does both between a look's
    /// two reads is seen), cleared by each idle look.
    active: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// Whether the connection was idle since the last look: no request in flight now, and
    /// none began or ended in between.
    fn idle_since_last_look(&self) -> bool {
        let active = self.active.swap(false, Ordering::AcqRel);
        !active && self.in_flight.load(Ordering::Acquire) == 0
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.active.store(true, Ordering::Release);
        InFlight(self.clone())
    }
}

/// A request in flight on its connection; dropping it marks the request finished.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting the requests in flight on one connection.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

pin_project_lite::pin_project! {
    /// A request's call through the router, in flight until it ends. A type of its own rather
    /// than a boxed `async` block: one allocation less a request.
    struct TrackedCall {
        #[pin]
        call: tower::util::Oneshot<Router, hyper::Request<Body>>,
        in_flight: Option<InFlight>,
    }
}

impl Future for TrackedCall {
    type Output = Result<Response, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.call.poll(cx));
        // Finished before the answer is written, as when the handler's future ended.
        this.in_flight.take();
        std::task::Poll::Ready(response)
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedCall;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = Some(self.activity.begin());
        TrackedCall {
            call: self.app.clone().oneshot(request.map(Body::new)),
            in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Activity, IdleLooks};

    #[test]
    fn a_connection_is_closed_only_after_a_whole_timeout_without_a_request() {
        let activity = Arc::new(Activity::new());
        let mut looks = IdleLooks::default();
        assert!(!looks.idle_after_look(activity.idle_since_last_look()));
        let in_flight = activity.begin();
        // A request in flight across any number of looks keeps the connection.
        for _ in 0..3 {
            assert!(!looks.idle_after_look(activity.idle_since_last_look()));
        }
        drop(in_flight);
        // The look after it ended still counts it.
        assert!(!looks.idle_after_look(activity.idle_since_last_look()));
        assert!(!looks.idle_after_look(activity.idle_since_last_look()));
        assert!(looks.idle_after_look(activity.idle_since_last_look()));
        // A request that began and ended between two looks counts too.
        drop(activity.begin());
        assert!(!looks.idle_after_look(activity.idle_since_last_look()));
    }
}
