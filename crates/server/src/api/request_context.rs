//! The frame every request runs in: an id (echoed as `X-Request-Id`), a tracing span, the API's
//! header limits, the in-flight cap (load shedding), a 500 instead of a dropped connection when
//! a handler panics, one log line and the request metrics when it completes. Nothing from the
//! body, query or header values is ever recorded.
//!
//! One hand-written layer, applied to every route after routing (so the matched route template
//! is already on the request): as four `from_fn` layers it cloned and boxed the rest of the
//! stack and boxed a future at each, ~4 µs of a proxy call's CPU at saturation
//! (docs/benchmarks.md, issue 17's eleventh step).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;
use tower::{Layer, Service};
use tracing::Span;

use super::ApiError;
use crate::http_server::{MAX_HEADER_BYTES, MAX_HEADERS, MAX_URI_BYTES};
use crate::limits::InFlightLimit;

/// A name made once, not parsed from text at each use (as a `&str` name is).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (the caller's `X-Request-Id` when safe, else a new one), for handlers that
/// record it (the audit log). Shared, not copied, by the frame and the handler.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Puts every route's handler in a [`Framed`] call.
#[derive(Clone)]
pub struct FrameLayer {
    in_flight: InFlightLimit,
}

impl FrameLayer {
    pub fn new(in_flight: InFlightLimit) -> Self {
        Self { in_flight }
    }
}

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// A route's handler (`inner`) in the request frame.
#[derive(Clone)]
pub struct Frame<S> {
    inner: S,
    in_flight: InFlightLimit,
}

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Framed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_safe_request_id(v))
            .map(Arc::<str>::from)
            .unwrap_or_else(|| {
                let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
                Arc::from(&*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text))
            });
        let method = request.method().clone();
        let span =
            tracing::info_span!("request", request_id = %id, %method, app = tracing::field::Empty);
        // Routing put the template there (a 405 of a known path included); the 404 fallback has
        // none.
        let route = request.extensions().get::<MatchedPath>().cloned();
        request.extensions_mut().insert(RequestId(id.clone()));
        let state = match within_header_limits(&request) {
            Err(refused) => State::answered(span.in_scope(|| refused.into_response())),
            Ok(()) => match self.in_flight.try_acquire() {
                None => State::answered(span.in_scope(|| {
                    crate::metrics::load_shed(crate::metrics::Shed::InFlight);
                    ApiError::Overloaded.into_response()
                })),
                Some(permit) => {
                    let _entered = span.enter();
                    match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                        Ok(call) => State::Serving {
                            call,
                            _permit: permit,
                        },
                        Err(_) => State::answered(panicked()),
                    }
                }
            },
        };
        Framed {
            state,
            finish: Finish {
                started,
                id,
                method,
                route,
                span,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being served in its frame.
    #[must_use = "futures do nothing unless polled"]
    pub struct Framed<F> {
        #[pin]
        state: State<F>,
        finish: Finish,
    }

    impl<F> PinnedDrop for Framed<F> {
        fn drop(this: Pin<&mut Self>) {
            // A call given up (its client gone) is dropped in its span too, as `Instrument`
            // drops it: what the drops log keeps the request's id.
            let mut this = this.project();
            let _entered = this.finish.span.enter();
            this.state.set(State::Answered { response: None });
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F> {
        /// The handler's call, holding its place under the in-flight cap.
        Serving { #[pin] call: F, _permit: OwnedSemaphorePermit },
        /// Answered without the handler (refused, shed, panicked); `None` once returned.
        Answered { response: Option<Response> },
    }
}

impl<F> State<F> {
    fn answered(response: Response) -> Self {
        Self::Answered {
            response: Some(response),
        }
    }
}

/// What the log line, the metrics and the response headers need once the answer is known.
struct Finish {
    started: Instant,
    id: Arc<str>,
    method: Method,
    route: Option<MatchedPath>,
    span: Span,
}

impl<F> Future for Framed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let entered = this.finish.span.enter();
        let response = match this.state.as_mut().project() {
            StateProjection::Serving { call, .. } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| call.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => response,
                    Err(_) => panicked(),
                }
            }
            StateProjection::Answered { response } => match response.take() {
                Some(response) => response,
                // Polled again after it completed: the contract of `Future` leaves that open.
                None => return Poll::Pending,
            },
        };
        // The handler's future (a panicked one included) and its place under the cap go, in
        // the span, before the line is logged.
        this.state.set(State::Answered { response: None });
        drop(entered);
        Poll::Ready(Ok(this.finish.complete(response)))
    }
}

impl Finish {
    fn complete(&self, mut response: Response) -> Response {
        let status = response.status();
        let route = self.route.as_ref().map(MatchedPath::as_str);
        let elapsed = self.started.elapsed();
        self.span.in_scope(|| {
            tracing::info!(
                route = route.unwrap_or("unmatched"),
                status = status.as_u16(),
                latency_us = elapsed.as_micros() as u64,
                "request completed"
            );
        });
        crate::metrics::request(route, &self.method, status, elapsed);
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            headers.insert(REQUEST_ID, value);
        }
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        response
    }
}

/// The answer to a call whose handler panicked: the generic 500, its cause logged without the
/// panic's message (which could quote a value; the panic hook logs only where).
fn panicked() -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

/// The API's limits on the request line and headers, the same on HTTP/1 and HTTP/2 (whose
/// libraries would otherwise allow different amounts, and answer without the envelope).
fn within_header_limits(request: &Request) -> Result<(), ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong);
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge);
    }
    Ok(())
}

/// A caller's id is kept only if it is short, plain and cannot be a card number: ids are logged.
fn is_safe_request_id(id: &str) -> bool {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    let mut run = 0;
    let mut longest_digit_run = 0;
    for b in id.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        longest_digit_run = longest_digit_run.max(run);
    }
    plain && longest_digit_run < 12
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    use super::{FrameLayer, is_safe_request_id};
    use crate::limits::InFlightLimit;

    async fn send(app: &Router, path: &str) -> axum::response::Response {
        let request = axum::http::Request::get(path)
            .header("x-request-id", "req-frame-1")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap()
    }

    async fn body_json(response: axum::response::Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_500_in_the_envelope_and_the_next_call_is_served() {
        async fn at_once() -> &'static str {
            panic!("4242424242424242")
        }
        async fn after_waiting() -> &'static str {
            tokio::task::yield_now().await;
            panic!("4242424242424242")
        }
        let app = Router::new()
            .route("/at-once", get(at_once))
            .route("/after-waiting", get(after_waiting))
            .route("/fine", get(|| async { "fine" }))
            .layer(FrameLayer::new(InFlightLimit::new(1)));
        for path in ["/at-once", "/after-waiting"] {
            let response = send(&app, path).await;
            assert_eq!(response.status(), 500, "{path}");
            assert_eq!(response.headers()["x-request-id"], "req-frame-1");
            assert_eq!(response.headers()["cache-control"], "no-store");
            let body = body_json(response).await;
            assert_eq!(body["message"], "Internal server error", "{path}");
            assert!(!body.to_string().contains("4242"), "{body}");
        }
        // The panicked calls gave their places under the cap (of one) back.
        let response = send(&app, "/fine").await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn a_service_that_panics_when_called_is_answered_500_and_gives_its_place_back() {
        // Framed directly (behind the router, a route's `call` only builds a future): the panic
        // comes from `call` itself, before there is a future to poll.
        type Answer = std::future::Ready<Result<axum::response::Response, Infallible>>;
        let in_call =
            tower::service_fn(|_: axum::extract::Request| -> Answer { panic!("4242424242424242") });
        let mut framed = tower::Layer::layer(&FrameLayer::new(InFlightLimit::new(1)), in_call);
        for _ in 0..2 {
            let request = axum::http::Request::get("/in-call")
                .body(Body::empty())
                .unwrap();
            let response = tower::Service::call(&mut framed, request).await.unwrap();
            assert_eq!(response.status(), 500);
            let body = body_json(response).await;
            assert_eq!(body["message"], "Internal server error");
        }
    }

    #[tokio::test]
    async fn a_call_past_the_in_flight_cap_is_shed_until_the_one_in_flight_is_answered() {
        let (started_tx, started) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let slots = std::sync::Mutex::new(Some((started_tx, released)));
        let slots = std::sync::Arc::new(slots);
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let slots = slots.lock().unwrap().take();
                    async move {
                        if let Some((started, released)) = slots {
                            let _ = started.send(());
                            let _ = released.await;
                        }
                        "slow"
                    }
                }),
            )
            .layer(FrameLayer::new(InFlightLimit::new(1)));
        let first = tokio::spawn({
            let app = app.clone();
            async move { send(&app, "/slow").await.status() }
        });
        started.await.unwrap();
        let shed = send(&app, "/slow").await;
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["x-request-id"], "req-frame-1");
        assert!(shed.headers().contains_key("retry-after"));
        let body = body_json(shed).await;
        assert_eq!(body["code"], "overloaded", "{body}");
        assert_eq!(body["success"], false, "{body}");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 200);
        assert_eq!(send(&app, "/slow").await.status(), 200);
    }

    #[test]
    fn request_ids_that_could_carry_data_are_replaced() {
        assert!(is_safe_request_id("req-7f3a9c"));
        assert!(is_safe_request_id("0190f3c2-6a1b-7c3d-8e4f-123456789abc"));
        assert!(!is_safe_request_id("4242424242424242"));
        assert!(!is_safe_request_id("id with spaces"));
        assert!(!is_safe_request_id(""));
    }
}
