//! What is told about every attempt: the [`Observer`] hook that metrics hang on,
//! and the log lines (with the strings to sign compared when a signature is refused).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

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
                info!(
                    action,
                    request_id = e.request_id(),
                    attempt,
                    duration_ms = elapsed_ms,
                    code = e.label(),
                    "call failed"
                );
                log_signature_mismatch(action, e, string_to_sign);
            }
        }
    }
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
