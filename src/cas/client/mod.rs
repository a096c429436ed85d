//! The one place that talks HTTP to Alibaba Cloud: signing every attempt afresh,
//! classifying errors by `Code`, retrying with full-jitter backoff, and a
//! client-side rate limit (per action, so many calls in any window of about a second).
//!
//! One job per file: `error` (what a call fails with), `advice` (the likely
//! causes of an authentication refusal), `request` (signing one
//! attempt), `transport` (one HTTP exchange), `retry` (what is tried again, and
//! the backoff), `hints` (the server's wait headers), `limiter` (the token
//! buckets), `observe` (the metrics hook and the log). This file holds the client
//! and its call loop.

mod advice;
mod error;
mod hints;
mod limiter;
mod observe;
mod request;
mod retry;
mod transport;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::credentials::CredentialsProvider;
use serde::de::DeserializeOwned;

pub use error::{ApiError, ErrorBody, ServiceError, is_auth_code};
pub use hints::{acs_retry_after, ratelimit_time_left, retry_after_header, server_wait_hint};
pub use limiter::RateLimiter;
pub use observe::Observer;
pub use retry::{HINT_CAP, Idempotence, backoff, is_retryable_code};

/// Responses larger than this are refused: the largest real answer (a page of
/// orders or a PEM chain) is a few hundred KiB.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
const USER_AGENT: &str = concat!("cas-renewd/", env!("CARGO_PKG_VERSION"));

/// Settings of one API product (CAS or DNS) at one endpoint.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub endpoint: reqwest::Url,
    /// API version, e.g. `2020-04-07` for CAS.
    pub version: &'static str,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// What one successful call returned.
#[derive(Debug)]
pub struct Response<T> {
    pub body: T,
    pub request_id: String,
    pub attempts: u32,
}

/// A signed-request client for one RPC product.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: ClientSettings,
    host: String,
    credentials: Arc<CredentialsProvider>,
    limiter: Arc<RateLimiter>,
    observer: Option<Observer>,
    recorder: Option<Recorder>,
    /// Every final failure goes to a caller that reports it (doctor's checks), so
    /// the log tells it at debug level only.
    failures_reported_by_caller: bool,
}

/// Receives every final answer (`doctor --record`): the action, its parameters
/// (never the signature: it is added later), and the JSON body or the error.
pub type Recorder =
    Arc<dyn Fn(&str, &[(String, String)], Result<&serde_json::Value, &ApiError>) + Send + Sync>;

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("endpoint", &self.settings.endpoint.as_str())
            .field("version", &self.settings.version)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(
        settings: ClientSettings,
        credentials: Arc<CredentialsProvider>,
        limiter: Arc<RateLimiter>,
    ) -> Result<Self, ApiError> {
        let host = match (settings.endpoint.host_str(), settings.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(ApiError::Transport {
                    action: "setup".into(),
                    detail: format!("endpoint {} has no host", settings.endpoint),
                    not_sent: true,
                });
            }
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ApiError::Transport {
                action: "setup".into(),
                detail: format!("cannot build HTTP client: {e}"),
                not_sent: true,
            })?;
        Ok(ApiClient {
            http,
            settings,
            host,
            credentials,
            limiter,
            observer: None,
            recorder: None,
            failures_reported_by_caller: false,
        })
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Hands every final answer to `recorder`.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Logs final failures at debug level: for a caller that reports every
    /// failure itself (`doctor`, whose permission probes are expected to fail).
    pub fn with_failures_reported_by_caller(mut self) -> Self {
        self.failures_reported_by_caller = true;
        self
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.settings.endpoint
    }

    /// Calls `action` with `params` and decodes the JSON answer into `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(String, String)],
        idem: Idempotence,
    ) -> Result<Response<T>, ApiError> {
        self.call_expecting(action, params, idem, &|_| false).await
    }

    /// As [`ApiClient::call`], for a caller that handles the failures `expected`
    /// picks itself (a zone probe that misses, a repeat it recognises): those are
    /// logged at debug level, as the normal outcomes they are, not as errors.
    pub async fn call_expecting<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &[(String, String)],
        idem: Idempotence,
        expected: &(dyn Fn(&ApiError) -> bool + Sync),
    ) -> Result<Response<T>, ApiError> {
        let max = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.attempt(action, params, attempt).await {
                Ok((value, request_id)) => {
                    if let Some(r) = &self.recorder {
                        r(action, params, Ok(&value));
                    }
                    return decode_body(action, value, request_id, attempt);
                }
                Err(e) => e,
            };
            let err = match retry::after_failure(action, err, idem, attempt, max) {
                ControlFlow::Break(last) => {
                    if let Some(r) = &self.recorder {
                        r(action, params, Err(&last));
                    }
                    let handled = self.failures_reported_by_caller || expected(&last);
                    observe::log_final_failure(action, attempt, &last, handled);
                    return Err(last);
                }
                ControlFlow::Continue(err) => err,
            };
            let wait = backoff(attempt, err.retry_after());
            observe::log_retry(action, attempt, &err, wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// One signed attempt: a new date and nonce, so a retry is never a replay.
    async fn attempt(
        &self,
        action: &str,
        params: &[(String, String)],
        attempt: u32,
    ) -> Result<(serde_json::Value, String), ApiError> {
        // Credentials first (an STS or metadata fetch may take a while): the
        // limiter's reserved time is then the time the call goes out.
        let cred = self.credentials.get().await?;
        self.limiter.acquire(action).await;
        let signed = self.signed_request(action, params, &cred);
        let started = Instant::now();
        let result = self.exchange(action, signed.request).await;
        self.report_attempt(action, attempt, started, &result, &signed.string_to_sign);
        result
    }
}

/// A successful answer decoded into `T`; a body without what `T` requires is an
/// [`ApiError::Schema`], never retried.
fn decode_body<T: DeserializeOwned>(
    action: &str,
    value: serde_json::Value,
    request_id: String,
    attempts: u32,
) -> Result<Response<T>, ApiError> {
    match serde_json::from_value::<T>(value) {
        Ok(body) => Ok(Response {
            body,
            request_id,
            attempts,
        }),
        Err(e) => Err(ApiError::Schema {
            action: action.to_owned(),
            request_id,
            detail: e.to_string(),
        }),
    }
}
