//! The raw schema: what the YAML may say, as serde reads it. Unknown keys, wrong
//! types and values that fail their own check (see `values`) are refused here, at
//! the offending value; `validate` turns this into the configuration the program uses.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::values::{AbsPath, Endpoint, FileMode, HumanDuration};
use super::{KeyAlgorithm, LogFormat, RenewalMode, ValidationMethod};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) api: RawApi,
    pub(super) credentials: Option<Spanned<RawCredentials>>,
    pub(super) state_dir: Option<AbsPath>,
    #[serde(default)]
    pub(super) schedule: RawSchedule,
    #[serde(default)]
    pub(super) renewal: RawRenewal,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    pub(super) certificates: Option<Spanned<Vec<RawCertificate>>>,
    pub(super) discover: Option<RawDiscover>,
    #[serde(default)]
    pub(super) hooks: BTreeMap<String, RawHook>,
    pub(super) hooks_dir: Option<AbsPath>,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<super::notify::RawNotify>>,
    pub(super) fleet: Option<Spanned<super::fleet::RawFleet>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) endpoint: Option<Endpoint>,
    pub(super) dns_endpoint: Option<Endpoint>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) max_attempts: Option<Spanned<u32>>,
    pub(super) page_size: Option<Spanned<u32>>,
    pub(super) rate_limit_per_second: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) rate_limits: BTreeMap<String, Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) access_key_id: Option<String>,
    pub(super) access_key_secret: Option<Secret>,
    pub(super) access_key_secret_file: Option<AbsPath>,
    pub(super) security_token: Option<Secret>,
    pub(super) profile: Option<String>,
    pub(super) ecs_ram_role: Option<String>,
    pub(super) metadata_endpoint: Option<Endpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) cron: Option<Spanned<String>>,
    pub(super) jitter: Option<HumanDuration>,
    pub(super) run_at_start: Option<bool>,
    pub(super) retry_after: Option<Spanned<HumanDuration>>,
    pub(super) retry_max: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRenewal {
    pub(super) renew_before: Option<Spanned<HumanDuration>>,
    pub(super) poll_interval: Option<Spanned<HumanDuration>>,
    pub(super) poll_max_interval: Option<Spanned<HumanDuration>>,
    pub(super) issuance_timeout: Option<Spanned<HumanDuration>>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) unclear_retry_after: Option<Spanned<HumanDuration>>,
}

/// A certificate's own renewal settings (`certificates[].renewal`, `defaults.renewal`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertRenewal {
    pub(super) mode: Option<RenewalMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) key: Option<RawKey>,
    pub(super) validation: Option<Spanned<RawValidation>>,
    pub(super) reload: Option<Vec<Spanned<String>>>,
    pub(super) renewal: Option<RawCertRenewal>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) algorithm: Option<KeyAlgorithm>,
    pub(super) reuse: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    pub(super) method: ValidationMethod,
    pub(super) webroot: Option<AbsPath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) name: Spanned<String>,
    pub(super) domain: Spanned<String>,
    #[serde(default)]
    pub(super) output: RawOutput,
    pub(super) key: Option<RawKey>,
    pub(super) validation: Option<Spanned<RawValidation>>,
    pub(super) reload: Option<Vec<Spanned<String>>>,
    pub(super) verify: Option<RawVerify>,
    pub(super) renewal: Option<RawCertRenewal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) dir: Option<Spanned<AbsPath>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) key_mode: Option<FileMode>,
    pub(super) cert_mode: Option<FileMode>,
    pub(super) keep: Option<u32>,
    pub(super) allow_insecure_dir: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub(super) connect: Spanned<String>,
    pub(super) server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscover {
    pub(super) keyword: Spanned<String>,
    pub(super) output_root: AbsPath,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) command: Spanned<Vec<String>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) per_certificate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<Spanned<String>>,
}
