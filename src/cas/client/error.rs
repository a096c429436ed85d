//! What a call can fail with: Alibaba's error body, the service's answer, and the
//! client's own classes (transport, redirect, malformed, ...).

use std::time::Duration;

use serde::Deserialize;

use super::MAX_BODY_BYTES;
use super::advice::auth_advice;
use crate::cas::credentials::CredentialsError;

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

/// An error answer from the service: its Code, Message and RequestId; an
/// authentication refusal adds its likely causes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action}: {code}: {message} (RequestId {request_id}, HTTP {status}){}", auth_advice(.code, .action))]
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

/// Whether `code` says the caller was not authenticated or not authorised: a
/// wrong or disabled AccessKey, a refused signature or timestamp (clock skew), an
/// expired STS token, or a RAM policy without the action.
pub fn is_auth_code(code: &str) -> bool {
    code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || matches!(
            code,
            "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "IllegalTimestamp"
                | "InvalidTimeStamp.Expired"
                | "Forbidden.RAM"
                | "Forbidden"
                | "NoPermission"
                | "credentials"
        )
}

impl ApiError {
    /// Whether the call failed for authentication or authorisation (see
    /// [`is_auth_code`]), credentials that could not be obtained included.
    pub fn is_auth_failure(&self) -> bool {
        is_auth_code(self.label())
    }

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

    /// The RequestId the failed answer carried, or `""`.
    pub(super) fn request_id(&self) -> &str {
        match self {
            ApiError::Service(s) => s.request_id.as_str(),
            ApiError::Malformed { request_id, .. } | ApiError::Schema { request_id, .. } => {
                request_id.as_str()
            }
            ApiError::Exhausted { last, .. } | ApiError::Ambiguous { cause: last, .. } => {
                last.request_id()
            }
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_codes_are_told_from_other_failures() {
        for code in [
            "InvalidAccessKeyId.NotFound",
            "InvalidAccessKeyId.Inactive",
            "SignatureDoesNotMatch",
            "InvalidTimeStamp.Expired",
            "InvalidSecurityToken.Expired",
            "Forbidden.RAM",
            "NoPermission",
        ] {
            assert!(is_auth_code(code), "{code}");
        }
        for code in [
            "Throttling.User",
            "InternalError",
            "transport",
            "OK",
            "other",
        ] {
            assert!(!is_auth_code(code), "{code}");
        }
        let transport = ApiError::Transport {
            action: "ListUserCertificateOrder".into(),
            detail: "connection refused".into(),
            not_sent: true,
        };
        assert!(!transport.is_auth_failure());
        let refused = ApiError::Exhausted {
            action: "ListUserCertificateOrder".into(),
            attempts: 1,
            last: Box::new(ApiError::Service(Box::new(ServiceError {
                action: "ListUserCertificateOrder".into(),
                status: 404,
                code: "InvalidAccessKeyId.NotFound".into(),
                message: "Specified access key is not found.".into(),
                request_id: "R".into(),
                host_id: None,
                retry_after: None,
            }))),
        };
        assert!(refused.is_auth_failure());
    }
}
