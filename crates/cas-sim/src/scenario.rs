//! The simulator's scenario file: account key, orders, issuance behaviour, rate
//! limits and fault probabilities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A `humantime` duration such as `30s`, `15m` or `30d`. The simulator's own, so it
/// does not depend on cas-renewd's configuration types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: {e} (write it like \"30s\", \"15m\" or \"30d\")"
                ))
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub access_key: AccessKey,
    /// Seed of every random choice (faults, tokens), so a run can be repeated.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub orders: Vec<OrderSpec>,
    pub generate: Option<Generate>,
    #[serde(default)]
    pub issuance: Issuance,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, u32>,
    #[serde(default)]
    pub faults: Faults,
    /// Largest `ShowSize` ListUserCertificateOrder accepts; CAS documents no limit,
    /// so the simulator enforces this one and answers InvalidParameter above it.
    #[serde(default = "default_max_page_size")]
    pub max_page_size: u32,
    /// DNS zones the simulated account hosts; by default the last two labels of
    /// every order's domain.
    #[serde(default)]
    pub dns_zones: Vec<String>,
    /// Records the zones hold from the start; Alidns being busy.
    #[serde(default)]
    pub dns: super::validation::DnsBehaviour,
    /// How answers are written (`empty_strings`).
    #[serde(default)]
    pub responses: super::validation::Responses,
    /// Resource-plan units by ProductCode (see [`Packages`]).
    #[serde(default)]
    pub packages: Packages,
    /// SSL Certificate Management V2.0 instances.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// How V2.0 instances behave where the docs are silent.
    #[serde(default)]
    pub v2: super::v2::V2Behaviour,
    /// Real answers (`sim --recording DIR`) given before the simulated account's.
    #[serde(skip)]
    pub recording: Option<super::recording::Recording>,
}

/// A V2.0 instance: a service period within which certificates are (re-)issued.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    pub domain: String,
    /// Length of the service period (InstanceStartTime to InstanceEndTime).
    pub service_period: HumanDuration,
    /// How much of the service period had passed when the simulator started.
    #[serde(default = "zero_duration")]
    pub service_used: HumanDuration,
    /// Time from the simulator's start until the current certificate expires;
    /// absent, none was issued yet (status `inactive`).
    pub certificate_expires_in: Option<HumanDuration>,
    /// Validity of each certificate issued for it (default `issuance.validity`).
    pub certificate_validity: Option<HumanDuration>,
    /// CAS re-issues by itself (with its own key) once the certificate is
    /// `willExpire` and the service period has not ended.
    #[serde(default)]
    pub auto_reissue: bool,
    /// `RSA_2048` (default), `RSA_3072`, `RSA_4096`, `ECC_256` or `SM2`.
    #[serde(default = "default_key_algorithm")]
    pub key_algorithm: String,
    /// Pins the status to one the clock does not give (`refund`, `closed`).
    pub status: Option<PinnedStatus>,
    #[serde(default)]
    pub issue: IssueOutcome,
}

fn default_key_algorithm() -> String {
    "RSA_2048".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinnedStatus {
    Refund,
    Closed,
}

impl PinnedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PinnedStatus::Refund => "refund",
            PinnedStatus::Closed => "closed",
        }
    }
}

fn default_seed() -> u64 {
    1
}

fn default_max_page_size() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

/// What the simulated CA does when a renewal of this order is issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueOutcome {
    /// A correct certificate.
    #[default]
    Ok,
    /// The order ends in `verify_fail`.
    VerifyFail,
    /// A certificate for a different public key than the CSR's.
    WrongKey,
    /// A certificate for a name other than the order's.
    WrongName,
    /// A certificate that has already expired.
    Expired,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSpec {
    pub domain: String,
    /// Time from the simulator's start until the current certificate expires.
    pub expires_in: HumanDuration,
    #[serde(default)]
    pub sans: Vec<String>,
    /// `RSA` or `ECC`: the key CAS generates when a renewal has no CSR.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default)]
    pub issue: IssueOutcome,
    /// ListUserCertificateOrder's kind fields. By default a paid DV product
    /// (`geotrust-dv-1-starter`, `geotrust-dv-w-starter` for a wildcard), CertType
    /// `FREE` for a `*-free-*` product, DomainType `ONE`/`WILDCARD`, SourceType `cpack`.
    pub product_code: Option<String>,
    pub cert_type: Option<String>,
    pub domain_type: Option<String>,
    pub source_type: Option<String>,
}

/// Resource plans of the simulated account, by ProductCode: units bought. A paid
/// product not listed has 1 000 000 units; free products have the documented 20
/// per account per year.
pub type Packages = BTreeMap<String, u32>;

fn default_algorithm() -> String {
    "RSA".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    pub count: u32,
    #[serde(default)]
    pub expiring_fraction: f64,
    /// `{n}` is replaced by the order's number.
    #[serde(default = "default_generated_domain")]
    pub domain: String,
    /// `RSA` or `ECC`, as for listed orders.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
}

fn default_generated_domain() -> String {
    "host-{n}.example.com".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationKind {
    #[default]
    None,
    Dns,
    File,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuance {
    /// DescribeCertificateState polls a renewal order answers before `certificate`.
    #[serde(default = "default_polls")]
    pub polls_before_issued: u32,
    #[serde(default)]
    pub validation: ValidationKind,
    #[serde(default = "default_validity")]
    pub validity: HumanDuration,
    /// Where FILE validation looks for `Uri` (the web root of every domain).
    pub webroot: Option<PathBuf>,
    /// How a key CAS made is encoded in `PrivateKey` / `Key`.
    #[serde(default)]
    pub key_format: KeyFormat,
    /// How `RecordDomain` is written.
    #[serde(default)]
    pub record_domain: super::validation::RecordDomainForm,
    /// A hostile DNS validation answer instead of the real one.
    pub hostile_record: Option<super::validation::HostileRecord>,
    /// ASSUMPTION switch (the docs say a renewal order is "pending application" and
    /// must be applied for; whether a Csr sent with the renew does that is unknown):
    /// false, a renewal order leaves `payed` by itself; true, it stays `payed` until
    /// ApplyCertificate is called on its InstanceId.
    #[serde(default)]
    pub renewal_needs_application: bool,
    /// ASSUMPTION switch (the documented PAYED sample order has `"Domain": ""`; what
    /// a fresh renewal order shows is unknown): true lists orders made by renew or
    /// create with an empty Domain until they are issued.
    #[serde(default)]
    pub new_orders_domain_empty: bool,
    /// ASSUMPTION switch (whether the V2.0 UpdateInstance/ApplyCertificate accept the
    /// InstanceId ListUserCertificateOrder gives a V1 order is unknown): false lists
    /// orders without an InstanceId and refuses those calls.
    #[serde(default = "default_true")]
    pub instance_ids: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Issuance {
    fn default() -> Self {
        Issuance {
            polls_before_issued: default_polls(),
            validation: ValidationKind::None,
            validity: default_validity(),
            webroot: None,
            key_format: KeyFormat::default(),
            record_domain: Default::default(),
            hostile_record: None,
            renewal_needs_application: false,
            new_orders_domain_empty: false,
            instance_ids: true,
        }
    }
}

/// The PEM form of a key CAS made. Which form real CAS sends is not settled: every
/// documented example is PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC
/// PRIVATE KEY`), GetUserCertificateDetail's on one line; the others are plausible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// PKCS#1 for RSA, SEC1 for EC, LF line ends (the documented examples).
    #[default]
    Pkcs1,
    /// PKCS#8 (`BEGIN PRIVATE KEY`) for both.
    Pkcs8,
    /// As `pkcs1`, an EC key preceded by an `EC PARAMETERS` block (`openssl
    /// ecparam -genkey`).
    Sec1WithParams,
    /// As `pkcs1`, on one line with spaces for line breaks (the
    /// GetUserCertificateDetail example).
    OneLine,
    /// As `pkcs1`, CRLF line ends and no line end after the last line.
    Crlf,
}

fn default_polls() -> u32 {
    2
}

fn default_validity() -> HumanDuration {
    HumanDuration(Duration::from_secs(365 * 86_400))
}

/// Probabilities (0 to 1) of each fault per API request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub throttle: f64,
    /// Answer 503 ServiceUnavailable or 500 InternalError without acting.
    #[serde(default)]
    pub server_error: f64,
    /// Act, then hold the answer for `hold` (past the client's timeout).
    #[serde(default)]
    pub timeout: f64,
    /// Act, then answer a truncated or non-JSON body.
    #[serde(default)]
    pub malformed: f64,
    /// Added to every API answer.
    #[serde(default = "zero_duration")]
    pub latency: HumanDuration,
    #[serde(default = "default_hold")]
    pub hold: HumanDuration,
    /// The first N calls of each named action answer 503 ServiceUnavailable without
    /// acting (a client cannot tell: an unclear outcome with no effect).
    #[serde(default)]
    pub refuse_first: BTreeMap<String, u32>,
    /// The first N calls of each named action act, then answer 500 InternalError
    /// (an unclear outcome that took effect).
    #[serde(default)]
    pub act_then_fail_first: BTreeMap<String, u32>,
    /// The Message of every error answer, in place of the simulator's own. Alibaba
    /// documents Message as free text the server writes; a hostile or broken one
    /// (control characters, terminal escapes, several lines) tests that the client
    /// never prints it raw.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Actions the account's RAM policy denies: each answers 403 `Forbidden.RAM`
    /// (the documented body) without acting.
    #[serde(default)]
    pub deny: Vec<String>,
    /// How many seconds the server's clock is ahead of this host's (negative:
    /// behind). It shows in every answer's Date header, and the server checks
    /// request timestamps against it (15 minutes either way, as Alibaba does).
    #[serde(default)]
    pub clock_offset_seconds: i64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle: 0.0,
            server_error: 0.0,
            timeout: 0.0,
            malformed: 0.0,
            latency: zero_duration(),
            hold: default_hold(),
            refuse_first: BTreeMap::new(),
            act_then_fail_first: BTreeMap::new(),
            error_message: None,
            deny: Vec::new(),
            clock_offset_seconds: 0,
        }
    }
}

fn zero_duration() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

fn default_hold() -> HumanDuration {
    HumanDuration(Duration::from_secs(35))
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read scenario: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            message,
        };
        let s: Scenario = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (name, p) in [
            ("faults.throttle", s.faults.throttle),
            ("faults.server_error", s.faults.server_error),
            ("faults.timeout", s.faults.timeout),
            ("faults.malformed", s.faults.malformed),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid(format!(
                    "{name} is {p}; a probability is between 0 and 1"
                )));
            }
        }
        if let Some(g) = &s.generate {
            if !(0.0..=1.0).contains(&g.expiring_fraction) {
                return Err(invalid(
                    "generate.expiring_fraction must be between 0 and 1".into(),
                ));
            }
            if !g.domain.contains("{n}") {
                return Err(invalid(
                    "generate.domain needs {n} so that domains differ".into(),
                ));
            }
        }
        if s.issuance.validation == ValidationKind::File && s.issuance.webroot.is_none() {
            return Err(invalid(
                "issuance.validation: file needs issuance.webroot".into(),
            ));
        }
        for (i, inst) in s.instances.iter().enumerate() {
            const KEYS: [&str; 5] = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_256", "SM2"];
            if !KEYS.contains(&inst.key_algorithm.as_str()) {
                return Err(invalid(format!(
                    "instances[{i}].key_algorithm {:?} is not one of {}",
                    inst.key_algorithm,
                    KEYS.join(", ")
                )));
            }
            if inst.service_used.0 > inst.service_period.0 {
                return Err(invalid(format!(
                    "instances[{i}].service_used is longer than its service_period"
                )));
            }
        }
        if s.max_page_size == 0 {
            return Err(invalid("max_page_size must be at least 1".into()));
        }
        Ok(s)
    }

    /// A small scenario for `demo` and quick trials.
    pub fn demo() -> Scenario {
        Scenario::parse(DEMO_SCENARIO, Path::new("<built-in demo scenario>"))
            .expect("the built-in scenario is valid (tested)")
    }
}

/// The scenario `demo` runs, also shipped as `config/sim-scenario.example.yaml`.
pub const DEMO_SCENARIO: &str = "\
access_key: { id: sim-access-key-id, secret: sim-access-key-secret }
orders:
  - { domain: www.example.com, expires_in: 20d }
  - { domain: api.example.com, expires_in: 200d, sans: [api2.example.com] }
issuance: { polls_before_issued: 2, validation: none, validity: 365d }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_and_example_scenarios_parse() {
        let d = Scenario::demo();
        assert_eq!(d.orders.len(), 2);
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sim-scenario.example.yaml");
        let s = Scenario::load(&example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.access_key.id, "sim-access-key-id");
        assert_eq!(s.rate_limits.get("ListUserCertificateOrder"), Some(&10));
        assert_eq!(
            d.issuance.key_format,
            KeyFormat::Pkcs1,
            "the documented form"
        );
        for (text, want) in [
            ("pkcs8", KeyFormat::Pkcs8),
            ("sec1_with_params", KeyFormat::Sec1WithParams),
            ("one_line", KeyFormat::OneLine),
            ("crlf", KeyFormat::Crlf),
        ] {
            let s = Scenario::parse(
                &format!(
                    "access_key: {{ id: a, secret: b }}\nissuance: {{ key_format: {text} }}\n"
                ),
                Path::new("s.yaml"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.issuance.key_format, want);
        }
    }

    #[test]
    fn instances_parse_with_every_key() {
        let s = Scenario::parse(
            "access_key: { id: a, secret: b }\ninstances:\n  - { domain: cdn.example.com, service_period: 730d, service_used: 30d, certificate_expires_in: 20d, certificate_validity: 90d, auto_reissue: true, key_algorithm: ECC_256, status: closed, issue: verify_fail }\nv2: { cert_within_service: false, task_processing_polls: 3, polls_before_issued: 0 }\n",
            Path::new("s.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let i = &s.instances[0];
        assert_eq!(i.service_period.0, Duration::from_secs(730 * 86_400));
        assert_eq!(
            (i.status, i.issue),
            (Some(PinnedStatus::Closed), IssueOutcome::VerifyFail)
        );
        assert!(i.auto_reissue && !s.v2.cert_within_service);
        assert_eq!(
            (s.v2.task_processing_polls, s.v2.polls_before_issued),
            (3, Some(0))
        );
        let d = Scenario::demo();
        assert!(d.instances.is_empty() && d.v2.cert_within_service);
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let p = Path::new("s.yaml");
        let key = "access_key: { id: a, secret: b }\n";
        for bad in [
            format!("{key}faults: {{ throttle: 1.5 }}\n"),
            format!("{key}generate: {{ count: 3, domain: fixed.example.com }}\n"),
            format!("{key}issuance: {{ validation: file }}\n"),
            format!("{key}unknown: 1\n"),
            format!("{key}issuance: {{ key_format: der }}\n"),
            format!(
                "{key}instances: [{{ domain: a.example.com, service_period: 30d, service_used: 40d }}]\n"
            ),
            format!(
                "{key}instances: [{{ domain: a.example.com, service_period: 30d, key_algorithm: DSA }}]\n"
            ),
            format!(
                "{key}instances: [{{ domain: a.example.com, service_period: 30d, status: normal }}]\n"
            ),
            "orders: []\n".to_owned(),
        ] {
            assert!(Scenario::parse(&bad, p).is_err(), "{bad}");
        }
    }
}
