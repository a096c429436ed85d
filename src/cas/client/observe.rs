//! What is told about every attempt: the [`Observer`] hook that metrics hang on,
//! and the log lines (with the strings to sign compared when a signature is refused).
//!
//! Levels, for an operator: a successful call is INFO; a failed attempt that is
//! tried again is WARN; the failure a call ends with is ERROR, once, unless its
//! caller expects and handles it (a zone probe that misses), then DEBUG.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{ApiClient, ApiError};

/// Told of every attempt: action, outcome code (`OK`, the Alibaba Code, or a
/// class such as `transport`), and how long it took. Metrics hang here.
pub type Observer = Arc<dyn Fn(&str, &str, Duration) + Send + Sync>;

impl ApiClient {
    /// Tells the observer and the log how attempt number `attempt`, begun at
    /// `started`, ended; `string_to_sign` is what this side signed.
    pub(super) fn report_attempt(
        &self,
        action: &str,
        attempt: u32,
        started: Instant,
        result: &Result<(serde_json::Value, String), ApiError>,
        string_to_sign: &str,
    ) {
        if let Some(obs) = &self.observer {
            obs(
                action,
                result.as_ref().map_or_else(|e| e.label(), |_| "OK"),
                started.elapsed(),
            );
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((_, request_id)) => {
                info!(action, request_id = %request_id, attempt, duration_ms = elapsed_ms, "call ok");
            }
            Err(e) => {
                debug!(
                    action,
                    request_id = known(e.request_id()),
                    attempt,
                    duration_ms = elapsed_ms,
                    code = e.label(),
                    "attempt failed"
                );
                log_signature_mismatch(action, e, string_to_sign);
            }
        }
    }
}

/// A failed attempt that is tried again after `wait`.
pub(super) fn log_retry(action: &str, attempt: u32, e: &ApiError, wait: Duration) {
    warn!(
        action,
        attempt,
        code = e.label(),
        request_id = known(e.request_id()),
        wait_ms = wait.as_millis() as u64,
        error = %e,
        "call failed; trying again"
    );
}

/// The failure a call ends with after `attempts`: ERROR, or DEBUG when the caller
/// `handled` it as a normal outcome.
pub(super) fn log_final_failure(action: &str, attempts: u32, e: &ApiError, handled: bool) {
    let (code, request_id) = (e.label(), known(e.request_id()));
    if handled {
        debug!(action, attempts, code, request_id, error = %e, "call answered an outcome the caller handles");
    } else {
        error!(action, attempts, code, request_id, error = %e, "call failed");
    }
}

/// A RequestId when the server sent one: an absent field rather than `request_id=`.
fn known(request_id: &str) -> Option<&str> {
    Some(request_id).filter(|id| !id.is_empty())
}

/// On a refused signature, both strings to sign at debug level, so the two can be
/// compared line by line.
fn log_signature_mismatch(action: &str, e: &ApiError, string_to_sign: &str) {
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
            ours = %string_to_sign.replace('\n', "\\n"),
            server = %server,
            "signature mismatch: compare the two strings to sign"
        );
    }
}
