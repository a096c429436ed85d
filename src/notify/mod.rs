//! Notifications: tells people where they work (a webhook, DingTalk, Feishu/Lark,
//! WeCom group robots, e-mail) when a certificate was renewed or installed, failed,
//! is blocked, expires soon with nothing on the way to fix it, or its resource plan
//! runs low. Sending happens in a background task fed by a bounded channel, so a
//! slow or dead receiver never delays a renewal; each message is sent at most once
//! per channel, event and certificate per UTC day (remembered in the state
//! directory), retried with backoff, and scrubbed of secrets and private keys.
//!
//! Settings are plain types defined here ([`ChannelSpec`]); `config` produces them.
//! What a pass means for people (the events) is `announce`'s business, above.

mod dedup;
mod event;
mod format;
mod http;
mod sign;
mod smtp;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use event::{Event, rfc3339};
pub use format::scrub;
pub use http::SIGNATURE_HEADER;
pub use smtp::check_mailbox;
pub use worker::{Channel, Delivery, FINISH_WITHIN, open_channels, send_test, start};

/// What a message is about. `test` is what `cas-renewd notify --test` sends; it
/// passes every filter and is never deduplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A renewed certificate was installed.
    Renewed,
    /// An existing order's certificate was installed (first install, or a renewal
    /// made elsewhere).
    Installed,
    /// A certificate's pass failed after the client's retries (or the whole pass did).
    Failed,
    /// A certificate needs the operator; the message says why.
    Blocked,
    /// The installed certificate expires within `expiring_within` and this pass
    /// neither renewed it nor has an order on the way.
    Expiring,
    /// A resource plan has `quota_low_at` units or fewer left (DescribePackageState).
    QuotaLow,
    Test,
}

impl EventKind {
    /// Every event a channel may filter on (`events:`), in the documented order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Renewed,
        EventKind::Installed,
        EventKind::Failed,
        EventKind::Blocked,
        EventKind::Expiring,
        EventKind::QuotaLow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Renewed => "renewed",
            EventKind::Installed => "installed",
            EventKind::Failed => "failed",
            EventKind::Blocked => "blocked",
            EventKind::Expiring => "expiring",
            EventKind::QuotaLow => "quota_low",
            EventKind::Test => "test",
        }
    }
}

/// Where a robot's URL comes from. DingTalk's `access_token`, a Feishu hook id and
/// a WeCom `key` sit in the URL and let anyone post to the group, so the URL may be
/// kept in a file like any other secret.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlSource {
    Inline(url::Url),
    File(PathBuf),
}

/// Only the scheme and host of an inline URL: its path or query may be the token.
impl std::fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlSource::Inline(u) => write!(
                f,
                "Inline(\"{}://{}/[redacted]\")",
                u.scheme(),
                u.host_str().unwrap_or_default()
            ),
            UrlSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// One channel as configured (`notify[]`).
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    /// How reports and the sent-record name the channel (`name:`, else `<type>-<n>`).
    pub name: String,
    pub kind: ChannelKind,
    /// The events this channel receives (all when the configuration says none).
    pub events: Vec<EventKind>,
    /// `expiring` fires when the installed certificate expires within this.
    pub expiring_within: Duration,
    /// `quota_low` fires when a plan has this many units or fewer left.
    pub quota_low_at: i64,
}

impl ChannelSpec {
    /// Whether this channel wants `e`.
    pub fn wants(&self, e: &Event) -> bool {
        match e.event {
            EventKind::Test => true,
            k if !self.events.contains(&k) => false,
            EventKind::Expiring => e.seconds_left.is_some_and(|s| {
                s <= i64::try_from(self.expiring_within.as_secs()).unwrap_or(i64::MAX)
            }),
            EventKind::QuotaLow => e.units_left.is_some_and(|u| u <= self.quota_low_at),
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// A generic JSON POST; with a secret, `X-Cas-Renewd-Signature` = hex HMAC-SHA256
    /// of the body.
    Webhook {
        url: UrlSource,
        secret_file: Option<PathBuf>,
    },
    /// DingTalk custom robot; with a secret, the documented `timestamp` and `sign`.
    DingTalk {
        url: UrlSource,
        secret_file: Option<PathBuf>,
    },
    /// Feishu/Lark custom bot; with a secret, `timestamp` and `sign` in the body.
    Feishu {
        url: UrlSource,
        secret_file: Option<PathBuf>,
    },
    /// WeCom group robot: the `key` in the URL is the only credential.
    WeCom {
        url: UrlSource,
    },
    Smtp(SmtpSpec),
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::DingTalk { .. } => "dingtalk",
            ChannelKind::Feishu { .. } => "feishu",
            ChannelKind::WeCom { .. } => "wecom",
            ChannelKind::Smtp(_) => "smtp",
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// No TLS at all: only towards a relay on a loopback address.
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// Extra trust anchors (PEM) for a relay with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// Why a channel could not be opened or a message not delivered. Never holds a
/// URL (robot URLs carry tokens) nor a secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{path}: {message}")]
    SecretFile { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("sending failed: {0}")]
    Send(String),
    #[error("the receiver refused the message: {0}")]
    Refused(String),
}

/// How long one send may take, connect to answer.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per message and channel; the wait doubles from [`RETRY_BASE`].
pub(crate) const ATTEMPTS: u32 = 4;
pub(crate) const RETRY_BASE: Duration = Duration::from_millis(500);
/// Events waiting for the sender; more are dropped (with a warning) rather than
/// making a pass wait.
pub(crate) const QUEUE: usize = 256;

/// A receiver's URL: `https://`, or `http://` only towards a loopback address
/// (a local relay, the tests' receivers); no user information.
pub fn check_url(s: &str) -> Result<url::Url, String> {
    // The URL may carry a token: messages name its parts, never the whole.
    let url = url::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err("has no host".into()),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(
                "uses plain http:// towards a host that is not loopback; use https://".into(),
            );
        }
        other => return Err(format!("has scheme {other:?}; use https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("carries user information; remove it".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_a_robot_urls_token() {
        let u = check_url("https://oapi.dingtalk.com/robot/send?access_token=tok-0123456789")
            .expect("valid");
        let d = format!("{:?}", UrlSource::Inline(u));
        assert_eq!(d, "Inline(\"https://oapi.dingtalk.com/[redacted]\")");
    }

    #[test]
    fn receiver_urls_are_https_or_loopback() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://[::1]/x").is_ok());
        assert!(check_url("http://hooks.example.com/x").is_err());
        assert!(check_url("ftp://hooks.example.com/x").is_err());
        assert!(check_url("https://user:pw@hooks.example.com/x").is_err());
        assert!(check_url("not a url").is_err());
    }
}
