//! The YAML configuration: schema, defaults and validation with `file:line:column` errors.
//!
//! Parsing happens in two steps. serde-saphyr reads the text into `Raw*` structs
//! (`raw`: unknown keys, wrong types, bad durations, bad modes and relative paths
//! fail here, at the offending value); `validate` then checks what needs several
//! values at once (duplicates, references, cross-field limits) and reports every
//! such problem, each with its location, before anything runs.
//!
//! This module sits at the top, beside `main`: it produces the settings of the
//! layers below (`cas::ApiSettings`, `cas::credentials::CredentialsSpec`,
//! `pki::KeySpec`, `store::OutputSpec`, `hooks::HookSpec`,
//! `domain::ValidationSpec`) and re-exports them under their configuration names,
//! so that nothing below has to import `config`.

mod certificates;
mod inherit;
mod notify;
mod parse;
mod problems;
mod raw;
mod read;
mod secrets;
pub use secrets::{OnlineCheck, check_credentials, check_online};
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::cas::ApiSettings as ApiConfig;
pub use crate::cas::credentials::{CredentialsSpec as CredentialsConfig, SecretSource};
pub use crate::domain::{ValidationMethod, ValidationSpec as ValidationConfig};
pub use crate::hooks::DIR_HOOK;
pub use crate::hooks::HookSpec as HookConfig;
pub use crate::notify::ChannelSpec as NotifyConfig;
pub use crate::pki::{KeyAlgorithm, KeySpec};
pub use crate::store::OutputSpec as OutputConfig;
pub use notify::{DEFAULT_EXPIRING_WITHIN, DEFAULT_QUOTA_LOW_AT, DEFAULT_SMTP_PORT};
pub use problems::{ConfigError, Problem};
pub use values::{
    AbsPath, Endpoint, FileMode, HumanDuration, is_loopback_host, next_fires, parse_cron,
};

/// Config files larger than this are refused before parsing: a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Where the daemon looks for its configuration when neither `--config` nor
/// `CAS_RENEWD_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cas-renewd/config.yaml";
/// When the daemon renews: daily at 03:17 UTC, not on the hour when everyone
/// else's jobs run.
pub const DEFAULT_CRON: &str = "0 17 3 * * *";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cas-renewd";
/// A certificate without `output.dir` installs into `<this>/<name>`.
pub const DEFAULT_OUTPUT_ROOT: &str = "/etc/ssl/cas-renewd";
/// The most retries an operator may ask for; more only delays the error.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The largest `api.page_size`. CAS documents only the default (50) and no maximum;
/// 100 is what the engine asked for until now and the documented maximum of the
/// V2.0 ListInstances, and a larger page saves nothing worth the risk.
pub const MAX_PAGE_SIZE: u32 = 100;

/// What a certificate whose kind CAS does not renew (personal test/free,
/// multi-domain, uploaded) gets: `renew` blocks it with the reason, `reapply` applies
/// for a new certificate of the same product (CreateCertificateForPackageRequest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RenewalMode {
    #[default]
    Renew,
    Reapply,
}

impl RenewalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalMode::Renew => "renew",
            RenewalMode::Reapply => "reapply",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated configuration: what the program uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative to nothing, used in messages.
    pub source: PathBuf,
    /// Things that work but should not be so (a readable secret), for the log.
    pub warnings: Vec<String>,
    pub api: ApiConfig,
    pub credentials: Option<CredentialsConfig>,
    pub state_dir: PathBuf,
    pub schedule: ScheduleConfig,
    pub renewal: RenewalConfig,
    pub certificates: Vec<CertificateConfig>,
    pub discover: Option<DiscoverConfig>,
    pub defaults: CertificateDefaults,
    pub hooks: BTreeMap<String, HookConfig>,
    /// `hooks_dir`: every program in it runs after an install, once per
    /// certificate; every certificate's `reload` then ends with [`DIR_HOOK`].
    pub hooks_dir: Option<PathBuf>,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// `notify:`, the notification channels (none by default).
    pub notify: Vec<NotifyConfig>,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: String,
    pub jitter: Duration,
    pub run_at_start: bool,
    /// The wait before the first retry of a failed or incomplete pass; it doubles
    /// with each further failure up to `retry_max`, until a pass succeeds.
    pub retry_after: Duration,
    pub retry_max: Duration,
}

impl Default for ScheduleConfig {
    /// [`DEFAULT_CRON`], up to 20 minutes later, and once at start; a failed pass
    /// is retried after 15 minutes, doubling up to 4 hours.
    fn default() -> Self {
        ScheduleConfig {
            cron: DEFAULT_CRON.to_owned(),
            jitter: Duration::from_secs(20 * 60),
            run_at_start: true,
            retry_after: Duration::from_secs(15 * 60),
            retry_max: Duration::from_secs(4 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RenewalConfig {
    pub renew_before: Duration,
    pub poll_interval: Duration,
    pub poll_max_interval: Duration,
    pub issuance_timeout: Duration,
    pub concurrency: usize,
    /// After a paid call with an unclear outcome whose order never showed: how long
    /// after the call cas-renewd pays again by itself (`renew --force` does it now).
    pub unclear_retry_after: Duration,
}

/// One day, the unit certificate lifetimes are counted in.
const DAY: Duration = Duration::from_secs(86_400);

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            renew_before: 30 * DAY,
            poll_interval: Duration::from_secs(30),
            poll_max_interval: Duration::from_secs(15 * 60),
            issuance_timeout: Duration::from_secs(72 * 3600),
            concurrency: 4,
            unclear_retry_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a certificate inherits unless it sets its own.
#[derive(Debug, Clone, Default)]
pub struct CertificateDefaults {
    pub key: KeySpec,
    pub validation: ValidationConfig,
    pub reload: Vec<String>,
    pub mode: RenewalMode,
}

#[derive(Debug, Clone)]
pub struct CertificateConfig {
    pub name: String,
    pub domain: String,
    pub output: OutputConfig,
    pub key: KeySpec,
    pub validation: ValidationConfig,
    pub reload: Vec<String>,
    pub verify: Option<VerifyConfig>,
    /// `renewal.mode`: what to do for an order CAS does not renew.
    pub mode: RenewalMode,
}

impl crate::store::repair::RepairTarget for CertificateConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn output(&self) -> &OutputConfig {
        &self.output
    }
    fn reload(&self) -> &[String] {
        &self.reload
    }
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub connect: String,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub keyword: String,
    pub output_root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    /// Loopback only: the metrics say which domains this host serves.
    fn default() -> Self {
        MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9797)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (text, meta) = read::read_bounded(path)?;
        // Unlike `parse`, loading checks the host too: an owner or group that does
        // not exist here would fail the install after the renewal was paid for.
        let raw = parse::parse_raw(&text, path)?;
        let mut cfg = validate::validate(raw, path, Some(Path::new("/etc")))?;
        cfg.warnings = secrets::secret_exposure(&cfg, meta.permissions().mode());
        Ok(cfg)
    }

    /// Parses and validates `text`; `source` names the file in messages. Only the
    /// text is checked, not this host (see [`Config::load`]).
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let raw = parse::parse_raw(text, source)?;
        validate::validate(raw, source, None)
    }

    /// Finds a configured certificate by name.
    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests;
