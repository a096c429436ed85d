//! One notification: what the generic webhook receives as its JSON body, and
//! what the robots and e-mail render as text.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::EventKind;

/// One notification, as the generic webhook receives it (its JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: EventKind,
    /// The certificate's configured name (`*` for a pass that failed as a whole).
    pub cert: String,
    pub domain: String,
    pub message: String,
    /// Expiry of the installed certificate, RFC 3339, or null when none is installed.
    pub not_after: Option<String>,
    /// When the event was seen, RFC 3339 UTC.
    pub time: String,
    /// Seconds until `not_after` (negative once expired), when it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_left: Option<i64>,
    /// `quota_low`: the resource plan's product code and units left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units_left: Option<i64>,
}

impl Event {
    pub fn new(
        event: EventKind,
        cert: &str,
        domain: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Event {
        Event {
            event,
            cert: cert.to_owned(),
            domain: domain.to_owned(),
            message: message.to_owned(),
            not_after: None,
            time: rfc3339(now),
            seconds_left: None,
            product_code: None,
            units_left: None,
        }
    }
}

/// A time as RFC 3339 UTC, to the second (`2026-11-29T03:17:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
