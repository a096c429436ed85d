//! SSL Certificate Management V2.0 instances on the simulated clock: their service
//! period, latest certificate and status, ListInstances, GetInstanceDetail and an
//! instance certificate's GetUserCertificateDetail. Applications (UpdateInstance,
//! ApplyCertificate, GetTaskAttribute) and issuance are in `instance_apply`.
//!
//! Times are UNIX seconds in answers (as the SDK documents), milliseconds inside.
//! Error codes the docs do not give are marked ASSUMED; the engine never branches
//! on them.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::{DAY_MS, SimError, World, int_param, ms_to_date, param, required};
use crate::ca::Issued;
use crate::scenario::{InstanceSpec, IssueOutcome, PinnedStatus, Scenario};
use crate::v2::V2Behaviour;

/// OrderIds of instances in the V1 listing: apart from the simulator's orders.
const LISTED_ORDER_BASE: i64 = 900_000;
/// ListInstances' documented maximum ShowSize.
const MAX_SHOW_SIZE: i64 = 100;

/// One certificate issued for an instance.
#[derive(Debug, Clone)]
pub struct InstanceCert {
    pub cert_id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Made on first request for the scenario's certificate.
    pub issued: Option<Issued>,
    /// Issued by CAS's managed re-issue (AutoReissue), with CAS's key.
    pub auto: bool,
}

/// What UpdateInstance set for the next application.
#[derive(Debug, Clone, Default)]
pub struct Application {
    pub csr: Option<String>,
    /// `online` (CAS makes the key) or `upload`.
    pub method: String,
    pub validation_method: String,
    pub key_algorithm: String,
}

/// An application under review (ApplyCertificate called, not yet issued).
#[derive(Debug, Clone)]
pub struct Review {
    pub token: String,
    pub polls: u32,
    pub validated: bool,
}

/// The last ApplyCertificate task, as GetTaskAttribute reports it.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its TaskId: the InstanceId or the ApplyCertificate's RequestId (`v2.task_id`).
    pub id: String,
    pub polls: u32,
    /// The CA refused the application (scenario `issue: verify_fail`).
    pub failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub domain: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub pinned: Option<PinnedStatus>,
    pub auto_reissue: bool,
    pub issue: IssueOutcome,
    pub validity_ms: i64,
    /// Every certificate issued, the latest last.
    pub certs: Vec<InstanceCert>,
    pub app: Application,
    pub review: Option<Review>,
    pub task: Option<Task>,
    pub pending_result: Option<String>,
    /// The OrderId ListUserCertificateOrder shows it under (`v2.listed_in_orders`).
    pub listed_order_id: i64,
    /// A certificate (or the instance) this close to its end is `willExpire`.
    /// ASSUMED: the docs give the status but not the threshold; the console's 30
    /// days (`v2.will_expire_days`).
    pub will_expire_ms: i64,
}

impl Instance {
    pub fn latest(&self) -> Option<&InstanceCert> {
        self.certs.last()
    }

    pub fn status(&self, now: i64) -> &'static str {
        if let Some(p) = self.pinned {
            return p.as_str();
        }
        if now >= self.end_ms {
            "expired"
        } else if self.review.is_some() {
            "pending"
        } else if self.certs.is_empty() {
            "inactive"
        } else if self.end_ms - now <= self.will_expire_ms {
            "willExpire"
        } else {
            "normal"
        }
    }

    pub fn certificate_status(&self, now: i64) -> Option<&'static str> {
        self.latest().map(|c| {
            if c.end_ms <= now {
                "expired"
            } else if c.end_ms - now <= self.will_expire_ms {
                "willExpire"
            } else {
                "issued"
            }
        })
    }

    /// The names a certificate of this instance carries.
    pub fn names(&self) -> Vec<String> {
        vec![self.domain.clone()]
    }

    /// The CA's key type for a key CAS makes.
    pub fn ca_algorithm(&self) -> &'static str {
        if self.app.key_algorithm.starts_with("ECC") {
            "ECC"
        } else {
            "RSA"
        }
    }
}

/// The account's instances and their counters.
#[derive(Debug, Default)]
pub struct Instances {
    pub map: BTreeMap<String, Instance>,
    /// CertificateId to instance, for GetUserCertificateDetail.
    pub by_cert: HashMap<i64, String>,
    /// ApplyCertificate calls that took effect, per instance.
    pub apply_calls: BTreeMap<String, u64>,
    /// Certificates CAS re-issued by itself, per instance.
    pub auto_reissues: BTreeMap<String, u64>,
    pub cert_within_service: bool,
    pub task_processing_polls: u32,
    pub polls_before_issued: u32,
    /// V1 calls (renew, state) made on an instance's listed OrderId, per instance:
    /// the oracle that the V1 path never treats an instance as an order.
    pub v1_order_calls: BTreeMap<String, u64>,
    /// The readings of the open questions (`v2:`).
    pub forms: V2Behaviour,
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn dur_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl World {
    /// The scenario's instances, ids `cas-ivauto-N` (the documented id form).
    pub(super) fn seed_instances(&mut self, s: &Scenario, now_ms: i64) {
        self.instances.cert_within_service = s.v2.cert_within_service;
        self.instances.task_processing_polls = s.v2.task_processing_polls;
        self.instances.polls_before_issued =
            s.v2.polls_before_issued
                .unwrap_or(s.issuance.polls_before_issued);
        self.instances.forms = s.v2.clone();
        for (n, spec) in s.instances.iter().enumerate() {
            let inst = self.instance_from(spec, n + 1, now_ms);
            self.instances.map.insert(inst.id.clone(), inst);
        }
    }

    fn instance_from(&mut self, spec: &InstanceSpec, n: usize, now_ms: i64) -> Instance {
        let start_ms = now_ms - dur_ms(spec.service_used.0);
        let validity_ms = spec
            .certificate_validity
            .map_or(self.validity_ms, |v| dur_ms(v.0));
        let id = format!("cas-ivauto-{n:06}");
        let mut certs = Vec::new();
        if let Some(left) = spec.certificate_expires_in {
            let cert_id = self.next_cert_id;
            self.next_cert_id += 1;
            self.instances.by_cert.insert(cert_id, id.clone());
            let end_ms = now_ms + dur_ms(left.0);
            certs.push(InstanceCert {
                cert_id,
                start_ms: end_ms - validity_ms,
                end_ms,
                issued: None,
                auto: false,
            });
        }
        Instance {
            id,
            domain: spec.domain.to_ascii_lowercase(),
            start_ms,
            end_ms: start_ms + dur_ms(spec.service_period.0),
            pinned: spec.status,
            auto_reissue: spec.auto_reissue,
            issue: spec.issue,
            validity_ms,
            certs,
            app: Application {
                method: "online".into(),
                validation_method: "DNS".into(),
                key_algorithm: spec.key_algorithm.clone(),
                csr: None,
            },
            review: None,
            task: None,
            pending_result: None,
            listed_order_id: LISTED_ORDER_BASE + i64::try_from(n).unwrap_or(0),
            will_expire_ms: i64::from(self.instances.forms.will_expire_days) * DAY_MS,
        }
    }

    /// The instance `InstanceId` names.
    pub(super) fn instance_id_param(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<String, SimError> {
        let id = required(p, "InstanceId")?;
        if self.instances.map.contains_key(id) {
            Ok(id.to_owned())
        } else {
            // ASSUMED: the code is not documented.
            Err(SimError::new(
                400,
                "InvalidInstanceId.NotFound",
                format!("The instance {id} does not exist."),
            ))
        }
    }

    /// The fields ListInstances and GetInstanceDetail share.
    fn instance_json(&self, i: &Instance, now: i64) -> Value {
        let c = i.latest();
        json!({
            "InstanceId": i.id,
            "Domain": i.domain,
            "CertificateDomain": c.map(|_| i.domain.clone()),
            "Status": i.status(now),
            "CertificateStatus": i.certificate_status(now),
            "CertificateId": c.map(|c| c.cert_id),
            "CertIdentifier": c.map(|c| format!("{}-cn-hangzhou", c.cert_id)),
            "CertificateName": c.map(|c| format!("cert-{}", c.cert_id)),
            "CertificateNotBefore": c.map(|c| secs(c.start_ms)),
            "CertificateNotAfter": c.map(|c| secs(c.end_ms)),
            "InstanceStartTime": secs(i.start_ms),
            "InstanceEndTime": secs(i.end_ms),
            "OrderStartTime": secs(i.start_ms),
            "OrderEndTime": secs(i.end_ms),
            "AutoReissue": if i.auto_reissue { "enable" } else { "disable" },
            "KeyAlgorithm": i.app.key_algorithm,
            "Brand": "DigiCert",
            "CertificateType": "DV",
            "InstanceType": "BUY",
            "VersionType": "standard",
            "Spec": "single-domain",
            "FullDomainCount": i64::from(!i.domain.starts_with("*.")),
            "WildcardDomainCount": i64::from(i.domain.starts_with("*.")),
            "PendingResult": i.pending_result,
            "UsingProductList": [],
            "ResourceGroupId": "rg-sim",
        })
    }

    pub(super) fn list_instances(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let page = int_param(p, "CurrentPage")?.unwrap_or(1);
        let size = int_param(p, "ShowSize")?.unwrap_or(10);
        if page < 1 {
            return Err(SimError::invalid("CurrentPage", "must be at least 1"));
        }
        if !(1..=MAX_SHOW_SIZE).contains(&size) {
            return Err(SimError::invalid(
                "ShowSize",
                format!("must be between 1 and {MAX_SHOW_SIZE}"),
            ));
        }
        let flag = int_param(p, "AutoReissueFlag")?;
        let now = self.now_ms();
        self.auto_reissue_due(now)?;
        let status = param(p, "Status");
        let cert_status = param(p, "CertificateStatus");
        let keyword = param(p, "Keyword").map(str::to_ascii_lowercase);
        let matching: Vec<&Instance> = self
            .instances
            .map
            .values()
            .filter(|i| status.is_none_or(|s| s == i.status(now)))
            .filter(|i| cert_status.is_none_or(|s| Some(s) == i.certificate_status(now)))
            .filter(|i| flag.is_none_or(|f| (f == 1) == i.auto_reissue))
            .filter(|i| {
                keyword
                    .as_deref()
                    .is_none_or(|k| i.domain.contains(k) || i.id.contains(k))
            })
            .collect();
        let total = matching.len();
        let enabled = matching.iter().filter(|i| i.auto_reissue).count();
        let from = usize::try_from((page - 1) * size).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .iter()
            .skip(from)
            .take(usize::try_from(size).unwrap_or(0))
            .map(|i| self.instance_json(i, now))
            .collect();
        Ok(json!({
            "TotalCount": total,
            "ShowSize": size,
            "CurrentPage": page,
            "EnableReissueCount": enabled,
            "DisableReissueCount": total - enabled,
            "InstanceList": items,
        }))
    }

    pub(super) fn instance_detail(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let id = self.instance_id_param(p)?;
        let now = self.now_ms();
        self.auto_reissue_due(now)?;
        self.advance_review(&id, now)?;
        let i = &self.instances.map[&id];
        let mut out = self.instance_json(i, now);
        out["GenerateCsrMethod"] = json!(i.app.method);
        out["ValidationMethod"] = json!(i.app.validation_method);
        out["Csr"] = json!(i.app.csr);
        out["AutoReissueFlag"] = json!(1);
        out["AverageWaitingTime"] = json!("3600");
        out["CountryCode"] = json!("CN");
        out["Province"] = json!("Beijing");
        out["City"] = json!("Beijing");
        out["ContactIdList"] = json!([1]);
        out["DingGroupList"] = json!([]);
        out["Tags"] = json!([]);
        out["UpgradeStatus"] = json!("none");
        out["DomainValidationList"] = json!(self.validation_list(i));
        Ok(out)
    }

    /// GetUserCertificateDetail of an instance's certificate, if `cert_id` is one.
    pub(super) fn instance_cert_detail(
        &mut self,
        cert_id: i64,
        filter: bool,
    ) -> Option<Result<Value, SimError>> {
        let id = self.instances.by_cert.get(&cert_id)?.clone();
        if let Err(e) = self.ensure_instance_material(&id, cert_id) {
            return Some(Err(e));
        }
        let now = self.now_ms();
        let i = &self.instances.map[&id];
        let c = i.certs.iter().find(|c| c.cert_id == cert_id)?;
        let mut out = json!({
            "Id": cert_id,
            "Name": format!("cert-{cert_id}"),
            "Common": i.domain,
            "Sans": i.names().join(","),
            "StartDate": ms_to_date(c.start_ms),
            "EndDate": ms_to_date(c.end_ms),
            "NotBefore": c.start_ms,
            "NotAfter": c.end_ms,
            "Expired": c.end_ms <= now,
            "BuyInAliyun": true,
            "InstanceId": i.id,
            "CertIdentifier": format!("{cert_id}-cn-hangzhou"),
            "Issuer": "cas-renewd simulator intermediate CA",
            "Algorithm": i.ca_algorithm(),
            "SerialNo": c.issued.as_ref().map(|x| x.serial_hex.clone()),
            "CertChain": [
                { "CommonName": i.domain, "IssuerCommonName": "cas-renewd simulator intermediate CA", "NotBefore": c.start_ms, "NotAfter": c.end_ms, "RemainDay": (c.end_ms - now).div_euclid(DAY_MS) },
            ],
        });
        if !filter && let Some(x) = &c.issued {
            out["Cert"] = json!(format!("{}{}", x.leaf_pem, x.chain_pem));
            if let Some(k) = &x.private_key_pem {
                out["Key"] = json!(k);
            }
        }
        Some(Ok(out))
    }

    /// The `/_sim/state` view of the instances.
    pub(super) fn instances_snapshot(&self, now: i64) -> Value {
        let list: Vec<Value> = self
            .instances
            .map
            .values()
            .map(|i| {
                let c = i.latest();
                json!({
                    "instance_id": i.id,
                    "domain": i.domain,
                    "status": i.status(now),
                    "certificate_status": i.certificate_status(now),
                    "certificate_id": c.map(|c| c.cert_id),
                    "cert_end_ms": c.map(|c| c.end_ms),
                    "service_end_ms": i.end_ms,
                    "certificates": i.certs.len(),
                    "latest_by_auto_reissue": c.map(|c| c.auto),
                    "auto_reissue": i.auto_reissue,
                    "under_review": i.review.is_some(),
                    "with_csr": i.app.csr.is_some(),
                    "serial": c.and_then(|c| c.issued.as_ref()).map(|x| x.serial_hex.clone()),
                })
            })
            .collect();
        json!({
            "instances": list,
            "apply_certificate_calls": self.instances.apply_calls,
            "v1_order_calls": self.instances.v1_order_calls,
            "auto_reissues": self.instances.auto_reissues,
        })
    }
}
