//! When a failed attempt is tried again: classification of errors by `Code`, HTTP
//! status and the kind of call, and the full-jitter backoff between attempts.

use std::ops::ControlFlow;
use std::time::Duration;

use rand::Rng;

use super::ApiError;

/// First backoff step; doubled per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest single wait between attempts of our own backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest wait a server's hint may impose before the next attempt (the official
/// SDK caps it at 120 s; a daemon pass should not sit longer on one call).
pub const HINT_CAP: Duration = Duration::from_secs(60);

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

impl ApiError {
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

    pub(super) fn retry_after(&self) -> Option<Duration> {
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

/// What follows a failed attempt: `Continue` with the error to retry after, or
/// `Break` with the error the call ends with (ambiguous for a paid call whose
/// outcome is unknown, exhausted after `max` attempts).
pub(super) fn after_failure(
    action: &str,
    err: ApiError,
    idem: Idempotence,
    attempt: u32,
    max: u32,
) -> ControlFlow<ApiError, ApiError> {
    if !err.retryable(idem) {
        if idem == Idempotence::NonIdempotent && err.leaves_outcome_unknown() {
            return ControlFlow::Break(ApiError::Ambiguous {
                action: action.to_owned(),
                cause: Box::new(err),
            });
        }
        return ControlFlow::Break(err);
    }
    if attempt >= max {
        return ControlFlow::Break(ApiError::Exhausted {
            action: action.to_owned(),
            attempts: attempt,
            last: Box::new(err),
        });
    }
    ControlFlow::Continue(err)
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
    use crate::cas::client::ServiceError;

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
}
