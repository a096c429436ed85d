//! A scripted certificate source and DNS for the in-process engine tests: orders
//! kept in memory, answers built as CAS documents them, a call counter per action,
//! and certificates issued by the simulator's test CA.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use cas_renewd::cas::api::{
    CertificateDetail, CertificateOrder, CertificateStateResponse, Instance, InstanceDetail,
    OrderFilter, RenewResponse, Tag,
};
use cas_renewd::cas::api_apply::{
    Acknowledged, CreateCertificateParams, CreateCertificateResponse, PackageState,
    UpdateInstanceParams,
};
use cas_renewd::cas::client::{ApiError, Response};
use cas_renewd::cas::dns::Record;
use cas_renewd::renew::ports::{ApiFuture, CertificateSource, DnsApi};
use cas_sim::ca::{Ca, Twist};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::fake_instances::FakeInstances;

pub const RENEW: &str = "RenewCertificateOrderForPackageRequest";
pub const CREATE: &str = "CreateCertificateForPackageRequest";
pub const DOMAIN: &str = "www.example.com";
pub const SOURCE: i64 = 1000;
const DAY_MS: i64 = 86_400_000;
const FREE_PRODUCT: &str = "digicert-free-1-free";

/// How the fake answers one paid call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paid {
    /// Makes the order and answers with its OrderId.
    Ok,
    /// Makes this many orders, then answers as if the connection broke after
    /// sending (the outcome is unknown to the caller).
    Unclear(usize),
}

/// How a new order proves its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    None,
    Dns,
    File,
}

/// What a new order does before it is issued.
#[derive(Debug, Clone)]
pub struct Script {
    /// `process` answers before the certificate (after any validation).
    pub polls_before_issued: u32,
    /// A renewal order stays `payed` until UpdateInstance and ApplyCertificate.
    pub needs_application: bool,
    /// How the next paid calls are answered (then `Ok`).
    pub paid: VecDeque<Paid>,
    /// The ListUserCertificateOrder `Domain` of a new order before it is issued
    /// (the documented PAYED sample has `""`).
    pub empty_domain_until_issued: bool,
    /// ListInstances also shows every renewal order's instance (the V1 order of a
    /// renewal listed by both operations).
    pub renewals_in_instances: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            polls_before_issued: 2,
            needs_application: false,
            paid: VecDeque::new(),
            empty_domain_until_issued: false,
            renewals_in_instances: false,
        }
    }
}

#[derive(Debug)]
struct Order {
    product_code: String,
    csr: Option<String>,
    /// Answers still to give before the certificate.
    polls_left: u32,
    check: Check,
    awaiting_application: bool,
    instance_id: String,
    /// Full chain and, when the fake made the key, the key.
    issued: Option<(String, Option<String>, i64)>,
}

#[derive(Debug, Default)]
struct Inner {
    orders: BTreeMap<i64, Order>,
    calls: BTreeMap<String, u32>,
    next_id: i64,
}

/// The fake CAS. Cheap to share: clone the `Arc`.
pub struct FakeCas {
    inner: Mutex<Inner>,
    script: Mutex<Script>,
    ca: Ca,
    dns: Arc<FakeDns>,
    webroot: PathBuf,
    /// The account's V2.0 instances (none unless a test adds them).
    pub instances: FakeInstances,
}

impl FakeCas {
    /// An account with one issued order for [`DOMAIN`] expiring in 20 days, whose
    /// key CAS made; `free` makes it a free certificate (renewed by reapplying).
    pub fn new(script: Script, free: bool, dns: Arc<FakeDns>, webroot: PathBuf) -> FakeCas {
        let ca = Ca::new().expect("a test CA");
        let fake = FakeCas {
            inner: Mutex::new(Inner {
                next_id: SOURCE + 1,
                ..Inner::default()
            }),
            script: Mutex::new(script),
            ca,
            instances: FakeInstances::new(dns.clone(), webroot.clone()),
            dns,
            webroot,
        };
        let product = if free {
            FREE_PRODUCT
        } else {
            "symantec-dv-1-starter"
        };
        let issued = fake.issue(None, 20);
        fake.lock().orders.insert(
            SOURCE,
            Order {
                product_code: product.into(),
                csr: None,
                polls_left: 0,
                check: Check::None,
                awaiting_application: false,
                instance_id: format!("cas-inst-{SOURCE}"),
                issued: Some(issued),
            },
        );
        fake
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An account of V2.0 instances only: the source order goes.
    pub fn drop_orders(&self) {
        self.lock().orders.clear();
    }

    /// How many times `action` was called.
    pub fn calls(&self, action: &str) -> u32 {
        self.lock().calls.get(action).copied().unwrap_or(0)
    }

    fn count(&self, action: &str) {
        *self.lock().calls.entry(action.to_owned()).or_default() += 1;
    }

    /// A chain (and the key without a CSR) valid for `days` from now.
    fn issue(&self, csr: Option<&str>, days: i64) -> (String, Option<String>, i64) {
        let now = time::OffsetDateTime::now_utc();
        let end = now + time::Duration::days(days);
        let i = self
            .ca
            .issue(
                csr,
                &[DOMAIN.to_owned()],
                "EC",
                now - time::Duration::hours(1),
                end,
                Twist::None,
            )
            .expect("the test CA issues");
        let chain = format!("{}{}", i.leaf_pem, i.chain_pem);
        let end_ms = i64::try_from(end.unix_timestamp_nanos() / 1_000_000).expect("ms fit");
        (chain, i.private_key_pem, end_ms)
    }

    fn new_order(&self, product_code: &str, csr: Option<&str>, check: Check) -> i64 {
        let script = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.orders.insert(
            id,
            Order {
                product_code: product_code.to_owned(),
                csr: csr.map(str::to_owned),
                polls_left: script.polls_before_issued,
                check,
                awaiting_application: script.needs_application,
                instance_id: format!("cas-inst-{id}"),
                issued: None,
            },
        );
        id
    }

    fn next_paid(&self) -> Paid {
        let mut s = self.script.lock().unwrap_or_else(|e| e.into_inner());
        s.paid.pop_front().unwrap_or(Paid::Ok)
    }

    fn empty_domain_until_issued(&self) -> bool {
        let s = self.script.lock().unwrap_or_else(|e| e.into_inner());
        s.empty_domain_until_issued
    }

    /// The answer to one paid call that makes orders of `product_code`.
    fn paid(
        &self,
        action: &str,
        product_code: &str,
        csr: Option<&str>,
        check: Check,
    ) -> Result<i64, ApiError> {
        self.count(action);
        match self.next_paid() {
            Paid::Ok => Ok(self.new_order(product_code, csr, check)),
            Paid::Unclear(n) => {
                for _ in 0..n {
                    self.new_order(product_code, csr, check);
                }
                Err(ApiError::Ambiguous {
                    action: action.to_owned(),
                    cause: Box::new(ApiError::Transport {
                        action: action.to_owned(),
                        detail: "connection reset after the request was sent".into(),
                        not_sent: false,
                    }),
                })
            }
        }
    }

    fn listing(&self) -> Vec<Value> {
        let empty_domain = self.empty_domain_until_issued();
        let now_ms =
            i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .expect("ms fit");
        let inner = self.lock();
        inner
            .orders
            .iter()
            .map(|(id, o)| {
                let (status, end) = match &o.issued {
                    // CAS renews only orders within 30 days of their end.
                    Some((_, _, end)) if *end - now_ms < 30 * DAY_MS => ("WILLEXPIRED", Some(*end)),
                    Some((_, _, end)) => ("ISSUED", Some(*end)),
                    None if o.awaiting_application => ("PAYED", None),
                    None => ("CHECKING", None),
                };
                let domain = if o.issued.is_none() && empty_domain {
                    ""
                } else {
                    DOMAIN
                };
                json!({
                    "OrderId": id,
                    "InstanceId": o.instance_id,
                    "Status": status,
                    "ProductCode": o.product_code,
                    "Domain": domain,
                    "DomainType": "ONE",
                    "CertType": if o.product_code == FREE_PRODUCT { "FREE" } else { "DV" },
                    "SourceType": "buy",
                    "CertEndTime": end,
                })
            })
            .collect()
    }

    /// What validation the order waits for, or `None` once it is visible.
    fn unproven(&self, id: i64, check: Check) -> Option<Value> {
        let token = format!("token-{id}");
        match check {
            Check::None => None,
            Check::Dns => (!self.dns.has("_dnsauth.www.example.com", &token)).then(|| {
                json!({ "Type": "domain_verify", "ValidateType": "DNS", "RecordDomain": "_dnsauth", "RecordType": "TXT", "RecordValue": token })
            }),
            Check::File => {
                let path = self.webroot.join(".well-known/pki-validation/fileauth.txt");
                let there = std::fs::read_to_string(path).is_ok_and(|c| c == token);
                (!there).then(|| {
                    json!({ "Type": "domain_verify", "ValidateType": "FILE", "Domain": DOMAIN, "Uri": "/.well-known/pki-validation/fileauth.txt", "Content": token })
                })
            }
        }
    }

    fn state_of(&self, id: i64) -> Result<Value, ApiError> {
        let (check, awaiting, issued, csr) = {
            let inner = self.lock();
            let o = inner.orders.get(&id).ok_or_else(|| not_found(id))?;
            (
                o.check,
                o.awaiting_application,
                o.issued.clone(),
                o.csr.clone(),
            )
        };
        if let Some((chain, key, _)) = issued {
            return Ok(json!({ "Type": "certificate", "Certificate": chain, "PrivateKey": key }));
        }
        if awaiting {
            return Ok(json!({ "Type": "payed" }));
        }
        if let Some(v) = self.unproven(id, check) {
            return Ok(v);
        }
        let mut inner = self.lock();
        let o = inner.orders.get_mut(&id).ok_or_else(|| not_found(id))?;
        if o.polls_left > 0 {
            o.polls_left -= 1;
            return Ok(json!({ "Type": "process" }));
        }
        drop(inner);
        let issued = self.issue(csr.as_deref(), 365);
        let answer =
            json!({ "Type": "certificate", "Certificate": issued.0, "PrivateKey": issued.1 });
        if let Some(o) = self.lock().orders.get_mut(&id) {
            o.issued = Some(issued);
        }
        Ok(answer)
    }

    fn product_of(&self, id: i64) -> Result<String, ApiError> {
        let inner = self.lock();
        Ok(inner
            .orders
            .get(&id)
            .ok_or_else(|| not_found(id))?
            .product_code
            .clone())
    }
}

pub fn not_found(id: i64) -> ApiError {
    ApiError::Service(Box::new(cas_renewd::cas::client::ServiceError {
        action: "fake".into(),
        status: 404,
        code: "OrderNotFound".into(),
        message: format!("no order {id}"),
        request_id: "fake".into(),
        host_id: None,
        retry_after: None,
    }))
}

fn parse<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("the fake's answer parses")
}

fn ok<T>(body: T) -> Response<T> {
    Response {
        body,
        request_id: "fake-request".into(),
        attempts: 1,
    }
}

impl CertificateSource for FakeCas {
    fn list_all_orders(
        &self,
        _filter: OrderFilter,
        _page_size: u32,
    ) -> ApiFuture<'_, Vec<CertificateOrder>> {
        self.count("ListUserCertificateOrder");
        let orders = self.listing().into_iter().map(parse).collect();
        Box::pin(async move { Ok(orders) })
    }

    fn describe_certificate_state(
        &self,
        order_id: i64,
    ) -> ApiFuture<'_, Response<CertificateStateResponse>> {
        self.count("DescribeCertificateState");
        let r = self.state_of(order_id).map(|v| ok(parse(v)));
        Box::pin(async move { r })
    }

    fn renew_certificate_order<'a>(
        &'a self,
        order_id: i64,
        csr: Option<&'a str>,
        _tags: &'a [Tag],
    ) -> ApiFuture<'a, Response<RenewResponse>> {
        let r = self.product_of(order_id).and_then(|pc| {
            self.paid(RENEW, &pc, csr, Check::None)
                .map(|id| ok(parse(json!({ "OrderId": id }))))
        });
        Box::pin(async move { r })
    }

    fn create_certificate_for_package<'a>(
        &'a self,
        params: &'a CreateCertificateParams,
    ) -> ApiFuture<'a, Response<CreateCertificateResponse>> {
        let check = match params.validate_type.as_deref() {
            Some("DNS") => Check::Dns,
            Some("FILE") => Check::File,
            _ => Check::None,
        };
        let r = self
            .paid(CREATE, &params.product_code, params.csr.as_deref(), check)
            .map(|id| ok(parse(json!({ "OrderId": id }))));
        Box::pin(async move { r })
    }

    fn describe_package_state<'a>(
        &'a self,
        product_code: &'a str,
    ) -> ApiFuture<'a, Response<PackageState>> {
        self.count("DescribePackageState");
        let body = parse(json!({ "ProductCode": product_code, "TotalCount": 20, "UsedCount": 1 }));
        Box::pin(async move { Ok(ok(body)) })
    }

    fn update_instance<'a>(
        &'a self,
        params: &'a UpdateInstanceParams,
    ) -> ApiFuture<'a, Response<Acknowledged>> {
        self.count("UpdateInstance");
        self.instances.update(
            &params.instance_id,
            params.csr.as_deref(),
            params.validation_method.as_deref(),
        );
        let mut inner = self.lock();
        if let Some(o) = inner
            .orders
            .values_mut()
            .find(|o| o.instance_id == params.instance_id)
            && params.csr.is_some()
        {
            o.csr = params.csr.clone();
        }
        Box::pin(async move { Ok(ok(Acknowledged::default())) })
    }

    fn apply_certificate<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> ApiFuture<'a, Response<Acknowledged>> {
        self.count("ApplyCertificate");
        if let Some(r) = self.instances.apply(instance_id) {
            let r = r.map(|()| ok(Acknowledged::default()));
            return Box::pin(async move { r });
        }
        let mut inner = self.lock();
        if let Some(o) = inner
            .orders
            .values_mut()
            .find(|o| o.instance_id == instance_id)
        {
            o.awaiting_application = false;
        }
        Box::pin(async move { Ok(ok(Acknowledged::default())) })
    }

    fn list_all_instances(&self, _page_size: u32) -> ApiFuture<'_, Vec<Instance>> {
        self.count("ListInstances");
        let mut all: Vec<Value> = self.instances.listing();
        if self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .renewals_in_instances
        {
            let inner = self.lock();
            all.extend(inner.orders.iter().filter(|(id, _)| **id != SOURCE).map(
                |(_, o)| json!({ "InstanceId": o.instance_id, "Domain": "", "Status": "inactive" }),
            ));
        }
        let all = all.into_iter().map(parse).collect();
        Box::pin(async move { Ok(all) })
    }

    fn get_instance_detail<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> ApiFuture<'a, Response<InstanceDetail>> {
        self.count("GetInstanceDetail");
        let r = self.instances.detail(instance_id).map(|v| ok(parse(v)));
        Box::pin(async move { r })
    }

    fn get_user_certificate_detail(
        &self,
        cert_id: i64,
    ) -> ApiFuture<'_, Response<CertificateDetail>> {
        self.count("GetUserCertificateDetail");
        let r = self
            .instances
            .certificate(cert_id)
            .map(|v| ok(parse(v)))
            .ok_or_else(|| not_found(cert_id));
        Box::pin(async move { r })
    }
}

/// One zone, `example.com`, and its records, with a call counter per action.
#[derive(Default)]
pub struct FakeDns {
    records: Mutex<Vec<Record>>,
    calls: Mutex<BTreeMap<&'static str, u32>>,
    next_id: Mutex<u64>,
}

impl FakeDns {
    fn count(&self, action: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(action)
            .or_default() += 1;
    }

    pub fn calls(&self, action: &str) -> u32 {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(action).copied().unwrap_or(0)
    }

    fn all(&self) -> MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a TXT record at `fqdn` holds `value`.
    pub fn has(&self, fqdn: &str, value: &str) -> bool {
        self.all()
            .iter()
            .any(|r| format!("{}.example.com", r.rr) == fqdn && r.value == value)
    }

    /// How many records the zone holds.
    pub fn len(&self) -> usize {
        self.all().len()
    }
}

impl DnsApi for FakeDns {
    fn find_zone<'a>(&'a self, fqdn: &'a str) -> ApiFuture<'a, Option<String>> {
        self.count("DescribeDomains");
        let zone = fqdn
            .ends_with(".example.com")
            .then(|| "example.com".to_owned());
        Box::pin(async move { Ok(zone) })
    }

    fn records_at<'a>(
        &'a self,
        fqdn: &'a str,
        _zone: &'a str,
        record_type: Option<&'a str>,
    ) -> ApiFuture<'a, Vec<Record>> {
        self.count("DescribeDomainRecords");
        let found = self
            .all()
            .iter()
            .filter(|r| format!("{}.example.com", r.rr) == fqdn)
            .filter(|r| record_type.is_none_or(|t| r.record_type.eq_ignore_ascii_case(t)))
            .cloned()
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn add_record<'a>(
        &'a self,
        zone: &'a str,
        rr: &'a str,
        record_type: &'a str,
        value: &'a str,
    ) -> ApiFuture<'a, String> {
        self.count("AddDomainRecord");
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            format!("rec-{n}")
        };
        self.all().push(Record {
            record_id: id.clone(),
            domain_name: Some(zone.to_owned()),
            rr: rr.to_owned(),
            record_type: record_type.to_owned(),
            value: value.to_owned(),
        });
        Box::pin(async move { Ok(id) })
    }

    fn delete_record<'a>(&'a self, record_id: &'a str) -> ApiFuture<'a, ()> {
        self.count("DeleteDomainRecord");
        self.all().retain(|r| r.record_id != record_id);
        Box::pin(async move { Ok(()) })
    }
}
