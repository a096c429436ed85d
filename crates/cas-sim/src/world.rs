//! The simulated account: orders on a simulated clock, their renewals, issued
//! certificates, the DNS zone, and the counters `/_sim/state` reports.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ca::{Ca, Issued, Twist};
use super::scenario::{IssueOutcome, Scenario, ValidationKind};

mod packages;

const DAY_MS: i64 = 86_400_000;
/// Orders within this much of expiry are `WILLEXPIRED`, as the CAS console says.
const WILL_EXPIRE_MS: i64 = 30 * DAY_MS;
pub use super::validation::DNS_RECORD_HOST;
use super::validation::{self as validation_sim, HostileRecord, RecordDomainForm};
pub const FILE_VALIDATION_URI: &str = "/.well-known/pki-validation/fileauth.txt";

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

#[derive(Debug, Clone)]
pub struct DnsRecord {
    pub record_id: String,
    pub zone: String,
    pub rr: String,
    pub rtype: String,
    pub value: String,
    pub ttl: i64,
    pub line: String,
}

impl DnsRecord {
    fn fqdn(&self) -> String {
        if self.rr == "@" {
            self.zone.clone()
        } else {
            format!("{}.{}", self.rr, self.zone)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "RecordId": self.record_id,
            "DomainName": self.zone,
            "RR": self.rr,
            "Type": self.rtype,
            "Value": self.value,
            "TTL": self.ttl,
            "Line": self.line,
            "Status": "ENABLE",
            "Locked": false,
            "Weight": 1,
        })
    }
}

/// The whole simulated account.
pub struct World {
    ca: Ca,
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

fn ms_to_offset(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
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
            ca: Ca::new()?.with_key_format(s.issuance.key_format),
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
            calls: BTreeMap::new(),
            renew_calls: BTreeMap::new(),
            signature_failures: 0,
            recent_signatures: std::collections::VecDeque::new(),
            faults: BTreeMap::new(),
            throttled: 0,
        };
        for o in &s.orders {
            let end = now_ms + i64::try_from(o.expires_in.0.as_millis()).unwrap_or(0);
            let domain = o.domain.to_ascii_lowercase();
            let kind = packages::Kind::of(&domain, Some(o));
            w.add_original(domain, o.sans.clone(), &o.algorithm, o.issue, end, kind);
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
                w.add_original(
                    domain,
                    Vec::new(),
                    &g.algorithm,
                    IssueOutcome::Ok,
                    now_ms + days * DAY_MS,
                    kind,
                );
            }
        }
        if w.zones.is_empty() {
            let mut zones: Vec<String> = w.orders.values().map(|o| zone_of(&o.domain)).collect();
            zones.sort();
            zones.dedup();
            w.zones = zones;
        }
        for r in &s.dns.records {
            let record_id = w.next_record_id.to_string();
            w.next_record_id += 1;
            w.records.push(DnsRecord {
                record_id,
                zone: r.zone.to_ascii_lowercase(),
                rr: r.rr.clone(),
                rtype: r.rtype.to_ascii_uppercase(),
                value: r.value.clone(),
                ttl: 600,
                line: "default".into(),
            });
        }
        Ok(w)
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

    fn act(&mut self, action: &str, p: &HashMap<String, String>) -> Result<Value, SimError> {
        match action {
            "ListUserCertificateOrder" => self.list_orders(p),
            "DescribeCertificateState" => self.describe_state(p),
            "RenewCertificateOrderForPackageRequest" => self.renew(p),
            "GetUserCertificateDetail" => self.detail(p),
            "CreateCertificateForPackageRequest" => self.create_certificate(p),
            "DescribePackageState" => self.describe_package_state(p),
            "UpdateInstance" => self.update_instance(p),
            "ApplyCertificate" => self.apply_certificate(p),
            "AddDomainRecord" => self.add_record(p),
            "DeleteDomainRecord" => self.delete_record(p),
            "DescribeDomainRecords" => self.describe_records(p),
            "DescribeSubDomainRecords" => self.describe_sub_records(p),
            other => Err(SimError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api is not found, please check your url and method: {other}"),
            )),
        }
    }

    fn order_json(&self, o: &Order, now_ms: i64) -> Value {
        json!({
            "OrderId": o.order_id,
            "InstanceId": self.plans.listed_instance(o),
            "AliyunOrderId": o.order_id + 9_000_000,
            "PartnerOrderId": format!("sim-{}", o.order_id),
            "Status": o.status(now_ms),
            "ProductCode": o.kind.product_code,
            "ProductName": format!("{} (simulated)", o.kind.product_code),
            "Algorithm": o.algorithm,
            "CertType": o.kind.cert_type,
            "Domain": self.plans.listed_domain(o),
            "DomainCount": 1 + o.sans.len(),
            "WildDomainCount": i64::from(o.domain.starts_with("*.")),
            "DomainType": o.kind.domain_type,
            "RootBrand": "DigiCert",
            "SourceType": o.kind.source_type,
            "TrusteeStatus": "unTrustee",
            "BuyDate": o.buy_date_ms,
            "CertStartTime": o.cert_start_ms,
            "CertEndTime": o.cert_end_ms,
        })
    }

    fn cert_json(&self, o: &Order, now_ms: i64) -> Value {
        let end = o.cert_end_ms.unwrap_or(0);
        json!({
            "CertificateId": o.certificate_id,
            "InstanceId": self.plans.listed_instance(o),
            "Name": format!("cert-{}", o.certificate_id.unwrap_or(0)),
            "CommonName": o.domain,
            "Sans": o.names().join(","),
            "StartDate": ms_to_date(o.cert_start_ms.unwrap_or(0)),
            "EndDate": ms_to_date(end),
            "Expired": end <= now_ms,
            "Upload": o.kind.uploaded(),
            "Issuer": "cas-renewd simulator intermediate CA",
            "SerialNo": o.issued.as_ref().map(|i| i.serial_hex.clone()),
            "Status": o.status(now_ms),
        })
    }

    fn list_orders(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let page = int_param(p, "CurrentPage")?.unwrap_or(1);
        let size = int_param(p, "ShowSize")?.unwrap_or(50);
        if page < 1 {
            return Err(SimError::invalid("CurrentPage", "must be at least 1"));
        }
        if size < 1 || size > i64::from(self.max_page_size) {
            return Err(SimError::invalid(
                "ShowSize",
                format!("must be between 1 and {}", self.max_page_size),
            ));
        }
        let order_type = param(p, "OrderType").unwrap_or("CPACK");
        let certs = match order_type {
            "CPACK" | "BUY" => false,
            "CERT" | "UPLOAD" => true,
            other => {
                return Err(SimError::invalid(
                    "OrderType",
                    format!("unknown type {other:?}"),
                ));
            }
        };
        let status = param(p, "Status");
        if let Some(s) = status {
            const KNOWN: [&str; 8] = [
                "PAYED",
                "CHECKING",
                "CHECKED_FAIL",
                "ISSUED",
                "WILLEXPIRED",
                "EXPIRED",
                "NOTACTIVATED",
                "REVOKED",
            ];
            if !KNOWN.contains(&s) {
                return Err(SimError::invalid("Status", format!("unknown status {s:?}")));
            }
        }
        let keyword = param(p, "Keyword").map(str::to_ascii_lowercase);
        let now = self.now_ms();
        // Every simulated order comes from a resource plan; BUY and UPLOAD lists are empty.
        let source_matches = matches!(order_type, "CPACK" | "CERT");
        let matching: Vec<&Order> = self
            .orders
            .values()
            .filter(|_| source_matches)
            .filter(|o| !certs || o.certificate_id.is_some() && o.cert_end_ms.is_some())
            .filter(|o| {
                let st = o.status(now);
                match status {
                    Some(s) => st == s,
                    // Certificates default to the valid ones; orders to all.
                    None => !certs || matches!(st, "ISSUED" | "WILLEXPIRED"),
                }
            })
            .filter(|o| {
                keyword.as_deref().is_none_or(|k| {
                    o.names().iter().any(|n| n.contains(k))
                        || o.instance_id().contains(k)
                        || o.order_id.to_string() == k
                })
            })
            .collect();
        let total = matching.len();
        let from = usize::try_from((page - 1) * size).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .iter()
            .skip(from)
            .take(usize::try_from(size).unwrap_or(0))
            .map(|o| {
                if certs {
                    self.cert_json(o, now)
                } else {
                    self.order_json(o, now)
                }
            })
            .collect();
        Ok(json!({
            "TotalCount": total,
            "ShowSize": size,
            "CurrentPage": page,
            "CertificateOrderList": items,
        }))
    }

    fn order_mut(&mut self, p: &HashMap<String, String>) -> Result<&mut Order, SimError> {
        let id = int_param(p, "OrderId")?.ok_or_else(|| SimError::missing("OrderId"))?;
        self.orders.get_mut(&id).ok_or_else(|| {
            SimError::new(
                400,
                "InvalidOrderId.NotFound",
                format!("The order {id} does not exist."),
            )
        })
    }

    /// Makes the certificate of an order from the scenario on first request: CAS
    /// generated its key, so the answer carries the private key.
    fn ensure_original_material(&mut self, order_id: i64) -> Result<(), SimError> {
        let now_wall = Utc::now().timestamp_millis();
        let Some(o) = self.orders.get(&order_id) else {
            return Ok(());
        };
        if o.issued.is_some() || o.renewal.is_some() {
            return Ok(());
        }
        let end = o.cert_end_ms.unwrap_or(now_wall);
        // A not-before in the wall clock's past keeps the certificate usable even
        // after the simulated clock was moved forward.
        let start = (end - self.validity_ms).min(now_wall - 300_000);
        let issued = self
            .ca
            .issue(
                None,
                &o.names(),
                &o.algorithm,
                ms_to_offset(start),
                ms_to_offset(end),
                Twist::None,
            )
            .map_err(|e| SimError::new(500, "InternalError", e.to_string()))?;
        if let Some(o) = self.orders.get_mut(&order_id) {
            o.issued = Some(issued);
        }
        Ok(())
    }

    fn certificate_fields(o: &Order) -> (Option<String>, Option<String>) {
        match &o.issued {
            Some(i) => (
                Some(format!("{}{}", i.leaf_pem, i.chain_pem)),
                i.private_key_pem.clone(),
            ),
            None => (None, None),
        }
    }

    fn validation_done(&self, o: &Order, token: &str) -> bool {
        let base = o.domain.trim_start_matches("*.");
        match self.validation {
            ValidationKind::None => true,
            ValidationKind::Dns => {
                let want = format!("{DNS_RECORD_HOST}.{base}");
                self.records.iter().any(|r| {
                    r.rtype.eq_ignore_ascii_case("TXT")
                        && r.fqdn().eq_ignore_ascii_case(&want)
                        && r.value == token
                })
            }
            ValidationKind::File => self.webroot.as_ref().is_some_and(|root| {
                std::fs::read_to_string(root.join(FILE_VALIDATION_URI.trim_start_matches('/')))
                    .is_ok_and(|c| c.trim() == token)
            }),
        }
    }

    fn describe_state(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let order_id = self.order_mut(p)?.order_id;
        self.ensure_original_material(order_id)?;
        let now = self.now_ms();
        let polls_needed = self.polls_before_issued;
        let validity = self.validity_ms;
        let (phase, token, validated) = {
            let o = self
                .orders
                .get_mut(&order_id)
                .ok_or_else(|| SimError::missing("OrderId"))?;
            match &mut o.renewal {
                None => (Phase::Certificate, String::new(), true),
                Some(r) => {
                    if !matches!(r.phase, Phase::Certificate | Phase::VerifyFail) {
                        r.polls += 1;
                    }
                    (r.phase, r.token.clone(), r.validated)
                }
            }
        };
        let mut next = phase;
        if !matches!(phase, Phase::Certificate | Phase::VerifyFail) {
            let o = &self.orders[&order_id];
            let r = o
                .renewal
                .as_ref()
                .ok_or_else(|| SimError::missing("OrderId"))?;
            let validated = validated || self.validation_done(o, &token);
            next = if !r.applied || r.polls == 1 && polls_needed > 0 {
                Phase::Payed
            } else if !validated {
                Phase::DomainVerify
            } else if r.polls > polls_needed && o.issue == IssueOutcome::VerifyFail {
                Phase::VerifyFail
            } else if r.polls > polls_needed {
                Phase::Certificate
            } else {
                Phase::Process
            };
            if next == Phase::Certificate {
                let validity = o.kind.validity_ms(validity);
                let wall = Utc::now().timestamp_millis();
                let twist = match o.issue {
                    IssueOutcome::WrongKey => Twist::WrongKey,
                    IssueOutcome::WrongName => Twist::WrongName,
                    IssueOutcome::Expired => Twist::Expired,
                    IssueOutcome::Ok | IssueOutcome::VerifyFail => Twist::None,
                };
                let start = now.min(wall) - 300_000;
                let issued = self
                    .ca
                    .issue(
                        r.csr.as_deref(),
                        &o.names(),
                        &o.algorithm,
                        ms_to_offset(start),
                        ms_to_offset(now + validity),
                        twist,
                    )
                    .map_err(|e| SimError::new(500, "InternalError", e.to_string()))?;
                let cert_id = self.next_cert_id;
                self.next_cert_id += 1;
                self.by_cert.insert(cert_id, order_id);
                let o = self
                    .orders
                    .get_mut(&order_id)
                    .ok_or_else(|| SimError::missing("OrderId"))?;
                o.issued = Some(issued);
                o.certificate_id = Some(cert_id);
                o.cert_start_ms = Some(now);
                o.cert_end_ms = Some(now + validity);
            }
            let o = self
                .orders
                .get_mut(&order_id)
                .ok_or_else(|| SimError::missing("OrderId"))?;
            if let Some(r) = &mut o.renewal {
                r.phase = next;
                r.validated = validated;
            }
        }
        let o = &self.orders[&order_id];
        let mut out = json!({ "Type": next.as_str() });
        match next {
            Phase::DomainVerify => match self.validation {
                ValidationKind::Dns => {
                    out["ValidateType"] = json!("DNS");
                    out["RecordDomain"] = json!(validation_sim::record_domain(
                        self.record_domain,
                        &o.domain,
                        &self.zones
                    ));
                    out["RecordType"] = json!("TXT");
                    out["RecordValue"] = json!(token);
                    if let Some(h) = self.hostile_record {
                        validation_sim::make_hostile(h, &o.domain, &mut out);
                    }
                }
                _ => {
                    out["ValidateType"] = json!("FILE");
                    out["Domain"] = json!(o.domain);
                    out["Uri"] = json!(FILE_VALIDATION_URI);
                    out["Content"] = json!(token);
                }
            },
            Phase::Certificate => {
                let (cert, key) = Self::certificate_fields(o);
                out["Certificate"] = json!(cert);
                if let Some(k) = key {
                    out["PrivateKey"] = json!(k);
                }
                out["CertId"] = json!(o.certificate_id.map(|c| c.to_string()));
            }
            _ => {}
        }
        Ok(out)
    }

    fn renew(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let now = self.now_ms();
        let source = self.order_mut(p)?.clone();
        let status = source.status(now);
        if status != "WILLEXPIRED" {
            return Err(SimError::new(
                400,
                "InvalidOrderStatus",
                format!(
                    "Order {} is {status}; renewal is allowed only for an order that is about to expire (WILLEXPIRED).",
                    source.order_id
                ),
            ));
        }
        let csr = param(p, "Csr").map(str::to_owned);
        if let Some(csr) = &csr {
            let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr)
                .map_err(|e| SimError::invalid("Csr", e))?;
            let cn = parsed
                .params
                .distinguished_name
                .get(&rcgen::DnType::CommonName)
                .map(|v| match v {
                    rcgen::DnValue::Utf8String(s) => s.clone(),
                    rcgen::DnValue::PrintableString(s) => s.to_string(),
                    _ => String::new(),
                });
            if cn.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(source.domain.as_str())
            {
                return Err(SimError::invalid(
                    "Csr",
                    format!(
                        "the CN {:?} is not the order's domain {:?}",
                        cn.unwrap_or_default(),
                        source.domain
                    ),
                ));
            }
        }
        self.renew_kind_check(&source, now)?;
        let id = self.next_order_id;
        self.next_order_id += 1;
        let token = new_token();
        self.orders.insert(
            id,
            Order {
                order_id: id,
                domain: source.domain.clone(),
                sans: source.sans.clone(),
                algorithm: source.algorithm.clone(),
                issue: source.issue,
                buy_date_ms: now,
                cert_start_ms: None,
                cert_end_ms: None,
                certificate_id: None,
                source_order_id: Some(source.order_id),
                renewal: Some(Renewal {
                    csr,
                    polls: 0,
                    phase: Phase::Payed,
                    validated: false,
                    token,
                    applied: !self.plans.needs_application,
                }),
                issued: None,
                kind: source.kind.clone(),
            },
        );
        *self.renew_calls.entry(source.order_id).or_default() += 1;
        Ok(json!({ "OrderId": id }))
    }

    fn detail(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let cert_id = int_param(p, "CertId")?.ok_or_else(|| SimError::missing("CertId"))?;
        let filter = bool_param(p, "CertFilter")?;
        let order_id = *self.by_cert.get(&cert_id).ok_or_else(|| {
            SimError::new(
                400,
                "InvalidCertId.NotFound",
                format!("The certificate {cert_id} does not exist."),
            )
        })?;
        self.ensure_original_material(order_id)?;
        let now = self.now_ms();
        let o = &self.orders[&order_id];
        let start = o.cert_start_ms.unwrap_or(0);
        let end = o.cert_end_ms.unwrap_or(0);
        let mut out = json!({
            "Id": cert_id,
            "Name": format!("cert-{cert_id}"),
            "Common": o.domain,
            "Sans": o.names().join(","),
            "StartDate": ms_to_date(start),
            "EndDate": ms_to_date(end),
            "NotBefore": start,
            "NotAfter": end,
            "Expired": end <= now,
            "BuyInAliyun": true,
            "OrderId": o.order_id,
            "InstanceId": o.instance_id(),
            "CertIdentifier": format!("{cert_id}-cn-hangzhou"),
            "Issuer": "cas-renewd simulator intermediate CA",
            "Algorithm": o.algorithm,
            "SerialNo": o.issued.as_ref().map(|i| i.serial_hex.clone()),
            "CertChain": [
                { "CommonName": o.domain, "IssuerCommonName": "cas-renewd simulator intermediate CA", "NotBefore": start, "NotAfter": end, "RemainDay": (end - now).div_euclid(DAY_MS) },
            ],
        });
        if !filter {
            let (cert, key) = Self::certificate_fields(o);
            out["Cert"] = json!(cert);
            if let Some(k) = key {
                out["Key"] = json!(k);
            }
        }
        Ok(out)
    }

    fn zone_param(&self, p: &HashMap<String, String>) -> Result<String, SimError> {
        let zone = required(p, "DomainName")?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !self.zones.contains(&zone) {
            return Err(SimError::new(
                400,
                "InvalidDomainName.NoExist",
                format!("The specified domain name {zone} does not exist in this account."),
            ));
        }
        Ok(zone)
    }

    fn add_record(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        if self.dns_busy > 0 {
            self.dns_busy -= 1;
            *self
                .faults
                .entry("LastOperationNotFinished".into())
                .or_default() += 1;
            return Err(SimError::new(
                400,
                "LastOperationNotFinished",
                "Last operation is not finished,please try again later.",
            ));
        }
        let zone = self.zone_param(p)?;
        let rr = required(p, "RR")?.to_owned();
        let rtype = required(p, "Type")?.to_ascii_uppercase();
        let value = required(p, "Value")?.to_owned();
        let ttl = int_param(p, "TTL")?.unwrap_or(600);
        if self
            .records
            .iter()
            .any(|r| r.zone == zone && r.rr == rr && r.rtype == rtype && r.value == value)
        {
            return Err(SimError::new(
                400,
                "DomainRecordDuplicate",
                "The DNS record already exists.",
            ));
        }
        let record_id = self.next_record_id.to_string();
        self.next_record_id += 1;
        self.records.push(DnsRecord {
            record_id: record_id.clone(),
            zone,
            rr,
            rtype,
            value,
            ttl,
            line: param(p, "Line").unwrap_or("default").to_owned(),
        });
        Ok(json!({ "RecordId": record_id }))
    }

    fn delete_record(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let id = required(p, "RecordId")?.to_owned();
        let before = self.records.len();
        self.records.retain(|r| r.record_id != id);
        if self.records.len() == before {
            return Err(SimError::new(
                400,
                "DomainRecordNotBelongToUser",
                format!("The DNS record {id} does not exist or does not belong to you."),
            ));
        }
        Ok(json!({ "RecordId": id }))
    }

    fn page_of(
        records: Vec<&DnsRecord>,
        p: &HashMap<String, String>,
        max: i64,
    ) -> Result<Value, SimError> {
        let page = int_param(p, "PageNumber")?.unwrap_or(1);
        let size = int_param(p, "PageSize")?.unwrap_or(20);
        if page < 1 {
            return Err(SimError::invalid("PageNumber", "must be at least 1"));
        }
        if !(1..=max).contains(&size) {
            return Err(SimError::invalid(
                "PageSize",
                format!("must be between 1 and {max}"),
            ));
        }
        let total = records.len();
        let items: Vec<Value> = records
            .into_iter()
            .skip(usize::try_from((page - 1) * size).unwrap_or(usize::MAX))
            .take(usize::try_from(size).unwrap_or(0))
            .map(DnsRecord::to_json)
            .collect();
        Ok(json!({
            "TotalCount": total,
            "PageNumber": page,
            "PageSize": size,
            "DomainRecords": { "Record": items },
        }))
    }

    fn describe_records(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let zone = self.zone_param(p)?;
        let rr_kw = param(p, "RRKeyWord").map(str::to_ascii_lowercase);
        let type_kw = param(p, "TypeKeyWord")
            .or(param(p, "Type"))
            .map(str::to_ascii_uppercase);
        let value_kw = param(p, "ValueKeyWord");
        let matching: Vec<&DnsRecord> = self
            .records
            .iter()
            .filter(|r| r.zone == zone)
            .filter(|r| {
                rr_kw
                    .as_deref()
                    .is_none_or(|k| r.rr.to_ascii_lowercase().contains(k))
            })
            .filter(|r| type_kw.as_deref().is_none_or(|t| r.rtype == t))
            .filter(|r| value_kw.is_none_or(|v| r.value.contains(v)))
            .collect();
        Self::page_of(matching, p, 500)
    }

    fn describe_sub_records(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let sub = required(p, "SubDomain")?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let rtype = param(p, "Type").map(str::to_ascii_uppercase);
        // Alidns splits SubDomain at DomainName when given, else at the registrable
        // domain: a record in a delegated sub-zone is found only with DomainName.
        let zone = match param(p, "DomainName") {
            Some(_) => self.zone_param(p)?,
            None => validation_sim::registrable(&sub),
        };
        if sub != zone && !sub.ends_with(&format!(".{zone}")) {
            return Err(SimError::invalid(
                "SubDomain",
                format!("{sub} is not under {zone}"),
            ));
        }
        let matching: Vec<&DnsRecord> = self
            .records
            .iter()
            .filter(|r| r.zone == zone && r.fqdn() == sub)
            .filter(|r| rtype.as_deref().is_none_or(|t| r.rtype == t))
            .collect();
        Self::page_of(matching, p, 100)
    }

    pub fn remember_signature(&mut self, sig: &str) {
        if self.recent_signatures.len() >= 1000 {
            self.recent_signatures.pop_front();
        }
        self.recent_signatures.push_back(sig.to_owned());
    }

    /// The state `/_sim/state` reports.
    pub fn snapshot(&self) -> Value {
        let now = self.now_ms();
        let orders: Vec<Value> = self
            .orders
            .values()
            .map(|o| {
                json!({
                    "order_id": o.order_id,
                    "domain": o.domain,
                    "sans": o.sans,
                    "status": o.status(now),
                    "cert_end_ms": o.cert_end_ms,
                    "certificate_id": o.certificate_id,
                    "source_order_id": o.source_order_id,
                    "renewal_phase": o.renewal.as_ref().map(|r| r.phase.as_str()),
                    "polls": o.renewal.as_ref().map(|r| r.polls),
                    "with_csr": o.renewal.as_ref().map(|r| r.csr.is_some()),
                    "serial": o.issued.as_ref().map(|i| i.serial_hex.clone()),
                })
            })
            .collect();
        json!({
            "now": DateTime::<Utc>::from_timestamp_millis(now).map(|d| d.to_rfc3339()),
            "now_ms": now,
            "started": self.start.to_rfc3339(),
            "orders": orders,
            "calls": self.calls,
            "renew_calls": self.renew_calls.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<String, u64>>(),
            "signature_failures": self.signature_failures,
            "recent_signatures": self.recent_signatures,
            "throttled": self.throttled,
            "faults": self.faults,
            "dns_records": self.records.iter().map(DnsRecord::to_json).collect::<Vec<_>>(),
            "dns_zones": self.zones,
            "packages": self.plans.snapshot(),
        })
    }
}
