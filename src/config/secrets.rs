//! Warnings for secrets that other users of the host could read.

use std::os::unix::fs::PermissionsExt as _;

use super::{Config, CredentialsConfig, SecretSource};

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
    w
}
