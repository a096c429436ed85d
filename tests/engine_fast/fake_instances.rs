//! The V2.0 instances of the fake CAS: ListInstances, GetInstanceDetail,
//! UpdateInstance, ApplyCertificate and GetUserCertificateDetail as the SDK
//! models them (times in seconds), an application under review that waits for
//! its validation and a few polls, CAS's own re-issue (AutoReissue), and faults
//! on ApplyCertificate whose outcome the caller cannot know.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use cas_renewd::cas::client::ApiError;
use cas_renewd::store::faults::{CrashPoint, SimulatedCrash};
use cas_sim::ca::{Ca, Twist};
use serde_json::{Value, json};

use super::fake::FakeDns;

pub const INSTANCE: &str = "cas-ivauto-www1";
const DAY_MS: i64 = 86_400_000;
/// CAS marks a certificate `willExpire` within this of its end (as the simulator).
const WILL_EXPIRE_MS: i64 = 30 * DAY_MS;

/// How the fake answers one ApplyCertificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Ok,
    /// The application is taken, but the answer is lost (a timeout after sending).
    UnclearTaken,
    /// The call never reached CAS, and the caller cannot tell (a 5xx).
    UnclearLost,
    /// Refused without taking it (an error code).
    Refused,
    /// Lost like `UnclearLost`, then the process is killed before it reads the
    /// answer (a SIGKILL between the call and the journal's commit).
    LostThenKilled,
}

/// One certificate of an instance.
#[derive(Debug, Clone)]
struct Cert {
    id: i64,
    chain: String,
    /// CAS's key, when CAS made it (its managed re-issue, the instance's first).
    key: Option<String>,
    end_ms: i64,
}

#[derive(Debug, Clone)]
struct Review {
    token: String,
    polls_left: u32,
    /// GetInstanceDetail reads that still show the instance as before the
    /// application (CAS taking it up asynchronously).
    hidden_reads: u32,
}

#[derive(Debug)]
struct Instance {
    domain: String,
    service_end_ms: i64,
    auto_reissue: bool,
    certs: Vec<Cert>,
    csr: Option<String>,
    validation_method: Option<String>,
    review: Option<Review>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Instance>,
    apply: VecDeque<Apply>,
    next_cert_id: i64,
    polls_before_issued: u32,
    /// `hidden_reads` of the review an accepted ApplyCertificate starts.
    pending_after_polls: u32,
    /// ListInstances gives no CertificateId (GetInstanceDetail still does).
    listing_without_certificate_id: bool,
}

/// The instances of the fake account.
pub struct FakeInstances {
    inner: Mutex<Inner>,
    ca: Ca,
    dns: Arc<FakeDns>,
    webroot: PathBuf,
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .expect("ms fit")
}

impl FakeInstances {
    pub fn new(dns: Arc<FakeDns>, webroot: PathBuf) -> FakeInstances {
        FakeInstances {
            inner: Mutex::new(Inner {
                next_cert_id: 5000,
                polls_before_issued: 2,
                ..Inner::default()
            }),
            ca: Ca::new().expect("a test CA"),
            dns,
            webroot,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A chain for `csr` (or with a key the fake makes) valid for `days`, capped
    /// at the service end as CAS does.
    fn issue(&self, csr: Option<&str>, domain: &str, days: i64, service_end_ms: i64) -> Cert {
        let now = time::OffsetDateTime::now_utc();
        let end_ms = (now_ms() + days * DAY_MS).min(service_end_ms);
        let end = time::OffsetDateTime::from_unix_timestamp(end_ms / 1000).expect("a time");
        let i = self
            .ca
            .issue(
                csr,
                &[domain.to_owned()],
                "EC",
                now - time::Duration::hours(1),
                end,
                Twist::None,
            )
            .expect("the test CA issues");
        let mut inner = self.lock();
        let id = inner.next_cert_id;
        inner.next_cert_id += 1;
        Cert {
            id,
            chain: format!("{}{}", i.leaf_pem, i.chain_pem),
            key: i.private_key_pem,
            end_ms,
        }
    }

    /// Adds instance `id` for `domain`: its service period ends in `service_days`,
    /// its current certificate (CAS's key) in `cert_days` (none when `None`).
    pub fn add(
        &self,
        id: &str,
        domain: &str,
        service_days: i64,
        cert_days: Option<i64>,
        auto_reissue: bool,
    ) {
        let service_end_ms = now_ms() + service_days * DAY_MS;
        let certs = cert_days
            .map(|d| vec![self.issue(None, domain, d, service_end_ms)])
            .unwrap_or_default();
        self.lock().map.insert(
            id.to_owned(),
            Instance {
                domain: domain.to_owned(),
                service_end_ms,
                auto_reissue,
                certs,
                csr: None,
                validation_method: None,
                review: None,
            },
        );
    }

    /// CAS's managed re-issue of `id`: a new certificate with CAS's key.
    pub fn cas_reissue(&self, id: &str, days: i64) {
        let (domain, end) = {
            let inner = self.lock();
            let i = &inner.map[id];
            (i.domain.clone(), i.service_end_ms)
        };
        let c = self.issue(None, &domain, days, end);
        if let Some(i) = self.lock().map.get_mut(id) {
            i.certs.push(c);
        }
    }

    /// Puts an application under review on `id`, as the console would.
    pub fn start_review(&self, id: &str, polls: u32) {
        if let Some(i) = self.lock().map.get_mut(id) {
            i.review = Some(Review {
                token: format!("itoken-{id}"),
                polls_left: polls,
                hidden_reads: 0,
            });
        }
    }

    /// After an accepted ApplyCertificate the instance shows as before it for
    /// `reads` GetInstanceDetail reads (CAS takes the application up later).
    pub fn lag_reviews(&self, reads: u32) {
        self.lock().pending_after_polls = reads;
    }

    /// How the next ApplyCertificate calls are answered (then `Ok`).
    pub fn script_apply(&self, answers: &[Apply]) {
        self.lock().apply.extend(answers.iter().copied());
    }

    /// How many certificates `id` has had.
    pub fn certificates(&self, id: &str) -> usize {
        self.lock().map.get(id).map_or(0, |i| i.certs.len())
    }

    fn status(i: &Instance, now: i64) -> &'static str {
        if now >= i.service_end_ms {
            "expired"
        } else if i.review.is_some() {
            "pending"
        } else if i.certs.is_empty() {
            "inactive"
        } else if i.service_end_ms - now <= WILL_EXPIRE_MS {
            "willExpire"
        } else {
            "normal"
        }
    }

    fn entry(id: &str, i: &Instance) -> Value {
        let now = now_ms();
        let last = i.certs.last();
        json!({
            "InstanceId": id,
            "Domain": i.domain,
            "Status": Self::status(i, now),
            "AutoReissue": if i.auto_reissue { "enable" } else { "disable" },
            "InstanceStartTime": (now - DAY_MS) / 1000,
            "InstanceEndTime": (i.service_end_ms / 1000).to_string(),
            "CertificateId": last.map(|c| c.id),
            "CertificateNotAfter": last.map(|c| c.end_ms / 1000),
            "CertificateStatus": last.map(|c| if c.end_ms <= now { "expired" } else if c.end_ms - now <= WILL_EXPIRE_MS { "willExpire" } else { "issued" }),
        })
    }

    pub fn listing(&self) -> Vec<Value> {
        let inner = self.lock();
        let mut all: Vec<Value> = inner.map.iter().map(|(id, i)| Self::entry(id, i)).collect();
        if inner.listing_without_certificate_id {
            for v in &mut all {
                v["CertificateId"] = Value::Null;
            }
        }
        all
    }

    /// ListInstances leaves CertificateId out from now on.
    pub fn list_without_certificate_id(&self) {
        self.lock().listing_without_certificate_id = true;
    }

    /// Whether the review's validation is visible (DNS record or file).
    fn validated(&self, method: Option<&str>, token: &str) -> bool {
        match method {
            Some("HTTP") => std::fs::read_to_string(
                self.webroot.join(".well-known/pki-validation/fileauth.txt"),
            )
            .is_ok_and(|c| c == token),
            Some(_) => self.dns.has("_dnsauth.www.example.com", token),
            None => true,
        }
    }

    /// GetInstanceDetail: a poll moves an application under review on (after its
    /// validation shows, `polls_before_issued` polls, then the certificate).
    pub fn detail(&self, id: &str) -> Result<Value, ApiError> {
        {
            let mut inner = self.lock();
            let i = inner
                .map
                .get_mut(id)
                .ok_or_else(|| super::fake::not_found(0))?;
            if let Some(r) = i.review.as_mut().filter(|r| r.hidden_reads > 0) {
                r.hidden_reads -= 1;
                let review = i.review.take();
                let mut v = Self::entry(id, i);
                i.review = review;
                v["RequestId"] = json!("fake-detail");
                v["DomainValidationList"] = json!([]);
                return Ok(v);
            }
        }
        let (review, method, csr, domain, end) = {
            let inner = self.lock();
            let i = inner.map.get(id).ok_or_else(|| super::fake::not_found(0))?;
            (
                i.review.clone(),
                i.validation_method.clone(),
                i.csr.clone(),
                i.domain.clone(),
                i.service_end_ms,
            )
        };
        let mut validation = Vec::new();
        if let Some(r) = review {
            if !self.validated(method.as_deref(), &r.token) {
                validation.push(match method.as_deref() {
                    Some("HTTP") => json!({ "Domain": domain, "ValidationType": "HTTP", "ValidationKey": "/.well-known/pki-validation/fileauth.txt", "ValidationValue": r.token }),
                    _ => json!({ "Domain": domain, "RootDomain": "example.com", "ValidationType": "TXT", "ValidationKey": "_dnsauth.www", "ValidationValue": r.token }),
                });
            } else if r.polls_left > 0 {
                if let Some(rv) = self.lock().map.get_mut(id).and_then(|i| i.review.as_mut()) {
                    rv.polls_left -= 1;
                }
            } else {
                let c = self.issue(csr.as_deref(), &domain, 90, end);
                if let Some(i) = self.lock().map.get_mut(id) {
                    i.certs.push(c);
                    i.review = None;
                }
            }
        }
        let inner = self.lock();
        let mut v = Self::entry(id, &inner.map[id]);
        v["RequestId"] = json!("fake-detail");
        v["DomainValidationList"] = json!(validation);
        Ok(v)
    }

    pub fn update(&self, id: &str, csr: Option<&str>, method: Option<&str>) {
        if let Some(i) = self.lock().map.get_mut(id) {
            i.csr = csr.map(str::to_owned);
            i.validation_method = method.map(str::to_owned);
        }
    }

    /// ApplyCertificate: `None` when `id` is not an instance of this account.
    pub fn apply(&self, id: &str) -> Option<Result<(), ApiError>> {
        let mut inner = self.lock();
        let answer = inner.apply.pop_front().unwrap_or(Apply::Ok);
        let polls = inner.polls_before_issued;
        let lag = inner.pending_after_polls;
        let i = inner.map.get_mut(id)?;
        if i.review.is_some() {
            return Some(Err(ApiError::Service(Box::new(
                cas_renewd::cas::client::ServiceError {
                    action: "ApplyCertificate".into(),
                    status: 400,
                    code: "InvalidStatus".into(),
                    message: format!("The instance {id} has an application under review."),
                    request_id: "fake".into(),
                    host_id: None,
                    retry_after: None,
                },
            ))));
        }
        if answer == Apply::Refused {
            return Some(Err(ApiError::Service(Box::new(
                cas_renewd::cas::client::ServiceError {
                    action: "ApplyCertificate".into(),
                    status: 400,
                    code: "Refused".into(),
                    message: "refused (fake)".into(),
                    request_id: "fake".into(),
                    host_id: None,
                    retry_after: None,
                },
            ))));
        }
        if !matches!(answer, Apply::UnclearLost | Apply::LostThenKilled) {
            i.review = Some(Review {
                token: format!("itoken-{id}-{}", i.certs.len()),
                polls_left: polls,
                hidden_reads: lag,
            });
        }
        drop(inner);
        if answer == Apply::LostThenKilled {
            std::panic::panic_any(SimulatedCrash(CrashPoint::AfterApplicationRequested));
        }
        Some(match answer {
            Apply::Ok => Ok(()),
            Apply::Refused | Apply::LostThenKilled => unreachable!("answered above"),
            Apply::UnclearTaken | Apply::UnclearLost => Err(ApiError::Ambiguous {
                action: "ApplyCertificate".into(),
                cause: Box::new(ApiError::Transport {
                    action: "ApplyCertificate".into(),
                    detail: "timed out after the request was sent".into(),
                    not_sent: false,
                }),
            }),
        })
    }

    /// GetUserCertificateDetail of an instance's certificate.
    pub fn certificate(&self, cert_id: i64) -> Option<Value> {
        let inner = self.lock();
        inner
            .map
            .values()
            .flat_map(|i| i.certs.iter())
            .find(|c| c.id == cert_id)
            .map(|c| json!({ "Id": c.id, "Cert": c.chain, "Key": c.key }))
    }
}
