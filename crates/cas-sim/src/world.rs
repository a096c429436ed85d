//! The simulated account: orders on a simulated clock, their renewals, issued
//! certificates, V2.0 instances, the DNS zone, and the counters `/_sim/state`
//! reports.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ca::{Ca, IssueJob, Issued};
use super::scenario::{IssueOutcome, Scenario, ValidationKind};

mod dns;
mod inspect;
mod instance_apply;
mod instance_listing;
mod instances;
mod issuance;
mod listing;
mod packages;
mod reads;
mod renew;
#[cfg(test)]
mod tests;

pub use dns::DnsRecord;

const DAY_MS: i64 = 86_400_000;
/// Orders within this much of expiry are `WILLEXPIRED`, as the CAS console says.
const WILL_EXPIRE_MS: i64 = 30 * DAY_MS;
pub use super::v2::FILE_VALIDATION_URI;
pub use super::validation::DNS_RECORD_HOST;
use super::validation::{self as validation_sim, HostileRecord, RecordDomainForm};

/// An error answer: HTTP status, Alibaba `Code` and `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl SimError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        SimError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn missing(name: &str) -> Self {
        SimError::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    pub fn invalid(name: &str, why: impl std::fmt::Display) -> Self {
        SimError::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid: {why}"),
        )
    }
}

/// Where a renewal order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Payed,
    DomainVerify,
    Process,
    Certificate,
    VerifyFail,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Payed => "payed",
            Phase::DomainVerify => "domain_verify",
            Phase::Process => "process",
            Phase::Certificate => "certificate",
            Phase::VerifyFail => "verify_fail",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Renewal {
    pub csr: Option<String>,
    pub polls: u32,
    pub phase: Phase,
    pub validated: bool,
    pub token: String,
    /// The application was submitted (by the call that made the order, by CAS
    /// itself, or by ApplyCertificate); until then the order stays `payed`.
    pub applied: bool,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub order_id: i64,
    pub domain: String,
    pub sans: Vec<String>,
    pub algorithm: String,
    pub issue: IssueOutcome,
    pub buy_date_ms: i64,
    pub cert_start_ms: Option<i64>,
    pub cert_end_ms: Option<i64>,
    pub certificate_id: Option<i64>,
    pub source_order_id: Option<i64>,
    pub renewal: Option<Renewal>,
    /// Certificate material; made on first request for orders from the scenario.
    pub issued: Option<Issued>,
    pub kind: packages::Kind,
}

impl Order {
    fn status(&self, now_ms: i64) -> &'static str {
        if let Some(r) = &self.renewal {
            match r.phase {
                Phase::Payed => return "PAYED",
                Phase::DomainVerify | Phase::Process => return "CHECKING",
                Phase::VerifyFail => return "CHECKED_FAIL",
                Phase::Certificate => {}
            }
        }
        match self.cert_end_ms {
            Some(end) if end <= now_ms => "EXPIRED",
            Some(end) if end - now_ms <= WILL_EXPIRE_MS => "WILLEXPIRED",
            _ => "ISSUED",
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names = vec![self.domain.clone()];
        names.extend(self.sans.iter().filter(|s| **s != self.domain).cloned());
        names
    }

    fn instance_id(&self) -> String {
        format!("cas-sim-{}", self.order_id)
    }
}

/// The whole simulated account.
pub struct World {
    ca: std::sync::Arc<Ca>,
    /// Certificates made outside the lock for the issuance a request is about to
    /// do, by order (see [`World::issuance_ahead`]).
    prepared: HashMap<i64, (IssueJob, Issued)>,
    start: DateTime<Utc>,
    offset_ms: i64,
    orders: BTreeMap<i64, Order>,
    by_cert: HashMap<i64, i64>,
    next_order_id: i64,
    next_cert_id: i64,
    next_record_id: u64,
    records: Vec<DnsRecord>,
    zones: Vec<String>,
    polls_before_issued: u32,
    validation: ValidationKind,
    record_domain: RecordDomainForm,
    hostile_record: Option<HostileRecord>,
    empty_strings: bool,
    /// AddDomainRecord calls still to answer `LastOperationNotFinished`.
    dns_busy: u32,
    validity_ms: i64,
    webroot: Option<PathBuf>,
    max_page_size: u32,
    plans: packages::Plans,
    instances: instances::Instances,
    recording: Option<crate::recording::Recording>,
    pub calls: BTreeMap<String, u64>,
    pub renew_calls: BTreeMap<i64, u64>,
    pub signature_failures: u64,
    /// The last signatures received, so tests can search logs for them.
    recent_signatures: std::collections::VecDeque<String>,
    pub faults: BTreeMap<String, u64>,
    pub throttled: u64,
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn required<'a>(p: &'a HashMap<String, String>, name: &str) -> Result<&'a str, SimError> {
    param(p, name).ok_or_else(|| SimError::missing(name))
}

fn int_param(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, SimError> {
    param(p, name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| SimError::invalid(name, "not an integer"))
        })
        .transpose()
}

fn bool_param(p: &HashMap<String, String>, name: &str) -> Result<bool, SimError> {
    match param(p, name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(SimError::invalid(name, "not a boolean")),
    }
}

fn zone_of(domain: &str) -> String {
    let d = domain.trim_start_matches("*.");
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() <= 2 {
        d.to_owned()
    } else {
        labels[labels.len() - 2..].join(".")
    }
}

fn new_token() -> String {
    format!(
        "{}{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        hex::encode(rand::random::<[u8; 16]>())
    )
}

/// A RequestId in Alibaba's form (a UUID in capitals). Not from the seeded
/// generator: ids differ between runs, faults do not.
pub fn new_request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn ms_to_date(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

impl World {
    pub fn new(s: &Scenario) -> Result<World, super::ca::CaError> {
        let start = Utc::now();
        let now_ms = start.timestamp_millis();
        let mut w = World {
            ca: std::sync::Arc::new(Ca::new()?.with_key_format(s.issuance.key_format)),
            prepared: HashMap::new(),
            start,
            offset_ms: 0,
            orders: BTreeMap::new(),
            by_cert: HashMap::new(),
            next_order_id: 100_001,
            next_cert_id: 500_001,
            next_record_id: 700_001,
            records: Vec::new(),
            zones: s.dns_zones.clone(),
            polls_before_issued: s.issuance.polls_before_issued,
            validation: s.issuance.validation,
            record_domain: s.issuance.record_domain,
            hostile_record: s.issuance.hostile_record,
            empty_strings: s.responses.empty_strings,
            dns_busy: s.dns.busy,
            validity_ms: i64::try_from(s.issuance.validity.0.as_millis()).unwrap_or(i64::MAX / 4),
            webroot: s.issuance.webroot.clone(),
            max_page_size: s.max_page_size,
            plans: packages::Plans::new(s),
            instances: instances::Instances::default(),
            recording: s.recording.clone(),
            calls: BTreeMap::new(),
            renew_calls: BTreeMap::new(),
            signature_failures: 0,
            recent_signatures: std::collections::VecDeque::new(),
            faults: BTreeMap::new(),
            throttled: 0,
        };
        w.seed_instances(s, now_ms);
        w.seed_orders(s, now_ms);
        w.seed_dns(s);
        Ok(w)
    }

    /// The scenario's orders, its generated ones, and the zones they imply
    /// when the scenario names none.
    fn seed_orders(&mut self, s: &Scenario, now_ms: i64) {
        for o in &s.orders {
            let end = now_ms + i64::try_from(o.expires_in.0.as_millis()).unwrap_or(0);
            let domain = o.domain.to_ascii_lowercase();
            let kind = packages::Kind::of(&domain, Some(o));
            self.add_original(domain, o.sans.clone(), &o.algorithm, o.issue, end, kind);
        }
        if let Some(g) = &s.generate {
            let expiring = (f64::from(g.count) * g.expiring_fraction).round() as u32;
            for n in 0..g.count {
                // Expiring ones spread over 5 to 25 days, the rest over 100 to 300 days.
                let days = if n < expiring {
                    5 + i64::from(n % 21)
                } else {
                    100 + i64::from(n % 201)
                };
                let domain = g.domain.replace("{n}", &n.to_string());
                let kind = packages::Kind::of(&domain, None);
                self.add_original(
                    domain,
                    Vec::new(),
                    &g.algorithm,
                    IssueOutcome::Ok,
                    now_ms + days * DAY_MS,
                    kind,
                );
            }
        }
        if self.zones.is_empty() {
            let instance_domains = self.instances.map.values().map(|i| &i.domain);
            let mut zones: Vec<String> = self
                .orders
                .values()
                .map(|o| &o.domain)
                .chain(instance_domains)
                .map(|d| zone_of(d))
                .collect();
            zones.sort();
            zones.dedup();
            self.zones = zones;
        }
    }

    /// The scenario's DNS records.
    fn seed_dns(&mut self, s: &Scenario) {
        for r in &s.dns.records {
            let record_id = self.next_record_id.to_string();
            self.next_record_id += 1;
            self.records.push(DnsRecord {
                record_id,
                zone: r.zone.to_ascii_lowercase(),
                rr: r.rr.clone(),
                rtype: r.rtype.to_ascii_uppercase(),
                value: r.value.clone(),
                ttl: 600,
                line: "default".into(),
            });
        }
    }

    fn add_original(
        &mut self,
        domain: String,
        sans: Vec<String>,
        algorithm: &str,
        issue: IssueOutcome,
        end_ms: i64,
        kind: packages::Kind,
    ) {
        let id = self.next_order_id;
        self.next_order_id += 1;
        let cert_id = self.next_cert_id;
        self.next_cert_id += 1;
        self.by_cert.insert(cert_id, id);
        let start = end_ms - self.validity_ms;
        self.orders.insert(
            id,
            Order {
                order_id: id,
                domain,
                sans: sans.into_iter().map(|s| s.to_ascii_lowercase()).collect(),
                algorithm: algorithm.to_owned(),
                issue,
                buy_date_ms: start,
                cert_start_ms: Some(start),
                cert_end_ms: Some(end_ms),
                certificate_id: Some(cert_id),
                source_order_id: None,
                renewal: None,
                issued: None,
                kind,
            },
        );
    }

    /// The simulated clock, which `/_sim/clock` moves; signatures use the wall clock.
    pub fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.offset_ms
    }

    /// Sets the units of a paid product's resource plan (`POST /_sim/packages`).
    pub fn set_package_units(&mut self, product_code: &str, units: u32) {
        self.plans.set_units(product_code, units);
    }

    pub fn advance(&mut self, by: std::time::Duration) {
        self.offset_ms += i64::try_from(by.as_millis()).unwrap_or(0);
    }

    pub fn root_pem(&self) -> &str {
        self.ca.root_pem()
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Runs one action. `params` holds the request's query and form parameters.
    pub fn call(&mut self, action: &str, p: &HashMap<String, String>) -> Result<Value, SimError> {
        if let Some(e) = self.plans.refuse_now(action) {
            return Err(e);
        }
        if let Some(answer) = self.recording.as_ref().and_then(|r| r.answer(action, p)) {
            return answer;
        }
        if let Some(e) = self.refuse_v1_on_instance(action, p) {
            return Err(e);
        }
        let result = self.act(action, p);
        let mut out = match self.plans.fail_after_acting(action) {
            Some(e) if result.is_ok() => return Err(e),
            _ => result?,
        };
        if self.empty_strings {
            validation_sim::fill_empty(action, &mut out);
        }
        Ok(out)
    }

    /// Whether `InstanceId` names a V2.0 instance (not a V1 order's pending
    /// application).
    fn is_v2_instance(&self, p: &HashMap<String, String>) -> bool {
        param(p, "InstanceId").is_some_and(|id| self.instances.map.contains_key(id))
    }

    fn act(&mut self, action: &str, p: &HashMap<String, String>) -> Result<Value, SimError> {
        match action {
            "ListUserCertificateOrder" => self.list_orders(p),
            "DescribeCertificateState" => self.describe_state(p),
            "RenewCertificateOrderForPackageRequest" => self.renew(p),
            "GetUserCertificateDetail" => self.detail(p),
            "CreateCertificateForPackageRequest" => self.create_certificate(p),
            "DescribePackageState" => self.describe_package_state(p),
            "UpdateInstance" if self.is_v2_instance(p) => self.update_instance_v2(p),
            "ApplyCertificate" if self.is_v2_instance(p) => self.apply_certificate_v2(p),
            "UpdateInstance" => self.update_instance(p),
            "ApplyCertificate" => self.apply_certificate(p),
            "ListInstances" => self.list_instances(p),
            "GetInstanceDetail" => self.instance_detail(p),
            "GetTaskAttribute" => self.task_attribute(p),
            "AddDomainRecord" => self.add_record(p),
            "DeleteDomainRecord" => self.delete_record(p),
            "DescribeDomainRecords" => self.describe_records(p),
            "DescribeSubDomainRecords" => self.describe_sub_records(p),
            "DescribeDomains" => self.describe_domains(p),
            other => Err(SimError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api is not found, please check your url and method: {other}"),
            )),
        }
    }
}
