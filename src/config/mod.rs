//! The YAML configuration: schema, defaults and validation with `file:line:column` errors.
//!
//! Parsing happens in two steps. serde-saphyr reads the text into `Raw*` structs
//! (`raw`: unknown keys, wrong types, bad durations, bad modes and relative paths
//! fail here, at the offending value); `validate` then checks what needs several
//! values at once (duplicates, references, cross-field limits) and reports every
//! such problem, each with its location, before anything runs.
//!
//! This module sits at the top, beside `main`: it fills the types of [`crate::settings`]
//! (`Config`, `CertificateConfig` and friends, with the services' own settings such
//! as `store::OutputSpec` under their configuration names) and re-exports them under
//! the same names, so that nothing below has to import `config`.

mod certificates;
mod fleet;
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

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::settings::DAY;
pub use crate::settings::{
    ApiConfig, CertificateConfig, CertificateDefaults, Config, CredentialsConfig, DEFAULT_CRON,
    DIR_HOOK, DiscoverConfig, FleetConfig, HookConfig, KeyAlgorithm, KeySpec, LogConfig, LogFormat,
    MetricsConfig, NotifyConfig, OutputConfig, RenewalConfig, RenewalMode, ScheduleConfig,
    SecretSource, ValidationConfig, ValidationMethod, VerifyConfig,
};
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
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cas-renewd";
/// A certificate without `output.dir` installs into `<this>/<name>`.
pub const DEFAULT_OUTPUT_ROOT: &str = "/etc/ssl/cas-renewd";
/// The most retries an operator may ask for; more only delays the error.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The largest `api.page_size`. CAS documents only the default (50) and no maximum;
/// 100 is what the engine asked for until now and the documented maximum of the
/// V2.0 ListInstances, and a larger page saves nothing worth the risk.
pub const MAX_PAGE_SIZE: u32 = 100;

// Loading is defined here, not in `settings`: reading and validating the YAML is
// this module's job, and the settings types stay free of it.
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
}

#[cfg(test)]
mod tests;
