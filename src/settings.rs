//! The validated settings the engine and everything reporting on it run with: what
//! `config` makes of the YAML file, as plain data with no parsing or validation.
//!
//! `config` fills these from the file and re-exports them under the same names; the
//! layers from `renew` up take them from here, so nothing below the top imports
//! `config`. A type's default is its `Default` impl here; the path defaults `config`
//! applies while validating (`state_dir`, a certificate's `output.dir`) stay there. The two enums
//! derive `Deserialize` only so that `config`'s schema can name them as they are.
//! The services' settings (`cas::ApiSettings`, `cas::credentials::CredentialsSpec`,
//! `pki::KeySpec`, `store::OutputSpec`, `hooks::HookSpec`, `domain::ValidationSpec`,
//! `notify::ChannelSpec`) are defined with their service and re-exported here under
//! their configuration names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::cas::ApiSettings as ApiConfig;
pub use crate::cas::credentials::{CredentialsSpec as CredentialsConfig, SecretSource};
pub use crate::domain::{ValidationMethod, ValidationSpec as ValidationConfig};
pub use crate::fleet::FleetSpec as FleetConfig;
pub use crate::hooks::DIR_HOOK;
pub use crate::hooks::HookSpec as HookConfig;
pub use crate::notify::ChannelSpec as NotifyConfig;
pub use crate::pki::{KeyAlgorithm, KeySpec};
pub use crate::store::OutputSpec as OutputConfig;

/// When the daemon renews: daily at 03:17 UTC, not on the hour when everyone
/// else's jobs run.
pub const DEFAULT_CRON: &str = "0 17 3 * * *";

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
    /// `fleet:`, many hosts coordinated through etcd (none: this host alone).
    pub fleet: Option<FleetConfig>,
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
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

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
    /// Finds a configured certificate by name.
    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }
}
