//! Opening the configured channels (reading their secret files) and the
//! background task that delivers events: filter, deduplicate, scrub, send with
//! retries and backoff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::dedup::Sent;
use super::http::{self, HttpTarget, Robot};
use super::smtp::{self, SmtpTarget};
use super::{ATTEMPTS, ChannelKind, ChannelSpec, Event, NotifyError, QUEUE, RETRY_BASE, UrlSource};
use crate::secret::Secret;
use crate::store::safe_fs;

/// Secret files larger than this are refused: a token or password is short.
const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// A CA bundle may hold several certificates.
const MAX_CA_BYTES: u64 = 1024 * 1024;

enum Target {
    Http(HttpTarget),
    Smtp(SmtpTarget),
}

/// A channel ready to send: its settings and the secrets read from its files.
pub struct Channel {
    pub spec: ChannelSpec,
    target: Target,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.spec.name)
            .field("type", &self.spec.kind.type_name())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Every secret this channel holds, to be scrubbed from anything it sends.
    fn secrets(&self) -> Vec<&str> {
        match &self.target {
            Target::Http(t) => [Some(&t.url), t.secret.as_ref()]
                .into_iter()
                .flatten()
                .map(Secret::expose)
                .collect(),
            Target::Smtp(t) => t.password.iter().map(Secret::expose).collect(),
        }
    }
}

/// The trimmed content of a secret file; a missing, empty, linked or special file
/// is an error that names it (and never quotes it).
fn read_secret(path: &Path) -> Result<Secret, NotifyError> {
    let err = |message: String| NotifyError::SecretFile {
        path: path.to_owned(),
        message,
    };
    let data = safe_fs::read_regular(path, MAX_SECRET_BYTES)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("does not exist".into()))?;
    let text = String::from_utf8(data).map_err(|_| err("is not UTF-8 text".into()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(Secret::new(value))
}

fn read_url(src: &UrlSource) -> Result<Secret, NotifyError> {
    match src {
        UrlSource::Inline(u) => Ok(Secret::new(u.as_str())),
        UrlSource::File(path) => {
            let s = read_secret(path)?;
            super::check_url(s.expose()).map_err(|message| NotifyError::SecretFile {
                path: path.clone(),
                message,
            })?;
            Ok(s)
        }
    }
}

fn open(spec: &ChannelSpec) -> Result<Channel, NotifyError> {
    let secret = |f: &Option<PathBuf>| f.as_deref().map(read_secret).transpose();
    let http = |robot, url: &UrlSource, s: &Option<PathBuf>| -> Result<Target, NotifyError> {
        Ok(Target::Http(HttpTarget {
            robot,
            url: read_url(url)?,
            secret: secret(s)?,
        }))
    };
    let target = match &spec.kind {
        ChannelKind::Webhook { url, secret_file } => http(Robot::Webhook, url, secret_file)?,
        ChannelKind::DingTalk { url, secret_file } => http(Robot::DingTalk, url, secret_file)?,
        ChannelKind::Feishu { url, secret_file } => http(Robot::Feishu, url, secret_file)?,
        ChannelKind::WeCom { url } => http(Robot::WeCom, url, &None)?,
        ChannelKind::Smtp(s) => Target::Smtp(SmtpTarget {
            spec: s.clone(),
            password: secret(&s.password_file)?,
            ca_pem: match &s.ca_file {
                Some(p) => Some(
                    safe_fs::read_regular(p, MAX_CA_BYTES)
                        .map_err(|e| NotifyError::Invalid(e.to_string()))?
                        .ok_or_else(|| {
                            NotifyError::Invalid(format!("{}: does not exist", p.display()))
                        })?,
                ),
                None => None,
            },
        }),
    };
    Ok(Channel {
        spec: spec.clone(),
        target,
    })
}

/// Opens every channel; those that cannot be opened (a missing secret file) are
/// returned apart, by name, so that one broken channel silences no other.
pub fn open_channels(specs: &[ChannelSpec]) -> (Vec<Channel>, Vec<(String, NotifyError)>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for s in specs {
        match open(s) {
            Ok(c) => ok.push(c),
            Err(e) => failed.push((s.name.clone(), e)),
        }
    }
    (ok, failed)
}

async fn send_once(http: &reqwest::Client, ch: &Channel, e: &Event) -> Result<(), NotifyError> {
    match &ch.target {
        Target::Http(t) => http::send(http, t, e).await,
        Target::Smtp(t) => smtp::send(t, e).await,
    }
}

/// `e` as it may leave the host: its message scrubbed of private keys and of
/// every channel's secrets.
fn scrubbed(e: &Event, channels: &[Channel]) -> Event {
    let secrets: Vec<&str> = channels.iter().flat_map(Channel::secrets).collect();
    let mut e = e.clone();
    e.message = super::scrub(&e.message, &secrets);
    e
}

/// Sends with up to [`ATTEMPTS`] tries, waiting twice as long after each failure.
async fn deliver(http: &reqwest::Client, ch: &Channel, e: &Event) -> Result<(), NotifyError> {
    let mut wait = RETRY_BASE;
    let mut attempt = 1;
    loop {
        match send_once(http, ch, e).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < ATTEMPTS => {
                warn!(channel = %ch.spec.name, event = e.event.as_str(), cert = %e.cert, attempt, error = %err, "notification not delivered; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The result of one channel's test message.
#[derive(Debug)]
pub struct Delivery {
    pub channel: String,
    pub channel_type: &'static str,
    pub result: Result<(), NotifyError>,
}

/// Sends `e` (a test event) to every channel, now and without deduplication.
pub async fn send_test(channels: &[Channel], e: &Event) -> Vec<Delivery> {
    let http = match http::client() {
        Ok(c) => c,
        Err(err) => {
            return channels
                .iter()
                .map(|c| Delivery {
                    channel: c.spec.name.clone(),
                    channel_type: c.spec.kind.type_name(),
                    result: Err(NotifyError::Send(err.to_string())),
                })
                .collect();
        }
    };
    let e = scrubbed(e, channels);
    let mut out = Vec::new();
    for c in channels {
        out.push(Delivery {
            channel: c.spec.name.clone(),
            channel_type: c.spec.kind.type_name(),
            result: deliver(&http, c, &e).await,
        });
    }
    out
}

/// Starts the sender: events put on the returned queue are delivered in the
/// background; the task ends once every sender is dropped and the queue is empty.
pub fn start(channels: Vec<Channel>, state_dir: PathBuf) -> (mpsc::Sender<Event>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, tokio::spawn(run(rx, channels, state_dir)))
}

async fn run(mut rx: mpsc::Receiver<Event>, channels: Vec<Channel>, state_dir: PathBuf) {
    let http = match http::client() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "notifications are off");
            return;
        }
    };
    let mut sent = Sent::load(&state_dir);
    while let Some(e) = rx.recv().await {
        let e = scrubbed(&e, &channels);
        for ch in channels.iter().filter(|c| c.spec.wants(&e)) {
            if sent.already(&ch.spec.name, &e) {
                continue;
            }
            match deliver(&http, ch, &e).await {
                Ok(()) => {
                    info!(channel = %ch.spec.name, event = e.event.as_str(), cert = %e.cert, "notification sent");
                    sent.record(&ch.spec.name, &e);
                }
                Err(err) => {
                    warn!(channel = %ch.spec.name, event = e.event.as_str(), cert = %e.cert, error = %err, "notification not delivered; giving up until the next pass");
                }
            }
        }
    }
}

/// How long `finish` waits for queued messages before a short-lived command exits.
pub const FINISH_WITHIN: Duration = Duration::from_secs(60);
