//! The YAML configuration: schema, defaults and validation with `file:line:column` errors.
//!
//! Parsing happens in two steps. serde-saphyr reads the text into `Raw*` structs
//! (unknown keys, wrong types, bad durations, bad modes and relative paths fail
//! here, at the offending value); `validate` then checks what needs several values
//! at once (duplicates, references, cross-field limits) and reports every such
//! problem, each with its location, before anything runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::{Location, Spanned};

use crate::secret::Secret;

/// Where the daemon looks for its configuration when neither `--config` nor
/// `CAS_RENEWD_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cas-renewd/config.yaml";

/// Config files larger than this are refused before parsing: a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// One located problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the key, e.g. `certificates[1].output.dir`.
    pub key: String,
    pub message: String,
    /// Source excerpt under the message, when the parser gave one.
    pub snippet: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: configuration is {size} bytes; the limit is {MAX_CONFIG_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: is {kind}, not a regular file; give --config the configuration file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The located problems, empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Value types with their own checks, so a bad value is reported where it stands.

/// A `humantime` duration such as `30s`, `15m` or `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"15m\" or \"30d\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {s:?}: {e} (write it like \"30s\", \"15m\", \"72h\" or \"30d\")"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{n}s\", \"{n}m\" or \"{n}d\", not {n}"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit, not {n}")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit, not {n}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Unix file mode written as a quoted octal string (`"0640"`). An unquoted `0640`
/// is refused: YAML 1.1 reads it as octal and YAML 1.2 as decimal 640, so it is
/// ambiguous. Only permission bits (at most `0777`) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(format!(
                "invalid file mode {s:?}: write three or four octal digits such as \"0640\""
            ));
        }
        let mode =
            u32::from_str_radix(digits, 8).map_err(|e| format!("invalid file mode {s:?}: {e}"))?;
        if mode > 0o777 {
            return Err(format!(
                "file mode {s:?} sets setuid, setgid or sticky bits; only permission bits up to \"0777\" are allowed"
            ));
        }
        Ok(FileMode(mode))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn unquoted<E: de::Error>(shown: &str) -> E {
            E::custom(format!(
                "file mode {shown} is not quoted; write it as a quoted octal string such as \"0640\" (unquoted, YAML may read it as a decimal number)"
            ))
        }
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0640\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileMode, E> {
                FileMode::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An absolute path without `..` components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbsPath(pub PathBuf);

impl AbsPath {
    fn parse(s: &str) -> Result<Self, String> {
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(format!(
                "path {s:?} is relative; write an absolute path (starting with /)"
            ));
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(format!("path {s:?} contains `..`; write it without"));
        }
        // Normalise `/a/./b/` to `/a/b` so that duplicates are found by comparison.
        Ok(AbsPath(p.components().collect()))
    }
}

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AbsPath::parse(&s).map_err(de::Error::custom)
    }
}

/// An API endpoint: `https://`, or `http://` only towards a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub reqwest::Url);

impl Endpoint {
    fn parse(s: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            "http" => {
                return Err(format!(
                    "{s:?} uses plain http:// towards a host that is not loopback; use https:// (http:// is only for a local simulator on 127.0.0.1 or ::1)"
                ));
            }
            other => return Err(format!("{s:?} has scheme {other:?}; use https://")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{s:?} has no host"));
        }
        if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() {
            return Err(format!(
                "{s:?} has a path or query; give only scheme, host and port"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?} carries user information; remove it"));
        }
        Ok(Endpoint(url))
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Endpoint::parse(&s).map_err(de::Error::custom)
    }
}

/// Key algorithms a certificate can be issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
        }
    }
}

/// How domain ownership is proven when an order waits in `domain_verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMethod {
    None,
    Dns,
    File,
}

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

// ---------------------------------------------------------------------------
// Raw schema: what the YAML may say.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api: RawApi,
    credentials: Option<Spanned<RawCredentials>>,
    state_dir: Option<AbsPath>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    renewal: RawRenewal,
    #[serde(default)]
    defaults: RawDefaults,
    certificates: Option<Spanned<Vec<RawCertificate>>>,
    discover: Option<RawDiscover>,
    #[serde(default)]
    hooks: BTreeMap<String, RawHook>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    endpoint: Option<Endpoint>,
    dns_endpoint: Option<Endpoint>,
    timeout: Option<Spanned<HumanDuration>>,
    max_attempts: Option<Spanned<u32>>,
    page_size: Option<Spanned<u32>>,
    rate_limit_per_second: Option<Spanned<f64>>,
    #[serde(default)]
    rate_limits: BTreeMap<String, Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    access_key_id: Option<String>,
    access_key_secret: Option<Secret>,
    access_key_secret_file: Option<AbsPath>,
    security_token: Option<Secret>,
    profile: Option<String>,
    ecs_ram_role: Option<String>,
    metadata_endpoint: Option<Endpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<Spanned<String>>,
    jitter: Option<HumanDuration>,
    run_at_start: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRenewal {
    renew_before: Option<Spanned<HumanDuration>>,
    poll_interval: Option<Spanned<HumanDuration>>,
    poll_max_interval: Option<Spanned<HumanDuration>>,
    issuance_timeout: Option<Spanned<HumanDuration>>,
    concurrency: Option<Spanned<u32>>,
    unclear_retry_after: Option<Spanned<HumanDuration>>,
}

/// A certificate's own renewal settings (`certificates[].renewal`, `defaults.renewal`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertRenewal {
    mode: Option<RenewalMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    key: Option<RawKey>,
    validation: Option<Spanned<RawValidation>>,
    reload: Option<Vec<Spanned<String>>>,
    renewal: Option<RawCertRenewal>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    algorithm: Option<KeyAlgorithm>,
    reuse: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    method: ValidationMethod,
    webroot: Option<AbsPath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    name: Spanned<String>,
    domain: Spanned<String>,
    #[serde(default)]
    output: RawOutput,
    key: Option<RawKey>,
    validation: Option<Spanned<RawValidation>>,
    reload: Option<Vec<Spanned<String>>>,
    verify: Option<RawVerify>,
    renewal: Option<RawCertRenewal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Option<Spanned<AbsPath>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    key_mode: Option<FileMode>,
    cert_mode: Option<FileMode>,
    keep: Option<u32>,
    allow_insecure_dir: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    connect: Spanned<String>,
    server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    keyword: Spanned<String>,
    output_root: AbsPath,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    command: Spanned<Vec<String>>,
    timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------
// Validated configuration: what the program uses.

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
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub endpoint: reqwest::Url,
    pub dns_endpoint: reqwest::Url,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// `ShowSize` of every ListUserCertificateOrder page.
    pub page_size: u32,
    /// Calls per second for each action without its own entry in `rate_limits`.
    pub rate_limit_per_second: f64,
    /// Per-action calls per second (CAS documents its limits per action).
    pub rate_limits: BTreeMap<String, f64>,
}

impl ApiConfig {
    /// The client-side limiter these settings describe.
    pub fn limiter(&self) -> crate::cas::client::RateLimiter {
        self.rate_limits.iter().fold(
            crate::cas::client::RateLimiter::new(self.rate_limit_per_second),
            |l, (action, rate)| l.with_action(action, *rate),
        )
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: reqwest::Url::parse("https://cas.aliyuncs.com")
                .expect("a literal, valid URL"),
            dns_endpoint: reqwest::Url::parse("https://alidns.aliyuncs.com")
                .expect("a literal, valid URL"),
            timeout: Duration::from_secs(30),
            max_attempts: 6,
            page_size: crate::cas::api::DEFAULT_PAGE_SIZE,
            rate_limit_per_second: 8.0,
            rate_limits: BTreeMap::new(),
        }
    }
}

/// Credentials given in the configuration file. Which kind wins is decided in
/// `cas::credentials`; this only says what the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsConfig {
    AccessKey {
        access_key_id: String,
        secret: SecretSource,
        security_token: Option<Secret>,
    },
    Profile(String),
    EcsRamRole {
        /// Empty: ask the metadata service which role the instance has.
        role_name: String,
        metadata_endpoint: Option<reqwest::Url>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: String,
    pub jitter: Duration,
    pub run_at_start: bool,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub algorithm: KeyAlgorithm,
    pub reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    pub method: ValidationMethod,
    pub webroot: Option<PathBuf>,
}

/// What a certificate inherits unless it sets its own.
#[derive(Debug, Clone)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    pub dir: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub key_mode: u32,
    pub cert_mode: u32,
    pub keep: u32,
    /// Install even when users other than root or `owner` can change the
    /// directory or one of its parents (sshd's StrictModes, off).
    pub allow_insecure_dir: bool,
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
pub struct HookConfig {
    pub command: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cas-renewd";
pub const DEFAULT_OUTPUT_ROOT: &str = "/etc/ssl/cas-renewd";
const DEFAULT_CRON: &str = "0 17 3 * * *";
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// The most retries an operator may ask for; more only delays the error.
const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The largest `api.page_size`. CAS documents only the default (50) and no maximum;
/// 100 is what the engine asked for until now and the documented maximum of the
/// V2.0 ListInstances, and a larger page saves nothing worth the risk.
pub const MAX_PAGE_SIZE: u32 = 100;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (text, meta) = read_bounded(path)?;
        // Unlike `parse`, loading checks the host too: an owner or group that does
        // not exist here would fail the install after the renewal was paid for.
        let mut cfg = validate(parse_raw(&text, path)?, path, Some(Path::new("/etc")))?;
        cfg.warnings = secret_exposure(&cfg, meta.permissions().mode());
        Ok(cfg)
    }

    /// Parses and validates `text`; `source` names the file in messages. Only the
    /// text is checked, not this host (see [`Config::load`]).
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, source)?;
        validate(raw, source, None)
    }

    /// Finds a configured certificate by name.
    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }
}

/// Reads the configuration file: a symlink to it is fine (configuration
/// management often makes one), but what it leads to must be a regular file, and
/// at most [`MAX_CONFIG_BYTES`] are read whatever `stat` said. The open does not
/// block on a FIFO, and the type comes from the opened descriptor.
fn read_bounded(path: &Path) -> Result<(String, std::fs::Metadata), ConfigError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "a socket or other special file"
        };
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    let mut data = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: data.len() as u64,
        });
    }
    let text = String::from_utf8(data).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    Ok((text, meta))
}

/// Warnings for secrets that other users could read: an inline secret in a config
/// file, or a secret file, readable by group or others.
fn secret_exposure(cfg: &Config, config_mode: u32) -> Vec<String> {
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

fn parse_raw(text: &str, source: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Invalid(vec![Problem {
            file: source.to_owned(),
            line: 1,
            column: 1,
            key: "(document)".into(),
            message: "the file is empty; see config/cas-renewd.example.yaml".into(),
            snippet: None,
        }]));
    }
    let mut path = None;
    // An alias bomb in a config file is an attack, not a configuration: cap how
    // much aliases may expand far below the parser's defaults.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 100;
    let options = serde_saphyr::options! { alias_limits: alias_limits };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| ConfigError::Invalid(vec![problem_from_yaml(&e, path, source)]))
}

fn problem_from_yaml(e: &serde_saphyr::Error, path: Option<String>, source: &Path) -> Problem {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let source_name = source.display().to_string();
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        source_name: Some(source_name.as_str()),
    });
    // The rendering starts with "error: line L column C: message"; keep the message
    // and the snippet beneath it, and put our own located header in front.
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let message = first
        .split_once(": ")
        .map(|(_, rest)| rest)
        .map(
            |rest| match rest.split_once(&format!("column {column}: ")) {
                Some((_, m)) => m,
                None => rest,
            },
        )
        .unwrap_or(first)
        .to_owned();
    let snippet: Vec<&str> = lines.collect();
    let key = match path.as_deref() {
        None | Some("" | ".") => "(document)".to_owned(),
        // `Spanned` wraps its value in a `value` field; no key of ours is so named.
        Some(p) => p
            .replace(".value[", "[")
            .replace(".value.", ".")
            .trim_end_matches(".value")
            .to_owned(),
    };
    Problem {
        file: source.to_owned(),
        line,
        column,
        key,
        message,
        snippet: (!snippet.is_empty()).then(|| snippet.join("\n")),
    }
}

/// Collects located problems during validation.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn at(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = if loc == Location::UNKNOWN {
            (1, 1)
        } else {
            (loc.line(), loc.column())
        };
        self.list.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            snippet: None,
        });
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses a schedule the way the scheduler will (tokio-cron-scheduler's croner
/// settings: six fields, seconds first; day-of-month and day-of-week both apply).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "cron expression {expr:?} has {fields} fields; write six: sec min hour day month weekday (e.g. \"0 17 3 * * *\")"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron expression {expr:?} is invalid: {e}"))
}

/// The next `n` times `expr` fires after `after` (UTC).
pub fn next_fires(
    expr: &str,
    after: chrono::DateTime<chrono::Utc>,
    n: usize,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    parse_cron(expr)
        .map(|c| c.iter_after(after).take(n).collect())
        .unwrap_or_default()
}

fn key_spec(raw: Option<&RawKey>, inherited: &KeySpec) -> KeySpec {
    KeySpec {
        algorithm: raw.and_then(|k| k.algorithm).unwrap_or(inherited.algorithm),
        reuse: raw.and_then(|k| k.reuse).unwrap_or(inherited.reuse),
    }
}

fn validation_config(
    raw: Option<&Spanned<RawValidation>>,
    inherited: &ValidationConfig,
    key: &str,
    p: &mut Problems<'_>,
) -> ValidationConfig {
    let Some(v) = raw else {
        return inherited.clone();
    };
    if v.value.method == ValidationMethod::File && v.value.webroot.is_none() {
        p.at(
            v.referenced,
            format!("{key}.webroot"),
            "validation method `file` needs `webroot`: the directory the web server serves for this domain",
        );
    }
    ValidationConfig {
        method: v.value.method,
        webroot: v.value.webroot.as_ref().map(|w| w.0.clone()),
    }
}

fn positive(
    v: Option<&Spanned<HumanDuration>>,
    default: Duration,
    key: &str,
    p: &mut Problems<'_>,
) -> Duration {
    match v {
        Some(s) if s.value.0.is_zero() => {
            p.at(s.referenced, key, "must be greater than 0");
            default
        }
        Some(s) => s.value.0,
        None => default,
    }
}

fn check_hook_refs(
    refs: &[Spanned<String>],
    hooks: &BTreeMap<String, RawHook>,
    key: &str,
    p: &mut Problems<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if !hooks.contains_key(&r.value) {
            let known: Vec<&str> = hooks.keys().map(String::as_str).collect();
            p.at(
                r.referenced,
                format!("{key}[{i}]"),
                format!(
                    "reload names hook {:?}, which is not defined under `hooks` (defined: {})",
                    r.value,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if !out.contains(&r.value) {
            out.push(r.value.clone());
        }
    }
    out
}

/// `accounts`, when given, is the directory whose `passwd` and `group` files must
/// list every `output.owner` and `output.group`.
fn validate(raw: RawConfig, source: &Path, accounts: Option<&Path>) -> Result<Config, ConfigError> {
    let mut p = Problems {
        file: source,
        list: Vec::new(),
    };
    let api_default = ApiConfig::default();

    // api
    let api = ApiConfig {
        endpoint: raw
            .api
            .endpoint
            .map(|e| e.0)
            .unwrap_or(api_default.endpoint),
        dns_endpoint: raw
            .api
            .dns_endpoint
            .map(|e| e.0)
            .unwrap_or(api_default.dns_endpoint),
        timeout: positive(
            raw.api.timeout.as_ref(),
            api_default.timeout,
            "api.timeout",
            &mut p,
        ),
        max_attempts: match &raw.api.max_attempts {
            Some(s) if s.value == 0 || s.value > MAX_ATTEMPTS_LIMIT => {
                p.at(
                    s.referenced,
                    "api.max_attempts",
                    format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
                );
                api_default.max_attempts
            }
            Some(s) => s.value,
            None => api_default.max_attempts,
        },
        page_size: match &raw.api.page_size {
            Some(s) if s.value == 0 || s.value > MAX_PAGE_SIZE => {
                p.at(
                    s.referenced,
                    "api.page_size",
                    format!(
                        "must be between 1 and {MAX_PAGE_SIZE} (CAS documents 50, the default)"
                    ),
                );
                api_default.page_size
            }
            Some(s) => s.value,
            None => api_default.page_size,
        },
        rate_limit_per_second: match &raw.api.rate_limit_per_second {
            Some(s) if !(s.value > 0.0 && s.value <= 1000.0) => {
                p.at(
                    s.referenced,
                    "api.rate_limit_per_second",
                    "must be greater than 0 and at most 1000",
                );
                api_default.rate_limit_per_second
            }
            Some(s) => s.value,
            None => api_default.rate_limit_per_second,
        },
        rate_limits: raw
            .api
            .rate_limits
            .iter()
            .filter_map(|(action, r)| {
                if r.value > 0.0 && r.value <= 1000.0 {
                    Some((action.clone(), r.value))
                } else {
                    p.at(
                        r.referenced,
                        format!("api.rate_limits.{action}"),
                        "must be greater than 0 and at most 1000",
                    );
                    None
                }
            })
            .collect(),
    };

    // credentials
    let credentials = raw.credentials.as_ref().and_then(|c| {
        let loc = c.referenced;
        let c = &c.value;
        let kinds = [
            c.access_key_id.is_some()
                || c.access_key_secret.is_some()
                || c.access_key_secret_file.is_some(),
            c.profile.is_some(),
            c.ecs_ram_role.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            p.at(
                loc,
                "credentials",
                "give one kind of credentials: access_key_id with a secret, or profile, or ecs_ram_role",
            );
            return None;
        }
        if c.metadata_endpoint.is_some() && c.ecs_ram_role.is_none() {
            p.at(loc, "credentials.metadata_endpoint", "only used with ecs_ram_role");
        }
        if c.security_token.is_some() && c.access_key_id.is_none() {
            p.at(loc, "credentials.security_token", "only used with access_key_id");
        }
        if let Some(profile) = &c.profile {
            return Some(CredentialsConfig::Profile(profile.clone()));
        }
        if let Some(role) = &c.ecs_ram_role {
            return Some(CredentialsConfig::EcsRamRole {
                role_name: role.clone(),
                metadata_endpoint: c.metadata_endpoint.as_ref().map(|e| e.0.clone()),
            });
        }
        let Some(id) = &c.access_key_id else {
            p.at(
                loc,
                "credentials.access_key_id",
                "missing: a secret was given without its access_key_id",
            );
            return None;
        };
        let secret = match (&c.access_key_secret, &c.access_key_secret_file) {
            (Some(s), None) => SecretSource::Inline(s.clone()),
            (None, Some(f)) => SecretSource::File(f.0.clone()),
            (Some(_), Some(_)) => {
                p.at(
                    loc,
                    "credentials",
                    "give access_key_secret or access_key_secret_file, not both",
                );
                return None;
            }
            (None, None) => {
                p.at(
                    loc,
                    "credentials",
                    "access_key_id needs access_key_secret_file (or access_key_secret)",
                );
                return None;
            }
        };
        Some(CredentialsConfig::AccessKey {
            access_key_id: id.clone(),
            secret,
            security_token: c.security_token.clone(),
        })
    });

    // schedule
    let cron = match &raw.schedule.cron {
        Some(c) => {
            if let Err(e) = parse_cron(&c.value) {
                p.at(c.referenced, "schedule.cron", e);
            }
            c.value.clone()
        }
        None => DEFAULT_CRON.to_owned(),
    };
    let schedule = ScheduleConfig {
        cron,
        jitter: raw
            .schedule
            .jitter
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(20 * 60)),
        run_at_start: raw.schedule.run_at_start.unwrap_or(true),
    };

    // renewal
    let day = Duration::from_secs(86_400);
    let r = &raw.renewal;
    let renewal = RenewalConfig {
        renew_before: positive(
            r.renew_before.as_ref(),
            30 * day,
            "renewal.renew_before",
            &mut p,
        ),
        poll_interval: positive(
            r.poll_interval.as_ref(),
            Duration::from_secs(30),
            "renewal.poll_interval",
            &mut p,
        ),
        poll_max_interval: positive(
            r.poll_max_interval.as_ref(),
            Duration::from_secs(15 * 60),
            "renewal.poll_max_interval",
            &mut p,
        ),
        issuance_timeout: positive(
            r.issuance_timeout.as_ref(),
            Duration::from_secs(72 * 3600),
            "renewal.issuance_timeout",
            &mut p,
        ),
        concurrency: match &r.concurrency {
            Some(c) if c.value == 0 || c.value > 64 => {
                p.at(
                    c.referenced,
                    "renewal.concurrency",
                    "must be between 1 and 64",
                );
                4
            }
            Some(c) => c.value as usize,
            None => 4,
        },
        unclear_retry_after: positive(
            r.unclear_retry_after.as_ref(),
            Duration::from_secs(24 * 3600),
            "renewal.unclear_retry_after",
            &mut p,
        ),
    };
    if let Some(max) = &r.poll_max_interval
        && renewal.poll_max_interval < renewal.poll_interval
    {
        p.at(
            max.referenced,
            "renewal.poll_max_interval",
            format!(
                "is shorter than renewal.poll_interval ({})",
                humantime::format_duration(renewal.poll_interval)
            ),
        );
    }
    if let Some(rb) = &r.renew_before {
        // CAS certificates live at most about a year; a window longer than that
        // would renew every certificate on every pass.
        if rb.value.0 > 365 * day {
            p.at(
                rb.referenced,
                "renewal.renew_before",
                "is longer than a certificate's lifetime (365d); every pass would renew",
            );
        }
    }

    // defaults
    let base_key = KeySpec {
        algorithm: KeyAlgorithm::EcdsaP256,
        reuse: false,
    };
    let base_validation = ValidationConfig {
        method: ValidationMethod::None,
        webroot: None,
    };
    let defaults = CertificateDefaults {
        key: key_spec(raw.defaults.key.as_ref(), &base_key),
        validation: validation_config(
            raw.defaults.validation.as_ref(),
            &base_validation,
            "defaults.validation",
            &mut p,
        ),
        reload: raw
            .defaults
            .reload
            .as_deref()
            .map(|r| check_hook_refs(r, &raw.hooks, "defaults.reload", &mut p))
            .unwrap_or_default(),
        mode: raw
            .defaults
            .renewal
            .as_ref()
            .and_then(|r| r.mode)
            .unwrap_or_default(),
    };

    // hooks
    let mut hooks = BTreeMap::new();
    for (name, h) in &raw.hooks {
        let key = format!("hooks.{name}");
        if !is_valid_name(name) {
            p.at(
                h.command.referenced,
                &key,
                format!("hook name {name:?} must match [a-z0-9_-]+"),
            );
        }
        match h.command.value.first() {
            None => p.at(h.command.referenced, format!("{key}.command"), "is empty"),
            Some(prog) if !prog.starts_with('/') && prog.contains('/') => p.at(
                h.command.referenced,
                format!("{key}.command"),
                format!(
                    "program {prog:?} is a relative path; give an absolute path or a bare name found on PATH"
                ),
            ),
            Some(_) => {}
        }
        hooks.insert(
            name.clone(),
            HookConfig {
                command: h.command.value.clone(),
                timeout: positive(
                    h.timeout.as_ref(),
                    DEFAULT_HOOK_TIMEOUT,
                    &format!("{key}.timeout"),
                    &mut p,
                ),
            },
        );
    }

    // certificates
    let mut certificates = Vec::new();
    let mut names: HashMap<String, Location> = HashMap::new();
    let mut dirs: HashMap<PathBuf, (String, Location)> = HashMap::new();
    let raw_certs = raw.certificates.as_ref();
    for (i, c) in raw_certs
        .map(|c| c.value.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let key = format!("certificates[{i}]");
        let name = &c.name.value;
        if !is_valid_name(name) {
            p.at(
                c.name.referenced,
                format!("{key}.name"),
                format!("name {name:?} must match [a-z0-9_-]+ (at most 64 characters)"),
            );
        }
        let duplicate_name = names.contains_key(name);
        if let Some(first) = names.get(name) {
            p.at(
                c.name.referenced,
                format!("{key}.name"),
                format!(
                    "duplicate certificate name {name:?} (first used at line {})",
                    first.line()
                ),
            );
        } else {
            names.insert(name.clone(), c.name.referenced);
        }
        let domain = c.domain.value.trim().to_ascii_lowercase();
        // The same check as for a domain CAS reports (`discover`).
        if let Err(e) = crate::domain::Domain::parse(&domain) {
            p.at(
                c.domain.referenced,
                format!("{key}.domain"),
                format!(
                    "\"{}\" is not a valid domain name: it {e}",
                    crate::domain::Escaped(&c.domain.value)
                ),
            );
        }
        let (dir, dir_loc) = match &c.output.dir {
            Some(d) => (d.value.0.clone(), d.referenced),
            None => (Path::new(DEFAULT_OUTPUT_ROOT).join(name), c.name.referenced),
        };
        // A duplicate name already explains a clash of the directories derived from it.
        let derived_clash = duplicate_name && c.output.dir.is_none();
        if let Some((other, first)) = dirs.get(&dir).filter(|_| !derived_clash) {
            p.at(
                dir_loc,
                format!("{key}.output.dir"),
                format!(
                    "output directory {} is also used by certificate {other:?} (line {}); each certificate needs its own",
                    dir.display(),
                    first.line()
                ),
            );
        } else {
            dirs.insert(dir.clone(), (name.clone(), dir_loc));
        }
        if let Some(v) = &c.verify
            && v.connect.value.parse::<SocketAddr>().is_err()
            && !v
                .connect
                .value
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        {
            p.at(
                v.connect.referenced,
                format!("{key}.verify.connect"),
                format!(
                    "{:?} is not host:port (e.g. \"127.0.0.1:443\")",
                    v.connect.value
                ),
            );
        }
        let validation = validation_config(
            c.validation.as_ref(),
            &defaults.validation,
            &format!("{key}.validation"),
            &mut p,
        );
        if validation.method == ValidationMethod::File && domain.starts_with("*.") {
            p.at(
                c.domain.referenced,
                format!("{key}.validation.method"),
                "wildcard domains can only be validated by DNS (CAS refuses FILE validation for them)",
            );
        }
        if let Some(etc) = accounts {
            for (field, value, kind) in [
                ("owner", &c.output.owner, crate::accounts::Kind::User),
                ("group", &c.output.group, crate::accounts::Kind::Group),
            ] {
                if let Some(v) = value
                    && let Err(e) = crate::accounts::lookup_in(etc, &v.value, kind)
                {
                    p.at(v.referenced, format!("{key}.output.{field}"), e.to_string());
                }
            }
        }
        certificates.push(CertificateConfig {
            name: name.clone(),
            domain,
            output: OutputConfig {
                dir,
                owner: c.output.owner.as_ref().map(|o| o.value.clone()),
                group: c.output.group.as_ref().map(|g| g.value.clone()),
                key_mode: c.output.key_mode.map_or(0o600, |m| m.0),
                cert_mode: c.output.cert_mode.map_or(0o644, |m| m.0),
                keep: c.output.keep.unwrap_or(5),
                allow_insecure_dir: c.output.allow_insecure_dir.unwrap_or(false),
            },
            key: key_spec(c.key.as_ref(), &defaults.key),
            validation,
            reload: match &c.reload {
                Some(r) => check_hook_refs(r, &raw.hooks, &format!("{key}.reload"), &mut p),
                None => defaults.reload.clone(),
            },
            verify: c.verify.as_ref().map(|v| VerifyConfig {
                connect: v.connect.value.clone(),
                server_name: v.server_name.clone(),
            }),
            mode: c
                .renewal
                .as_ref()
                .and_then(|r| r.mode)
                .unwrap_or(defaults.mode),
        });
    }

    let discover = raw.discover.as_ref().map(|d| {
        if d.keyword.value.trim().is_empty() {
            p.at(
                d.keyword.referenced,
                "discover.keyword",
                "is empty; it would match every order",
            );
        }
        DiscoverConfig {
            keyword: d.keyword.value.trim().to_owned(),
            output_root: d.output_root.0.clone(),
        }
    });
    if certificates.is_empty() && discover.is_none() {
        p.at(
            raw_certs.map_or(Location::UNKNOWN, |c| c.referenced),
            "certificates",
            "no certificates are configured and `discover` is not set: there is nothing to manage",
        );
    }

    let metrics = MetricsConfig {
        listen: match &raw.metrics.listen {
            Some(l) => l.value.parse().unwrap_or_else(|_| {
                p.at(
                    l.referenced,
                    "metrics.listen",
                    format!(
                        "{:?} is not an address:port such as \"127.0.0.1:9797\"",
                        l.value
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 9797))
            }),
            None => SocketAddr::from(([127, 0, 0, 1], 9797)),
        },
    };

    let level = match &raw.log.level {
        Some(l) => {
            if tracing_subscriber::EnvFilter::try_new(&l.value).is_err() {
                p.at(
                    l.referenced,
                    "log.level",
                    format!(
                        "{:?} is not a log level (trace, debug, info, warn, error) or filter directive",
                        l.value
                    ),
                );
            }
            l.value.clone()
        }
        None => "info".to_owned(),
    };

    if !p.list.is_empty() {
        p.list.sort_by_key(|x| (x.line, x.column));
        return Err(ConfigError::Invalid(p.list));
    }
    Ok(Config {
        source: source.to_owned(),
        warnings: Vec::new(),
        api,
        credentials,
        state_dir: raw
            .state_dir
            .map(|s| s.0)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        schedule,
        renewal,
        certificates,
        discover,
        defaults,
        hooks,
        metrics,
        log: LogConfig {
            format: raw.log.format.unwrap_or_default(),
            level,
        },
    })
}

#[cfg(test)]
mod tests;
