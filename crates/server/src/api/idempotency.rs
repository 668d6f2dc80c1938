//! `Idempotency-Key` on the calls that do something (proxy, tokenize, create): the HTTP side
//! of [`crate::idempotency`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::idempotency::{Begin, KeptAnswer, key_of};

/// A request about to run `call`: its idempotency key checked, scoped to its project.
pub struct Once {
    /// The keyed request, and the record audited (its outcome filled in) if the call does not
    /// run: a replay, a key in use or reused.
    request: Option<(crate::idempotency::IdempotentRequest, crate::audit::Entry)>,
}

impl Once {
    /// `refused` builds the record of a call the key keeps from running; it is called only
    /// when there is a key (most calls have none).
    ///
    /// # Errors
    /// `400 Invalid value for Idempotency-Key` for a key that is not one.
    pub fn new(
        state: &AppState,
        project_id: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        refused: impl FnOnce() -> crate::audit::Entry,
    ) -> Result<Self, ApiError> {
        let key = key_of(headers).map_err(|_| ApiError::invalid("Idempotency-Key"))?;
        Ok(Self {
            request: key.map(|key| {
                let request = state
                    .idempotency
                    .request(project_id, key, method, uri, headers, body);
                (request, refused())
            }),
        })
    }

    /// Runs `call` unless the key says otherwise.
    ///
    /// With a key, the call runs to its end in a task of its own even if the caller hangs up:
    /// its answer is what the caller's retry gets.
    ///
    /// # Errors
    /// `409 Idempotency key in use`, `422 Idempotency key reused with a different request`,
    /// the store's errors; and `call`'s when there is no key.
    pub fn run<'a, F>(self, state: &'a AppState, call: F) -> Running<'a, F>
    where
        F: Future<Output = Result<Response, ApiError>> + Send + 'static,
    {
        match self.request {
            None => Running::Plain { call },
            Some((request, refused)) => Running::Keyed {
                keyed: Box::pin(run_keyed(state, request, refused, call)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`Once::run`]: without a key, `call` itself, not wrapped in an `async fn` (which
    /// would keep `call` twice in its state, and every call's future is copied whole when
    /// moved: docs/benchmarks.md, issue 17's tenth step); with one, the keyed run, boxed.
    #[project = RunningNow]
    #[must_use = "the call runs only when awaited"]
    pub enum Running<'a, F> {
        Plain { #[pin] call: F },
        Keyed { keyed: Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send + 'a>> },
    }
}

impl<F> Future for Running<'_, F>
where
    F: Future<Output = Result<Response, ApiError>>,
{
    type Output = Result<Response, ApiError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RunningNow::Plain { call } => call.poll(cx),
            RunningNow::Keyed { keyed } => keyed.as_mut().poll(cx),
        }
    }
}

/// [`Once::run`] with a key.
async fn run_keyed<F>(
    state: &AppState,
    request: crate::idempotency::IdempotentRequest,
    mut refused: crate::audit::Entry,
    call: F,
) -> Result<Response, ApiError>
where
    F: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let begun = state
        .idempotency
        .begin(request)
        .await
        .map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    let request = match begun {
        Begin::Run(request) => request,
        Begin::Replay(answer) => {
            refused.outcome = "idempotent_replay".to_owned();
            refused.detail.set("status", answer.status);
            state.audit(refused).await?;
            return Ok(answer.into_response(true));
        }
        Begin::InUse => return refuse(state, refused, ApiError::IdempotencyKeyInUse).await,
        Begin::Reused => return refuse(state, refused, ApiError::IdempotencyKeyReused).await,
    };
    let idempotency = state.idempotency.clone();
    let work = async move {
        let answer = KeptAnswer::capture(call.await.into_response()).await;
        if let Err(e) = idempotency.finish(&request, &answer).await {
            tracing::error!(
                error = %crate::error_chain::chain(&e),
                "the answer of a call with an idempotency key could not be kept; a retry may find the key in use"
            );
        }
        answer
    };
    // In the request's span, so its log lines keep the request id.
    let task = tokio::spawn(work.instrument(tracing::Span::current()));
    let answer = task.await.map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(answer.into_response(false))
}

/// A create call by `caller`: `call(state, caller, body)` runs once per idempotency key of the
/// caller's project (see [`Once::run`]); `action` names it in the audit log when it does not run.
///
/// # Errors
/// As [`Once::new`] and [`Once::run`].
pub async fn create_once<F, Fut, T>(
    state: AppState,
    caller: Caller,
    action: &'static str,
    (uri, headers): (&Uri, &HeaderMap),
    body: Bytes,
    call: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(AppState, Caller, Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
    T: IntoResponse,
{
    let once = Once::new(
        &state,
        &caller.project.id,
        &Method::POST,
        uri,
        headers,
        &body,
        || caller.audit(action),
    )?;
    let work_state = state.clone();
    let work = async move {
        call(work_state, caller, body)
            .await
            .map(IntoResponse::into_response)
    };
    once.run(&state, work).await
}

async fn refuse(
    state: &AppState,
    mut entry: crate::audit::Entry,
    error: ApiError,
) -> Result<Response, ApiError> {
    entry.outcome = error.code().to_owned();
    state.audit(entry).await?;
    Err(error)
}
