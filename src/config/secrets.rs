//! Warnings for secrets that other users of the host could read.

use std::os::unix::fs::PermissionsExt as _;

use super::{Config, CredentialsConfig, SecretSource};
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
