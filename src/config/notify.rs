//! The `notify:` section: each entry one channel (webhook, dingtalk, feishu,
//! wecom, smtp), checked with located errors into `notify::ChannelSpec`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::problems::Problems;
use super::values::{AbsPath, HumanDuration, is_valid_name};
use crate::notify::{ChannelKind, ChannelSpec, EventKind, SmtpSpec, SmtpTls, UrlSource};

/// What `expiring` waits for by default: two weeks, half the default
/// `renew_before`, so a renewal that keeps failing is heard of in time.
pub const DEFAULT_EXPIRING_WITHIN: Duration = Duration::from_secs(14 * 86_400);
/// `quota_low` by default: one application or none left.
pub const DEFAULT_QUOTA_LOW_AT: i64 = 1;
/// The submission port, where STARTTLS is expected.
pub const DEFAULT_SMTP_PORT: u16 = 587;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawNotifyType {
    Webhook,
    Dingtalk,
    /// Lark is Feishu outside China: the same bot API and signing.
    #[serde(alias = "lark")]
    Feishu,
    Wecom,
    Smtp,
}

impl RawNotifyType {
    fn as_str(self) -> &'static str {
        match self {
            RawNotifyType::Webhook => "webhook",
            RawNotifyType::Dingtalk => "dingtalk",
            RawNotifyType::Feishu => "feishu",
            RawNotifyType::Wecom => "wecom",
            RawNotifyType::Smtp => "smtp",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<RawNotifyType>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) events: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) expiring_within: Option<Spanned<HumanDuration>>,
    pub(super) quota_low_at: Option<Spanned<i64>>,
    // The HTTP channels.
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<AbsPath>>,
    pub(super) secret_file: Option<Spanned<AbsPath>>,
    // smtp.
    pub(super) host: Option<Spanned<String>>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<Spanned<SmtpTls>>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<Spanned<AbsPath>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) ca_file: Option<AbsPath>,
}

/// Every channel, each problem located.
pub(super) fn notify(raw: &[Spanned<RawNotify>], p: &mut Problems<'_>) -> Vec<ChannelSpec> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("notify[{i}]");
        let name = match &r.value.name {
            Some(n) if !is_valid_name(&n.value) => {
                p.at(
                    n.referenced,
                    format!("{key}.name"),
                    "must be 1-64 of a-z, 0-9, '_' and '-'",
                );
                continue;
            }
            Some(n) => n.value.clone(),
            None => format!("{}-{}", r.value.kind.value.as_str(), i + 1),
        };
        if !names.insert(name.clone()) {
            let at = r.value.name.as_ref().map_or(r.referenced, |n| n.referenced);
            p.at(
                at,
                format!("{key}.name"),
                format!("{name:?} names another channel too"),
            );
            continue;
        }
        if let Some(spec) = channel(&r.value, r.referenced, &key, name, p) {
            out.push(spec);
        }
    }
    out
}

fn channel(
    r: &RawNotify,
    at: Location,
    key: &str,
    name: String,
    p: &mut Problems<'_>,
) -> Option<ChannelSpec> {
    let ty = r.kind.value;
    let kind = match ty {
        RawNotifyType::Smtp => {
            refuse_http_keys(r, key, p);
            ChannelKind::Smtp(smtp(r, at, key, p)?)
        }
        http => {
            refuse_smtp_keys(r, key, p);
            let url = url_source(r, at, key, p)?;
            let secret_file = r.secret_file.as_ref().map(|s| s.value.0.clone());
            match http {
                RawNotifyType::Webhook => ChannelKind::Webhook { url, secret_file },
                RawNotifyType::Dingtalk => ChannelKind::DingTalk { url, secret_file },
                RawNotifyType::Feishu => ChannelKind::Feishu { url, secret_file },
                // WeCom (smtp is the arm above).
                _ => {
                    if let Some(s) = &r.secret_file {
                        p.at(s.referenced, format!("{key}.secret_file"), "a WeCom group robot has no signing secret: its key is in the URL (keep that in url_file)");
                    }
                    ChannelKind::WeCom { url }
                }
            }
        }
    };
    Some(ChannelSpec {
        name,
        kind,
        events: events(r, key, p),
        expiring_within: match &r.expiring_within {
            Some(d) if d.value.0.is_zero() => {
                p.at(
                    d.referenced,
                    format!("{key}.expiring_within"),
                    "must be greater than 0",
                );
                DEFAULT_EXPIRING_WITHIN
            }
            Some(d) => d.value.0,
            None => DEFAULT_EXPIRING_WITHIN,
        },
        quota_low_at: match &r.quota_low_at {
            Some(q) if q.value < 0 => {
                p.at(
                    q.referenced,
                    format!("{key}.quota_low_at"),
                    "must be 0 or more",
                );
                DEFAULT_QUOTA_LOW_AT
            }
            Some(q) => q.value,
            None => DEFAULT_QUOTA_LOW_AT,
        },
    })
}

fn events(r: &RawNotify, key: &str, p: &mut Problems<'_>) -> Vec<EventKind> {
    let Some(list) = &r.events else {
        return EventKind::ALL.to_vec();
    };
    if list.value.is_empty() {
        p.at(list.referenced, format!("{key}.events"), "is empty, so the channel would receive nothing; remove the key (all events) or the channel");
    }
    let mut out = Vec::new();
    for e in &list.value {
        match EventKind::ALL.iter().find(|k| k.as_str() == e.value) {
            Some(k) if !out.contains(k) => out.push(*k),
            Some(_) => {}
            None => p.at(
                e.referenced,
                format!("{key}.events"),
                format!(
                    "unknown event {:?}; the events are {}",
                    e.value,
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                ),
            ),
        }
    }
    out
}

fn url_source(r: &RawNotify, at: Location, key: &str, p: &mut Problems<'_>) -> Option<UrlSource> {
    match (&r.url, &r.url_file) {
        (Some(u), None) => match crate::notify::check_url(&u.value) {
            Ok(url) => Some(UrlSource::Inline(url)),
            Err(m) => {
                p.at(u.referenced, format!("{key}.url"), m);
                None
            }
        },
        (None, Some(f)) => Some(UrlSource::File(f.value.0.clone())),
        (Some(_), Some(f)) => {
            p.at(
                f.referenced,
                format!("{key}.url_file"),
                "give url or url_file, not both",
            );
            None
        }
        (None, None) => {
            p.at(at, format!("{key}.url"), "is required (or url_file, a file holding the URL when it carries the robot's token)");
            None
        }
    }
}

fn refuse_http_keys(r: &RawNotify, key: &str, p: &mut Problems<'_>) {
    let found = [
        r.url.as_ref().map(|x| ("url", x.referenced)),
        r.url_file.as_ref().map(|x| ("url_file", x.referenced)),
        r.secret_file
            .as_ref()
            .map(|x| ("secret_file", x.referenced)),
    ];
    for (k, at) in found.into_iter().flatten() {
        p.at(
            at,
            format!("{key}.{k}"),
            "belongs to the HTTP channels, not smtp (the password is password_file)",
        );
    }
}

fn refuse_smtp_keys(r: &RawNotify, key: &str, p: &mut Problems<'_>) {
    let found = [
        r.host.as_ref().map(|x| ("host", x.referenced)),
        r.from.as_ref().map(|x| ("from", x.referenced)),
        r.to.as_ref().map(|x| ("to", x.referenced)),
        r.tls.as_ref().map(|x| ("tls", x.referenced)),
        r.password_file
            .as_ref()
            .map(|x| ("password_file", x.referenced)),
    ];
    for (k, at) in found.into_iter().flatten() {
        p.at(at, format!("{key}.{k}"), "belongs to `type: smtp` only");
    }
}

fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn smtp(r: &RawNotify, at: Location, key: &str, p: &mut Problems<'_>) -> Option<SmtpSpec> {
    let mut ok = true;
    let mut need = |v: bool, k: &str, what: &str| {
        if !v {
            p.at(
                at,
                format!("{key}.{k}"),
                format!("is required for smtp: {what}"),
            );
            ok = false;
        }
    };
    need(r.host.is_some(), "host", "the relay's name");
    need(r.from.is_some(), "from", "the sender's address");
    need(r.to.is_some(), "to", "a list of recipients");
    let (host, from, to) = (r.host.as_ref()?, r.from.as_ref()?, r.to.as_ref()?);
    let tls = r.tls.as_ref().map_or(SmtpTls::Starttls, |t| t.value);
    if tls == SmtpTls::None && !is_loopback_name(&host.value) {
        p.at(r.tls.as_ref().map_or(at, |t| t.referenced), format!("{key}.tls"), "none sends the password and messages in clear; only a relay on a loopback address may go without STARTTLS");
        ok = false;
    }
    if host.value.trim().is_empty() {
        p.at(host.referenced, format!("{key}.host"), "is empty");
        ok = false;
    }
    if let Err(m) = crate::notify::check_mailbox(&from.value) {
        p.at(from.referenced, format!("{key}.from"), m);
        ok = false;
    }
    if to.value.is_empty() {
        p.at(
            to.referenced,
            format!("{key}.to"),
            "is empty; give at least one recipient",
        );
        ok = false;
    }
    for t in &to.value {
        if let Err(m) = crate::notify::check_mailbox(&t.value) {
            p.at(t.referenced, format!("{key}.to"), m);
            ok = false;
        }
    }
    if r.username.is_some() != r.password_file.is_some() {
        p.at(
            at,
            format!("{key}.password_file"),
            "username and password_file go together",
        );
        ok = false;
    }
    ok.then(|| SmtpSpec {
        host: host.value.trim().to_owned(),
        port: r.port.unwrap_or(DEFAULT_SMTP_PORT),
        tls,
        username: r.username.clone(),
        password_file: r.password_file.as_ref().map(|f| f.value.0.clone()),
        from: from.value.clone(),
        to: to.value.iter().map(|t| t.value.clone()).collect(),
        ca_file: r.ca_file.as_ref().map(|f| f.0.clone()),
    })
}

/// The files of `spec` that hold secrets, for the mode warnings.
pub(super) fn secret_files(spec: &ChannelSpec) -> Vec<PathBuf> {
    let url = |u: &UrlSource| match u {
        UrlSource::File(f) => Some(f.clone()),
        UrlSource::Inline(_) => None,
    };
    match &spec.kind {
        ChannelKind::Webhook {
            url: u,
            secret_file,
        }
        | ChannelKind::DingTalk {
            url: u,
            secret_file,
        }
        | ChannelKind::Feishu {
            url: u,
            secret_file,
        } => url(u).into_iter().chain(secret_file.clone()).collect(),
        ChannelKind::WeCom { url: u } => url(u).into_iter().collect(),
        ChannelKind::Smtp(s) => s.password_file.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};
    use super::*;

    const CERTS: &str = "certificates:\n  - name: www\n    domain: www.example.com\n";

    fn parse(notify: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{CERTS}notify:\n{notify}"),
            Path::new("/etc/t.yaml"),
        )
    }

    fn problems(notify: &str) -> Vec<String> {
        match parse(notify) {
            Ok(_) => panic!("accepted:\n{notify}"),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_channel_type_with_its_defaults() {
        let cfg = parse(
            "  - type: webhook\n    url: https://hooks.example.com/x\n    secret_file: /etc/cas-renewd/webhook.secret\n    events: [renewed, failed, blocked, expiring, quota_low]\n\
             \x20 - type: dingtalk\n    url_file: /etc/cas-renewd/dingtalk.url\n    secret_file: /etc/cas-renewd/dingtalk.secret\n\
             \x20 - type: lark\n    name: team\n    url: https://open.larksuite.com/open-apis/bot/v2/hook/x\n    expiring_within: 3d\n\
             \x20 - type: wecom\n    url_file: /etc/cas-renewd/wecom.url\n    quota_low_at: 5\n\
             \x20 - type: smtp\n    host: smtp.example.com\n    from: cas-renewd <ops@example.com>\n    to: [a@example.com]\n    username: ops\n    password_file: /etc/cas-renewd/smtp.password\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(&str, &str)> = cfg
            .notify
            .iter()
            .map(|c| (c.name.as_str(), c.kind.type_name()))
            .collect();
        assert_eq!(
            names,
            [
                ("webhook-1", "webhook"),
                ("dingtalk-2", "dingtalk"),
                ("team", "feishu"),
                ("wecom-4", "wecom"),
                ("smtp-5", "smtp"),
            ]
        );
        assert_eq!(cfg.notify[0].events.len(), 5);
        assert_eq!(
            cfg.notify[1].events,
            EventKind::ALL.to_vec(),
            "default: all"
        );
        assert_eq!(cfg.notify[1].expiring_within, DEFAULT_EXPIRING_WITHIN);
        assert_eq!(
            cfg.notify[2].expiring_within,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(cfg.notify[3].quota_low_at, 5);
        let ChannelKind::Smtp(s) = &cfg.notify[4].kind else {
            panic!("smtp expected")
        };
        assert_eq!((s.port, s.tls), (DEFAULT_SMTP_PORT, SmtpTls::Starttls));
    }

    #[test]
    fn bad_channels_are_refused_where_they_are() {
        let p = problems("  - type: webhook\n    url: http://hooks.example.com/x\n");
        assert!(
            p[0].starts_with("/etc/t.yaml:6:10: notify[0].url: uses plain http://"),
            "{p:?}"
        );
        let p = problems(
            "  - type: webhook\n    events: [renewed, exploded]\n    url: https://h.example.com/\n",
        );
        assert!(
            p[0].contains(
                "notify[0].events: unknown event \"exploded\"; the events are renewed, installed"
            ),
            "{p:?}"
        );
        let p = problems("  - type: dingtalk\n");
        assert!(p[0].contains("notify[0].url: is required"), "{p:?}");
        let p = problems(
            "  - type: wecom\n    url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k\n    secret_file: /s\n",
        );
        assert!(
            p[0].contains("notify[0].secret_file: a WeCom group robot has no signing secret"),
            "{p:?}"
        );
        let p = problems(
            "  - type: smtp\n    host: mail.example.com\n    tls: none\n    from: a@example.com\n    to: [b@example.com]\n",
        );
        assert!(
            p[0].contains("notify[0].tls: none sends the password"),
            "{p:?}"
        );
        let p = problems(
            "  - type: smtp\n    host: mail.example.com\n    from: not an address\n    to: []\n    url: https://x.example.com/\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        let p = problems(
            "  - type: webhook\n    name: a\n    url: https://h.example.com/\n  - type: wecom\n    name: a\n    url: https://h.example.com/\n",
        );
        assert!(
            p[0].contains("notify[1].name: \"a\" names another channel too"),
            "{p:?}"
        );
        let p =
            problems("  - type: webhook\n    url: https://h.example.com/\n    secret: inline\n");
        assert!(p[0].contains("unknown field `secret`"), "{p:?}");
    }

    #[test]
    fn readable_secret_files_and_inline_robot_urls_are_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("ding.secret");
        std::fs::write(&secret, "SECx\n").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let cfg = parse(&format!(
            "  - type: dingtalk\n    url: https://oapi.dingtalk.com/robot/send?access_token=t\n    secret_file: {}\n",
            secret.display()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let w = super::super::secrets::secret_exposure(&cfg, 0o644);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("ding.secret (a secret of notify channel dingtalk-1) is readable by group or others (mode 0644)"), "{w:?}");
        assert!(
            w[1].contains("notify[0].url carries the robot's token"),
            "{w:?}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(super::super::secrets::secret_exposure(&cfg, 0o600).is_empty());
    }
}
