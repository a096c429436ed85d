//! The one place that talks HTTP to Alibaba Cloud: signing every attempt afresh,
//! classifying errors by `Code`, retrying with full-jitter backoff, and a
//! client-side token bucket.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::credentials::{CredentialsError, CredentialsProvider};
use super::sign::{self, EMPTY_PAYLOAD_SHA256, V3Input};

/// Responses larger than this are refused: the largest real answer (a page of
/// orders or a PEM chain) is a few hundred KiB.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// First backoff step; doubled per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest single wait between attempts of our own backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait a server's hint may impose before the next attempt (the official
/// SDK caps it at 120 s; a daemon pass should not sit longer on one call).
pub const HINT_CAP: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("cas-renewd/", env!("CARGO_PKG_VERSION"));

/// Whether a call may be sent again when its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    /// Reads: any transient failure is retried.
    Idempotent,
    /// Calls that spend money (renew): retried only when the answer proves the
    /// server did not act on it (throttling, nonce reuse, or no connection at all).
    /// Anything else unclear becomes [`ApiError::Ambiguous`] for the caller to reconcile.
    NonIdempotent,
}

/// An error body in Alibaba's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    #[serde(alias = "code")]
    pub code: Option<String>,
    #[serde(alias = "message")]
    pub message: Option<String>,
    #[serde(alias = "requestId")]
    pub request_id: Option<String>,
    pub host_id: Option<String>,
    pub recommend: Option<String>,
}

/// An error answer from the service: its Code, Message and RequestId.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action}: {code}: {message} (RequestId {request_id}, HTTP {status})")]
pub struct ServiceError {
    pub action: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
    pub host_id: Option<String>,
    /// The server's wait hint (x-acs-retry-after, x-ratelimit TimeLeft or Retry-After).
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Service(Box<ServiceError>),
    #[error("{action}: {detail}")]
    Transport {
        action: String,
        detail: String,
        /// Nothing reached the server (connection refused, DNS failure).
        not_sent: bool,
    },
    #[error("{action}: malformed response (HTTP {status}, RequestId {request_id}): {detail}")]
    Malformed {
        action: String,
        status: u16,
        request_id: String,
        detail: String,
    },
    /// Redirects are never followed: they would carry the signed query and the STS
    /// token to another place, perhaps over plain HTTP.
    #[error(
        "{action}: the endpoint answered HTTP {status} redirecting to {location:?}, which is not followed; set api.endpoint to the right address"
    )]
    Redirect {
        action: String,
        status: u16,
        location: String,
    },
    #[error("{action}: response body is larger than {MAX_BODY_BYTES} bytes; refused")]
    TooLarge { action: String },
    #[error("{action}: response lacks what the API documents (RequestId {request_id}): {detail}")]
    Schema {
        action: String,
        request_id: String,
        detail: String,
    },
    #[error(
        "{action}: outcome unknown ({cause}); the call may have taken effect on the server, so it is not repeated"
    )]
    Ambiguous {
        action: String,
        cause: Box<ApiError>,
    },
    #[error("{action}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        action: String,
        attempts: u32,
        last: Box<ApiError>,
    },
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialsError),
}

impl ApiError {
    /// The Alibaba error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Service(e) => Some(&e.code),
            ApiError::Exhausted { last, .. } | ApiError::Ambiguous { cause: last, .. } => {
                last.code()
            }
            _ => None,
        }
    }

    /// The label used for this outcome in metrics and logs: the Code, or a class.
    pub fn label(&self) -> &str {
        match self {
            ApiError::Service(e) => &e.code,
            ApiError::Transport { .. } => "transport",
            ApiError::Redirect { .. } => "redirect",
            ApiError::Malformed { .. } => "malformed",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Schema { .. } => "schema",
            ApiError::Ambiguous { .. } => "ambiguous",
            ApiError::Exhausted { last, .. } => last.label(),
            ApiError::Credentials(_) => "credentials",
        }
    }

    /// Whether the failure is transient for a call of the given kind.
    fn retryable(&self, idem: Idempotence) -> bool {
        match (self, idem) {
            (ApiError::Service(e), Idempotence::NonIdempotent) => {
                is_rejected_before_execution(&e.code)
            }
            (ApiError::Service(e), Idempotence::Idempotent) => {
                is_retryable_code(&e.code) || is_server_error(e.status)
            }
            (ApiError::Transport { not_sent, .. }, Idempotence::NonIdempotent) => *not_sent,
            (ApiError::Transport { .. }, Idempotence::Idempotent) => true,
            (ApiError::Malformed { .. } | ApiError::TooLarge { .. }, Idempotence::Idempotent) => {
                true
            }
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Service(e) => e.retry_after,
            _ => None,
        }
    }

    /// Whether a non-idempotent call failed in a way that leaves its effect unknown.
    fn leaves_outcome_unknown(&self) -> bool {
        match self {
            ApiError::Transport { not_sent, .. } => !not_sent,
            ApiError::Malformed { .. } | ApiError::TooLarge { .. } => true,
            // Any 5xx is a server-side failure (the official SDK raises every one as
            // a ServerException): the operation may have run before it failed.
            ApiError::Service(e) => {
                (is_retryable_code(&e.code) || is_server_error(e.status))
                    && !is_rejected_before_execution(&e.code)
            }
            _ => false,
        }
    }
}

/// Codes that mean "try again later" for any call that may be repeated.
/// `LastOperationNotFinished` is Alidns refusing a change while another change of
/// the same domain is still being applied (retried by Alibaba's terraform provider).
pub fn is_retryable_code(code: &str) -> bool {
    code.starts_with("Throttling")
        || matches!(
            code,
            "ServiceUnavailable"
                | "ServiceUnAvailable"
                | "InternalError"
                | "SignatureNonceUsed"
                | "LastOperationNotFinished"
        )
}

/// An HTTP 5xx status: the server failed, whatever Code it sent.
fn is_server_error(status: u16) -> bool {
    (500..600).contains(&status)
}

/// Codes the gateway answers before the operation runs, so even a paid call can be
/// repeated after them.
fn is_rejected_before_execution(code: &str) -> bool {
    code.starts_with("Throttling") || code == "SignatureNonceUsed"
}

/// Reads `TimeLeft:<ms>` from the `x-ratelimit-user-api` / `x-ratelimit-user`
/// headers (format `Limit:1,Remain:0,TimeLeft:2000,Reset:1234`), taking the larger.
/// The unit is not documented; milliseconds matches the values seen.
pub fn ratelimit_time_left(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    ["x-ratelimit-user-api", "x-ratelimit-user"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok())
        .filter_map(|v| {
            v.split(',').find_map(|part| {
                let (k, n) = part.split_once(':')?;
                (k.trim() == "TimeLeft").then(|| n.trim().parse::<u64>().ok())?
            })
        })
        .max()
        .map(Duration::from_millis)
}

/// Reads `x-acs-retry-after`, the wait in milliseconds that the current official
/// SDK honours (alibabacloud_tea_openapi `get_throttling_time_left`); only a
/// positive integer counts.
pub fn acs_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("x-acs-retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// The server's wait hint: `x-acs-retry-after` first (what the current SDK reads),
/// then the older `x-ratelimit-*` TimeLeft, then `Retry-After`.
pub fn server_wait_hint(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    acs_retry_after(headers)
        .or_else(|| ratelimit_time_left(headers))
        .or_else(|| retry_after_header(headers))
}

/// Reads `Retry-After` in seconds; an HTTP date or junk is ignored.
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Client-side rate limits, one token bucket per action (CAS limits each action
/// separately: ListUserCertificateOrder 10/s, most others 100/s). Shared by every
/// client of the process. Each bucket allows bursts of one second's worth; callers
/// reserve a token and wait for its time, so waiters are served in order.
#[derive(Debug)]
pub struct RateLimiter {
    default_rate: f64,
    rates: std::collections::HashMap<String, f64>,
    buckets: Mutex<std::collections::HashMap<String, Arc<TokenBucket>>>,
}

#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    // tokio's clock, so that paused-time tests see the bucket refill.
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            state: Mutex::new((capacity, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.capacity) - 1.0;
            st.1 = now;
            if st.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-st.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl RateLimiter {
    /// `default_rate` calls per second for every action without its own rate.
    pub fn new(default_rate: f64) -> Self {
        RateLimiter {
            default_rate,
            rates: Default::default(),
            buckets: Mutex::new(Default::default()),
        }
    }

    /// `default_rate` for every action, and each entry of `rates` (action to calls
    /// per second) for its action: the limiter `api.rate_limit_per_second` and
    /// `api.rate_limits` describe.
    pub fn from_rates(default_rate: f64, rates: &std::collections::BTreeMap<String, f64>) -> Self {
        rates
            .iter()
            .fold(RateLimiter::new(default_rate), |l, (action, rate)| {
                l.with_action(action, *rate)
            })
    }

    /// Gives `action` its own rate.
    pub fn with_action(mut self, action: &str, rate: f64) -> Self {
        self.rates.insert(action.to_owned(), rate);
        self
    }

    /// Takes one token of `action`'s bucket, waiting until it is available.
    pub async fn acquire(&self, action: &str) {
        let bucket = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            b.entry(action.to_owned())
                .or_insert_with(|| {
                    Arc::new(TokenBucket::new(
                        self.rates.get(action).copied().unwrap_or(self.default_rate),
                    ))
                })
                .clone()
        };
        bucket.acquire().await;
    }
}

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

/// Told of every attempt: action, outcome code (`OK`, the Alibaba Code, or a
/// class such as `transport`), and how long it took. Metrics hang here.
pub type Observer = Arc<dyn Fn(&str, &str, Duration) + Send + Sync>;

/// A signed-request client for one RPC product.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: ClientSettings,
    host: String,
    credentials: Arc<CredentialsProvider>,
    limiter: Arc<RateLimiter>,
    observer: Option<Observer>,
}

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
        })
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
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
        let max = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.attempt(action, params, attempt).await {
                Ok((value, request_id)) => {
                    return match serde_json::from_value::<T>(value) {
                        Ok(body) => Ok(Response {
                            body,
                            request_id,
                            attempts: attempt,
                        }),
                        Err(e) => Err(ApiError::Schema {
                            action: action.to_owned(),
                            request_id,
                            detail: e.to_string(),
                        }),
                    };
                }
                Err(e) => e,
            };
            if !err.retryable(idem) {
                if idem == Idempotence::NonIdempotent && err.leaves_outcome_unknown() {
                    return Err(ApiError::Ambiguous {
                        action: action.to_owned(),
                        cause: Box::new(err),
                    });
                }
                return Err(err);
            }
            if attempt >= max {
                return Err(ApiError::Exhausted {
                    action: action.to_owned(),
                    attempts: attempt,
                    last: Box::new(err),
                });
            }
            let wait = backoff(attempt, err.retry_after());
            warn!(
                action,
                attempt,
                error = %err,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
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
        self.limiter.acquire(action).await;
        let cred = self.credentials.get().await?;
        let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let nonce = new_nonce();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-acs-action".into(), action.to_owned()),
            ("x-acs-version".into(), self.settings.version.to_owned()),
            ("x-acs-date".into(), date),
            ("x-acs-signature-nonce".into(), nonce),
            (
                "x-acs-content-sha256".into(),
                EMPTY_PAYLOAD_SHA256.to_owned(),
            ),
        ];
        if let Some(token) = &cred.security_token {
            headers.push(("x-acs-security-token".into(), token.expose().to_owned()));
            headers.push(("x-acs-accesskey-id".into(), cred.access_key_id.clone()));
        }
        let sig = sign::sign_v3(
            &V3Input {
                method: "POST",
                path: "/",
                query: params,
                headers: &headers,
                payload_hash: EMPTY_PAYLOAD_SHA256,
            },
            cred.access_key_secret.expose().as_bytes(),
        );
        let mut url = self.settings.endpoint.clone();
        url.set_path("/");
        url.set_query(
            Some(&sign::canonical_query(params))
                .filter(|q| !q.is_empty())
                .map(String::as_str),
        );

        let mut req = self.http.post(url);
        for (k, v) in &headers {
            // reqwest sets Host from the URL; sending it twice would be wrong.
            if k != "host" {
                req = req.header(k, v);
            }
        }
        req = req.header(
            reqwest::header::AUTHORIZATION,
            sign::authorization_v3(&cred.access_key_id, &sig),
        );

        let started = Instant::now();
        let result = self.exchange(action, req).await;
        if let Some(obs) = &self.observer {
            obs(
                action,
                result.as_ref().map_or_else(|e| e.label(), |_| "OK"),
                started.elapsed(),
            );
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok((_, request_id)) => {
                info!(action, request_id = %request_id, attempt, duration_ms = elapsed_ms, "call ok");
            }
            Err(e) => {
                let request_id = match e {
                    ApiError::Service(s) => s.request_id.as_str(),
                    ApiError::Malformed { request_id, .. } => request_id.as_str(),
                    _ => "",
                };
                info!(
                    action,
                    request_id,
                    attempt,
                    duration_ms = elapsed_ms,
                    code = e.label(),
                    "call failed"
                );
                if matches!(
                    e.code(),
                    Some("SignatureDoesNotMatch" | "IncompleteSignature")
                ) && let ApiError::Service(svc) = e
                {
                    // The string to sign holds only a hash, never the secret.
                    let server = svc
                        .message
                        .split_once("server string to sign is:")
                        .map_or("(not given)", |(_, s)| s.trim());
                    debug!(
                        action,
                        ours = %sig.string_to_sign.replace('\n', "\\n"),
                        server = %server,
                        "signature mismatch: compare the two strings to sign"
                    );
                }
            }
        }
        result
    }

    async fn exchange(
        &self,
        action: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(serde_json::Value, String), ApiError> {
        let transport = |e: reqwest::Error| ApiError::Transport {
            action: action.to_owned(),
            not_sent: e.is_connect(),
            detail: if e.is_timeout() {
                format!("timed out after {:?}", self.settings.timeout)
            } else {
                error_chain(&e.without_url())
            },
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let location = resp.headers().get(reqwest::header::LOCATION).map_or_else(
                || "(no Location header)".to_owned(),
                |v| preview(v.as_bytes()),
            );
            return Err(ApiError::Redirect {
                action: action.to_owned(),
                status,
                location,
            });
        }
        let hint = server_wait_hint(resp.headers());
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(ApiError::TooLarge {
                action: action.to_owned(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::TooLarge {
                    action: action.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let malformed = |detail: String| ApiError::Malformed {
            action: action.to_owned(),
            status,
            request_id: String::new(),
            detail,
        };
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| malformed(format!("body is not JSON ({e}): {}", preview(&body))))?;
        if !(200..300).contains(&status) {
            let err: ErrorBody = serde_json::from_value(value).unwrap_or_default();
            return Err(match err.code {
                Some(code) => ApiError::Service(Box::new(ServiceError {
                    action: action.to_owned(),
                    status,
                    code,
                    message: err.message.unwrap_or_default(),
                    request_id: err.request_id.unwrap_or_default(),
                    host_id: err.host_id,
                    retry_after: hint,
                })),
                None => malformed(format!("error answer without a Code: {}", preview(&body))),
            });
        }
        let request_id = value
            .get("RequestId")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        if !value.is_object() {
            return Err(ApiError::Malformed {
                action: action.to_owned(),
                status,
                request_id,
                detail: "body is JSON but not an object".into(),
            });
        }
        Ok((value, request_id))
    }
}

/// A short, single-line look at a body for error messages.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 200 {
        s.push('…');
    }
    s
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// 32 random hex characters, unique per attempt.
fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Full jitter: a random wait in `[0, min(cap, base * 2^(attempt-1))]`; a server hint
/// sets the floor (never more than [`HINT_CAP`]).
pub fn backoff(attempt: u32, hint: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let jitter = Duration::from_secs_f64(rand::rng().random::<f64>() * ceiling.as_secs_f64());
    match hint {
        Some(h) => h.min(HINT_CAP) + jitter / 4,
        None => jitter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_code() {
        for code in [
            "Throttling",
            "Throttling.User",
            "Throttling.Api",
            "ServiceUnavailable",
            "InternalError",
            "SignatureNonceUsed",
            "LastOperationNotFinished",
        ] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in [
            "InvalidParameter",
            "SignatureDoesNotMatch",
            "Forbidden.RAM",
            "InvalidAccessKeyId.NotFound",
            "MissingParameter",
        ] {
            assert!(!is_retryable_code(code), "{code}");
        }
        let svc = |code: &str| {
            ApiError::Service(Box::new(ServiceError {
                action: "A".into(),
                status: 500,
                code: code.into(),
                message: String::new(),
                request_id: String::new(),
                host_id: None,
                retry_after: None,
            }))
        };
        // A paid call is repeated only when the gateway refused it before running it.
        assert!(svc("Throttling.User").retryable(Idempotence::NonIdempotent));
        assert!(!svc("InternalError").retryable(Idempotence::NonIdempotent));
        assert!(svc("InternalError").leaves_outcome_unknown());
        // Any 5xx is a server failure: reads retry it, a paid call treats its outcome
        // as unknown; the same unknown code under 4xx is a refusal.
        let with_status = |code: &str, status: u16| {
            ApiError::Service(Box::new(ServiceError {
                action: "A".into(),
                status,
                code: code.into(),
                message: String::new(),
                request_id: String::new(),
                host_id: None,
                retry_after: None,
            }))
        };
        assert!(with_status("UnknownError", 502).retryable(Idempotence::Idempotent));
        assert!(!with_status("UnknownError", 502).retryable(Idempotence::NonIdempotent));
        assert!(with_status("UnknownError", 500).leaves_outcome_unknown());
        assert!(!with_status("UnknownError", 400).retryable(Idempotence::Idempotent));
        assert!(!with_status("UnknownError", 400).leaves_outcome_unknown());
        assert!(!with_status("InvalidParameter", 400).leaves_outcome_unknown());
        // Throttling refuses before running the call, whatever the status.
        assert!(with_status("Throttling.User", 503).retryable(Idempotence::NonIdempotent));
        assert!(!with_status("Throttling.User", 503).leaves_outcome_unknown());
        let redirect = ApiError::Redirect {
            action: "A".into(),
            status: 302,
            location: "http://elsewhere/".into(),
        };
        assert!(!redirect.retryable(Idempotence::Idempotent));
        assert!(!redirect.leaves_outcome_unknown());
        let timeout = ApiError::Transport {
            action: "A".into(),
            detail: "timed out".into(),
            not_sent: false,
        };
        assert!(timeout.retryable(Idempotence::Idempotent));
        assert!(!timeout.retryable(Idempotence::NonIdempotent));
        assert!(timeout.leaves_outcome_unknown());
        let refused = ApiError::Transport {
            action: "A".into(),
            detail: "refused".into(),
            not_sent: true,
        };
        assert!(refused.retryable(Idempotence::NonIdempotent));
    }

    #[test]
    fn rate_limit_hints_are_parsed() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-ratelimit-user-api",
            "Limit:1,Remain:0,TimeLeft:2000,Reset:1234"
                .parse()
                .expect("hv"),
        );
        h.insert(
            "x-ratelimit-user",
            "Limit:10,Remain:0,TimeLeft:500,Reset:1"
                .parse()
                .expect("hv"),
        );
        assert_eq!(ratelimit_time_left(&h), Some(Duration::from_millis(2000)));
        h.insert("retry-after", "7".parse().expect("hv"));
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("hv"),
        );
        assert_eq!(retry_after_header(&h), None);
        h.insert("x-ratelimit-user-api", "garbage".parse().expect("hv"));
        assert_eq!(ratelimit_time_left(&h), Some(Duration::from_millis(500)));
    }

    #[test]
    fn x_acs_retry_after_is_read_first_in_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().expect("hv"));
        assert_eq!(server_wait_hint(&h), Some(Duration::from_secs(7)));
        h.insert(
            "x-ratelimit-user-api",
            "Limit:1,Remain:0,TimeLeft:2000,Reset:1"
                .parse()
                .expect("hv"),
        );
        assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(2000)));
        h.insert("x-acs-retry-after", "1500".parse().expect("hv"));
        assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(1500)));
        // As in the SDK, only a positive integer counts.
        for junk in ["0", "-5", "1.5", "soon", ""] {
            h.insert("x-acs-retry-after", junk.parse().expect("hv"));
            assert_eq!(acs_retry_after(&h), None, "{junk:?}");
            assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(2000)));
        }
    }

    #[test]
    fn backoff_stays_within_bounds() {
        for attempt in 1..40 {
            let cap = BACKOFF_BASE
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(attempt, None) <= cap);
            }
        }
        let hinted = backoff(1, Some(Duration::from_secs(2)));
        assert!(
            hinted >= Duration::from_secs(2) && hinted <= Duration::from_secs(2) + BACKOFF_BASE
        );
        let capped = backoff(3, Some(Duration::from_secs(3600)));
        assert!(capped >= HINT_CAP && capped <= HINT_CAP + BACKOFF_CAP / 4);
    }

    #[test]
    fn nonces_are_unique_hex() {
        let a = new_nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_nonce());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_calls() {
        let l = RateLimiter::new(4.0).with_action("Fast", 1000.0);
        let start = tokio::time::Instant::now();
        for _ in 0..12 {
            l.acquire("Slow").await;
            // Another action has its own bucket and does not slow this one down.
            l.acquire("Fast").await;
        }
        // 4 tokens of burst, then 8 more at 4 per second: about 2 s of (virtual) time.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
    }
}
