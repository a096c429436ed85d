//! Warnings for secrets that other users of the host could read, and what
//! `check-config` checks of the credentials (offline, and `--online`: one
//! read-only call and the clock skew against the endpoint's `Date`).

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use super::{Config, CredentialsConfig, SecretSource};
use crate::cas::api::OrderFilter;
use crate::cas::credentials::{CredentialsError, CredentialsProvider, Environment};
use crate::notify::{ChannelKind as NotifyKind, UrlSource};

/// Warnings for secrets that other users could read: an inline secret in a config
/// file, or a secret file, readable by group or others.
pub(super) fn secret_exposure(cfg: &Config, config_mode: u32) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(CredentialsConfig::AccessKey {
        secret,
        security_token,
        ..
    }) = &cfg.credentials
    {
        let inline = matches!(secret, SecretSource::Inline(_)) || security_token.is_some();
        if inline && config_mode & 0o077 != 0 {
            w.push(format!(
                "{} holds a secret and is readable by group or others (mode {:04o}); chmod 600 it, or move the secret to access_key_secret_file",
                cfg.source.display(),
                config_mode & 0o7777
            ));
        }
        if let SecretSource::File(f) = secret
            && let Ok(m) = std::fs::metadata(f)
            && m.permissions().mode() & 0o077 != 0
        {
            w.push(format!(
                "{} (the AccessKey secret) is readable by group or others (mode {:04o}); chmod 600 it",
                f.display(),
                m.permissions().mode() & 0o7777
            ));
        }
    }
    w.extend(notify_exposure(cfg, config_mode));
    w
}

/// The same for the notification channels: their secret files, and a robot URL
/// (which carries the robot's token) written inline in a readable config file.
fn notify_exposure(cfg: &Config, config_mode: u32) -> Vec<String> {
    let mut w = Vec::new();
    for (i, ch) in cfg.notify.iter().enumerate() {
        for f in super::notify::secret_files(ch) {
            if let Ok(m) = std::fs::metadata(&f)
                && m.permissions().mode() & 0o077 != 0
            {
                w.push(format!(
                    "{} (a secret of notify channel {}) is readable by group or others (mode {:04o}); chmod 600 it",
                    f.display(),
                    ch.name,
                    m.permissions().mode() & 0o7777
                ));
            }
        }
        let robot_url_inline = matches!(
            &ch.kind,
            NotifyKind::DingTalk {
                url: UrlSource::Inline(_),
                ..
            } | NotifyKind::Feishu {
                url: UrlSource::Inline(_),
                ..
            } | NotifyKind::WeCom {
                url: UrlSource::Inline(_)
            }
        );
        if robot_url_inline && config_mode & 0o077 != 0 {
            w.push(format!(
                "notify[{i}].url carries the robot's token and {} is readable by group or others (mode {:04o}); chmod 600 it, or move the URL to url_file",
                cfg.source.display(),
                config_mode & 0o7777
            ));
        }
    }
    w
}

/// What `check-config` says about the credentials: the source the daemon would
/// use, read as the running user (so a missing, unreadable or empty secret file is
/// an error here, not at the first pass). An ECS role is only named: its metadata
/// service is asked at first use, or by `check-config --online`.
pub fn check_credentials(
    cfg: &Config,
    env: &Environment,
) -> Result<CredentialsProvider, CredentialsError> {
    CredentialsProvider::resolve(cfg.credentials.as_ref(), env)
}

/// CAS refuses a request whose signature date is further than this from its own
/// clock (`x-acs-date`, ACS3-HMAC-SHA256).
pub const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// What `check-config --online` found.
#[derive(Debug)]
pub struct OnlineCheck {
    /// The one read-only call (ListUserCertificateOrder, one entry): what it said.
    pub call: Result<String, String>,
    /// This host's clock minus the endpoint's `Date`, or why it is not known.
    pub skew: Result<chrono::TimeDelta, String>,
}

impl OnlineCheck {
    pub fn ok(&self) -> bool {
        self.call.is_ok() && self.skew.as_ref().is_ok_and(|s| s.abs() < MAX_SKEW)
    }

    /// The lines `check-config --online` prints.
    pub fn render(&self, endpoint: &str) -> String {
        let call = match &self.call {
            Ok(s) => format!("{endpoint}: {s}"),
            Err(e) => format!("{endpoint}: the read-only call failed: {e}"),
        };
        let clock = match &self.skew {
            Ok(s) => {
                let secs = s.num_seconds();
                let side = if secs >= 0 { "ahead of" } else { "behind" };
                let verdict = if s.abs() >= MAX_SKEW {
                    "; CAS refuses signatures more than 15 minutes off: fix the clock (NTP)"
                } else {
                    ""
                };
                format!(
                    "clock: this host is {}s {side} the endpoint's Date header{verdict}",
                    secs.abs()
                )
            }
            Err(e) => format!("clock: not checked: {e}"),
        };
        format!("{call}\n{clock}\n")
    }
}

/// One read-only signed call, and the clock of the endpoint from its `Date`
/// header (an unsigned request to the endpoint's root, which answers whatever
/// the credentials; hyper and Alibaba's gateway both send `Date`).
pub async fn check_online(cfg: &Config, creds: Arc<CredentialsProvider>) -> OnlineCheck {
    let skew = clock_skew(&cfg.api.endpoint, cfg.api.timeout).await;
    let call = match crate::cas::cas_client(&cfg.api, creds, Arc::new(cfg.api.limiter()), None) {
        Err(e) => Err(e.to_string()),
        Ok(cas) => cas
            .list_orders_page(&OrderFilter::default(), 1, 1)
            .await
            .map(|r| {
                format!(
                    "ListUserCertificateOrder answered: the credentials work ({} orders, RequestId {})",
                    r.body.total_count, r.request_id
                )
            })
            .map_err(|e| e.to_string()),
    };
    OnlineCheck { call, skew }
}

/// This host's clock minus the server's, taken at the middle of the exchange.
async fn clock_skew(
    endpoint: &reqwest::Url,
    timeout: std::time::Duration,
) -> Result<chrono::TimeDelta, String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let sent = chrono::Utc::now();
    let resp = http
        .get(endpoint.clone())
        .send()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {e}"))?;
    let received = chrono::Utc::now();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{endpoint} sent no Date header"))?;
    let server = chrono::DateTime::parse_from_rfc2822(date)
        .map_err(|e| format!("{endpoint} sent Date {date:?}: {e}"))?;
    let local = sent + (received - sent) / 2;
    Ok(local - server.with_timezone(&chrono::Utc))
}
