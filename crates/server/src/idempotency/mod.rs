//! Idempotency keys: a call sent again with the same `Idempotency-Key` gets the first call's
//! answer instead of running twice.
//!
//! A key is scoped to its project. The first call with it claims it (atomically, in the database
//! every instance shares) together with a keyed hash of the request; its answer, once it has one
//! worth keeping, is kept sealed for the key's lifetime. A repeat of the same request gets that
//! answer; the same key on another request, or while the first still runs, is refused. An answer
//! says something happened when it succeeded, or when the processor may have seen the request
//! (`request_sent: true`): only those are kept. Any other failure is forgotten, so its retry runs
//! for real (and finds the CVC session the failed call gave back).
//!
//! Neither the key nor the request is stored as sent: a caller may put anything in them (a
//! tokenize body is a card). Both are keyed hashes (HMAC with the vault's fingerprint key,
//! domain-separated), and the kept answer is sealed with the session key.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::clock::now_unix_ms;
use crate::crypto::{CryptoError, Keyring, aad};
use crate::store::{IdempotencyClaim, Store, StoreError};

pub const KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 60 * 60;
/// How often each instance deletes expired records.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const SWEEP_BATCH: u32 = 1000;

/// The request headers that change what a call does, besides its body. Others (the API key,
/// tracing, user agent) may differ between a call and its retry.
const REQUEST_HEADERS: [&str; 6] = [
    "content-type",
    "x-token",
    "x-proxy-url",
    "x-cvc-session-id",
    "x-proxy-method",
    "x-dry-run",
];

/// The `Idempotency-Key` of a request, if it has one.
///
/// # Errors
/// [`BadKey`] when it is empty, longer than [`MAX_KEY_LEN`], not printable ASCII, or sent twice.
pub fn key_of(headers: &HeaderMap) -> Result<Option<&[u8]>, BadKey> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let key = value.as_bytes();
    let printable = key.iter().all(|b| (0x20..=0x7e).contains(b));
    if values.next().is_some() || key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
        return Err(BadKey);
    }
    Ok(Some(key))
}

/// An `Idempotency-Key` header that is not one.
#[derive(Debug)]
pub struct BadKey;

/// A call that carries an idempotency key: who may hold the key, and what was asked.
pub struct IdempotentRequest {
    project_id: String,
    key_hash: Vec<u8>,
    request_hash: Vec<u8>,
}

/// What [`Idempotency::begin`] decided.
pub enum Begin {
    /// Run the call; then [`Idempotency::finish`] it.
    Run(IdempotentRequest),
    /// The same request was answered: here is that answer.
    Replay(KeptAnswer),
    /// The same key is on a call still running.
    InUse,
    /// The same key was used on another request.
    Reused,
}

#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    ttl: Duration,
}

impl Idempotency {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>, ttl: Duration) -> Self {
        Self {
            store,
            keyring,
            ttl,
        }
    }

    /// The request as the key's record knows it: keyed hashes of the key and of the request.
    pub fn request(
        &self,
        project_id: &str,
        key: &[u8],
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> IdempotentRequest {
        let mut key_input = b"idempotency-key\0".to_vec();
        key_input.extend_from_slice(key);
        let mut request = b"idempotency-request\0".to_vec();
        for part in [
            method.as_str().as_bytes(),
            uri.path().as_bytes(),
            uri.query().unwrap_or("").as_bytes(),
        ] {
            push_field(&mut request, part);
        }
        for name in REQUEST_HEADERS {
            for value in headers.get_all(name) {
                push_field(&mut request, name.as_bytes());
                push_field(&mut request, value.as_bytes());
            }
        }
        push_field(&mut request, body);
        IdempotentRequest {
            project_id: project_id.to_owned(),
            key_hash: self.keyring.fingerprint(project_id, &key_input),
            request_hash: self.keyring.fingerprint(project_id, &request),
        }
    }

    /// Claims the key for this call, or says why not.
    ///
    /// # Errors
    /// The store's; [`CryptoError`] (as a store error's cause) when a kept answer does not open.
    pub async fn begin(&self, request: IdempotentRequest) -> Result<Begin, IdempotencyError> {
        let now = now_unix_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let claim = self
            .store
            .claim_idempotency_key(
                &request.project_id,
                &request.key_hash,
                &request.request_hash,
                now,
                now.saturating_add(ttl_ms),
            )
            .await?;
        Ok(match claim {
            IdempotencyClaim::Claimed => Begin::Run(request),
            IdempotencyClaim::Held(held) if held.request_hash != request.request_hash => {
                Begin::Reused
            }
            IdempotencyClaim::Held(held) => match held.answer {
                None => Begin::InUse,
                Some(sealed) => {
                    let plain = self.keyring.open_session(&sealed, &answer_aad(&request))?;
                    Begin::Replay(KeptAnswer::decode(&plain).ok_or(CryptoError::Decrypt)?)
                }
            },
        })
    }

    /// Keeps `answer` for the key's retries when it says something happened; otherwise lets
    /// the key go, so a retry runs again.
    ///
    /// # Errors
    /// The store's: the answer is still the caller's to have, but a retry would not find it
    /// (keep) or would find the key in use (release).
    pub async fn finish(
        &self,
        request: &IdempotentRequest,
        answer: &KeptAnswer,
    ) -> Result<(), IdempotencyError> {
        if answer.is_worth_keeping() {
            let sealed = self
                .keyring
                .seal_session(&answer.encode(), &answer_aad(request))?;
            self.store
                .keep_idempotent_answer(&request.project_id, &request.key_hash, &sealed)
                .await?;
        } else {
            self.store
                .release_idempotency_key(&request.project_id, &request.key_hash)
                .await?;
        }
        Ok(())
    }

    /// Deletes expired records every minute, until `self` is the last handle left.
    pub fn sweep_expired(&self) {
        let store = Arc::downgrade(&self.store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                loop {
                    match store
                        .sweep_idempotency_keys(now_unix_ms(), SWEEP_BATCH)
                        .await
                    {
                        Ok(n) if n == u64::from(SWEEP_BATCH) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain::chain(&e), "cannot sweep expired idempotency keys");
                            break;
                        }
                    }
                }
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn answer_aad(request: &IdempotentRequest) -> Vec<u8> {
    aad::idempotent_answer(&request.project_id, &request.key_hash)
}

/// An answer as given: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl KeptAnswer {
    /// Reads the whole of `response` (answers are bounded: bodies by the request and response
    /// size limits).
    pub async fn capture(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                tracing::error!(error = %e, "an answer's body could not be read");
                return Self::from_response(
                    crate::api::ApiError::Internal(Box::new(e)).into_response(),
                    Vec::new(),
                );
            }
        };
        Self::from_response(Response::from_parts(parts, axum::body::Body::empty()), body)
    }

    fn from_response(response: Response, body: Vec<u8>) -> Self {
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != "content-length" && *name != "date")
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        Self {
            status: response.status().as_u16(),
            headers,
            body,
        }
    }

    /// Whether the call did something a retry must not do again: it succeeded, or the
    /// processor may have seen it.
    fn is_worth_keeping(&self) -> bool {
        if self.status < 400 {
            return true;
        }
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .is_ok_and(|body| body["request_sent"] == serde_json::Value::Bool(true))
    }

    /// The answer to send; a replay says so in `Idempotent-Replayed: true`.
    pub fn into_response(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        headers.remove(axum::http::header::CONTENT_TYPE);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::from_bytes(&value))
            {
                headers.append(name, value);
            }
        }
        if replayed {
            headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        }
        response
    }

    /// Length-prefixed fields: status, header count, each name and value, the body.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u64).to_be_bytes());
        for (name, value) in &self.headers {
            push_field(&mut out, name.as_bytes());
            push_field(&mut out, value);
        }
        push_field(&mut out, &self.body);
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        fn field(bytes: &mut &[u8]) -> Option<Vec<u8>> {
            let len = u64::from_be_bytes(take(bytes, 8)?.try_into().ok()?);
            take(bytes, usize::try_from(len).ok()?).map(<[u8]>::to_vec)
        }
        let status = u16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?);
        let count = u64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = String::from_utf8(field(&mut bytes)?).ok()?;
            headers.push((name, field(&mut bytes)?));
        }
        let body = field(&mut bytes)?;
        bytes.is_empty().then_some(Self {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_printable_header_of_at_most_255_characters() {
        let with = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(KEY_HEADER, HeaderValue::from_bytes(value).unwrap());
            }
            key_of(&headers).map(|k| k.map(<[u8]>::to_vec))
        };
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(
            with(&[b"order-1001"]).unwrap(),
            Some(b"order-1001".to_vec())
        );
        assert_eq!(with(&[&[b'k'; 255]]).unwrap().map(|k| k.len()), Some(255));
        assert!(with(&[&[b'k'; 256]]).is_err());
        assert!(with(&[b""]).is_err());
        assert!(with(&[b"a\tb"]).is_err());
        assert!(with(&[b"caf\xc3\xa9"]).is_err());
        assert!(with(&[b"one", b"two"]).is_err());
    }

    #[test]
    fn kept_answers_come_back_as_they_were() {
        let answer = KeptAnswer {
            status: 504,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-upstream-status".into(), b"200".to_vec()),
            ],
            body: br#"{"success":false,"request_sent":true}"#.to_vec(),
        };
        assert_eq!(KeptAnswer::decode(&answer.encode()), Some(answer.clone()));
        assert!(answer.is_worth_keeping());
        let encoded = answer.encode();
        assert_eq!(KeptAnswer::decode(&encoded[..encoded.len() - 1]), None);
        let unsent = KeptAnswer {
            status: 502,
            body: br#"{"success":false,"request_sent":false}"#.to_vec(),
            ..answer
        };
        assert!(!unsent.is_worth_keeping());
    }
}
