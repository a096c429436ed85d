//! The simulated account's certificate kinds and resource plans: which orders CAS
//! refuses to renew, CreateCertificateForPackageRequest, DescribePackageState, and
//! the V2.0 application calls (UpdateInstance, ApplyCertificate) on a renewal order
//! left pending application.
//!
//! Error codes here are ASSUMPTIONS (Alibaba documents none for these cases); the
//! engine never branches on them.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::{DAY_MS, Order, Phase, Renewal, SimError, World, param, required};
use crate::scenario::{IssueOutcome, OrderSpec, Scenario};

/// The documented free quota: 20 free certificates per account per (natural) year;
/// simulated as a rolling 365 days.
pub const FREE_PER_YEAR: u32 = 20;
/// Units of a paid product the scenario does not list: more than any test spends.
const DEFAULT_UNITS: u32 = 1_000_000;
/// Free products issue 3-month certificates (digicert-free-1-free, per the SDK docs).
const FREE_VALIDITY_MS: i64 = 90 * DAY_MS;

/// ListUserCertificateOrder's kind fields of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub product_code: String,
    pub cert_type: String,
    pub domain_type: String,
    pub source_type: String,
}

fn is_free(product_code: &str) -> bool {
    product_code.split('-').any(|p| p == "free")
}

impl Kind {
    /// A paid DV product unless the scenario says otherwise; CertType follows the
    /// product (FREE for a free one).
    pub fn of(domain: &str, spec: Option<&OrderSpec>) -> Kind {
        let wildcard = domain.starts_with("*.");
        let uploaded = spec
            .and_then(|s| s.source_type.as_deref())
            .is_some_and(|t| t.eq_ignore_ascii_case("upload"));
        let product_code = spec
            .and_then(|s| s.product_code.clone())
            .unwrap_or_else(|| {
                if uploaded {
                    // ASSUMPTION: an uploaded certificate belongs to no product.
                    String::new()
                } else if spec.and_then(|s| s.cert_type.as_deref()) == Some("FREE") {
                    "digicert-free-1-free".into()
                } else if wildcard {
                    "geotrust-dv-w-starter".into()
                } else {
                    "geotrust-dv-1-starter".into()
                }
            });
        let cert_type = spec.and_then(|s| s.cert_type.clone()).unwrap_or_else(|| {
            if is_free(&product_code) {
                "FREE".into()
            } else {
                "DV".into()
            }
        });
        Kind {
            cert_type,
            domain_type: spec
                .and_then(|s| s.domain_type.clone())
                .unwrap_or_else(|| if wildcard { "WILDCARD" } else { "ONE" }.into()),
            source_type: spec
                .and_then(|s| s.source_type.clone())
                .unwrap_or_else(|| "cpack".into()),
            product_code,
        }
    }

    pub fn is_free(&self) -> bool {
        self.cert_type == "FREE" || is_free(&self.product_code)
    }

    pub fn uploaded(&self) -> bool {
        self.source_type.eq_ignore_ascii_case("upload")
    }

    /// Why CAS would not renew an order of this kind (the documented cases).
    fn refusal(&self) -> Option<&'static str> {
        if self.is_free() {
            Some("free (personal test) certificates cannot be renewed; apply for a new certificate")
        } else if matches!(self.domain_type.as_str(), "MIX" | "MULTIPLE" | "M_WILDCARD") {
            Some(
                "mixed-domain and multi-domain certificates cannot be renewed; apply for a new certificate",
            )
        } else if self.uploaded() {
            Some("uploaded certificates cannot be renewed; apply for a new certificate")
        } else {
            None
        }
    }

    /// How long a certificate of this kind is valid.
    pub fn validity_ms(&self, default_ms: i64) -> i64 {
        if self.is_free() {
            FREE_VALIDITY_MS.min(default_ms)
        } else {
            default_ms
        }
    }
}

/// Resource plans, the free quota, scripted unclear answers and the counters
/// `/_sim/state` reports.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    refuse_first: BTreeMap<String, u32>,
    act_then_fail_first: BTreeMap<String, u32>,
    units: BTreeMap<String, u32>,
    used: BTreeMap<String, u32>,
    /// When each free certificate was applied for (simulated ms).
    free_used_at: Vec<i64>,
    pub needs_application: bool,
    new_orders_domain_empty: bool,
    instance_ids: bool,
    /// Successful CreateCertificateForPackageRequest calls by domain.
    pub create_calls: BTreeMap<String, u64>,
    /// Successful ApplyCertificate calls by OrderId.
    pub applications: BTreeMap<i64, u64>,
    /// Renew calls refused because of the order's kind, by OrderId.
    pub refused_renewals: BTreeMap<i64, u64>,
}

impl Plans {
    pub fn new(s: &Scenario) -> Plans {
        Plans {
            units: s.packages.clone(),
            refuse_first: s.faults.refuse_first.clone(),
            act_then_fail_first: s.faults.act_then_fail_first.clone(),
            needs_application: s.issuance.renewal_needs_application,
            new_orders_domain_empty: s.issuance.new_orders_domain_empty,
            instance_ids: s.issuance.instance_ids,
            ..Plans::default()
        }
    }

    fn counts(&self, product_code: &str, now_ms: i64) -> (u32, u32) {
        if is_free(product_code) {
            let used = self
                .free_used_at
                .iter()
                .filter(|t| now_ms - **t < 365 * DAY_MS)
                .count();
            (FREE_PER_YEAR, u32::try_from(used).unwrap_or(u32::MAX))
        } else {
            (
                self.units
                    .get(product_code)
                    .copied()
                    .unwrap_or(DEFAULT_UNITS),
                self.used.get(product_code).copied().unwrap_or(0),
            )
        }
    }

    /// Takes one unit (or one free certificate), or refuses.
    fn spend(&mut self, product_code: &str, now_ms: i64) -> Result<(), SimError> {
        let (total, used) = self.counts(product_code, now_ms);
        if used >= total {
            // ASSUMPTION: the code is not documented.
            return Err(SimError::new(
                400,
                "QuotaExceeded",
                format!("No {product_code} certificate is left: {used} of {total} used."),
            ));
        }
        if is_free(product_code) {
            self.free_used_at.push(now_ms);
        } else {
            *self.used.entry(product_code.to_owned()).or_default() += 1;
        }
        Ok(())
    }

    /// `POST /_sim/packages`: the plan of a paid product now holds `units` in all
    /// (an operator bought more, or the test takes them away).
    pub fn set_units(&mut self, product_code: &str, units: u32) {
        self.units.insert(product_code.to_owned(), units);
    }

    fn take(counters: &mut BTreeMap<String, u32>, action: &str) -> bool {
        match counters.get_mut(action) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// `faults.refuse_first`: answer 503 before acting.
    pub fn refuse_now(&mut self, action: &str) -> Option<SimError> {
        Self::take(&mut self.refuse_first, action).then(|| {
            SimError::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        })
    }

    /// `faults.act_then_fail_first`: answer 500 after acting.
    pub fn fail_after_acting(&mut self, action: &str) -> Option<SimError> {
        Self::take(&mut self.act_then_fail_first, action).then(|| {
            SimError::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            )
        })
    }

    /// The InstanceId ListUserCertificateOrder shows for `o`, if any.
    pub fn listed_instance(&self, o: &Order) -> Option<String> {
        self.instance_ids.then(|| o.instance_id())
    }

    /// The Domain ListUserCertificateOrder shows for `o`.
    pub fn listed_domain<'a>(&self, o: &'a Order) -> &'a str {
        let unissued = o
            .renewal
            .as_ref()
            .is_some_and(|r| r.phase != Phase::Certificate);
        if self.new_orders_domain_empty && unissued {
            ""
        } else {
            &o.domain
        }
    }

    pub fn snapshot(&self) -> Value {
        json!({
            "create_calls": self.create_calls,
            "applications": self.applications.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<String, u64>>(),
            "refused_renewals": self.refused_renewals.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<String, u64>>(),
            "package_used": self.used,
            "free_used": self.free_used_at.len(),
        })
    }
}

/// The CN of a CSR, lower-case.
pub fn csr_common_name(csr: &str) -> Result<String, SimError> {
    Ok(csr_cn(csr)?.unwrap_or_default().to_ascii_lowercase())
}

/// The CN of a CSR as written, if it has one.
pub(super) fn csr_cn(csr: &str) -> Result<Option<String>, SimError> {
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr)
        .map_err(|e| SimError::invalid("Csr", e))?;
    Ok(parsed
        .params
        .distinguished_name
        .get(&rcgen::DnType::CommonName)
        .map(|v| match v {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.to_string(),
            _ => String::new(),
        }))
}

/// CreateCertificateForPackageRequest's parameters, checked.
struct CreateRequest {
    product_code: String,
    csr: Option<String>,
    names: Vec<String>,
    domain: String,
}

fn create_request(p: &HashMap<String, String>) -> Result<CreateRequest, SimError> {
    // The SDK documents digicert-free-1-free as the default ProductCode.
    let product_code = param(p, "ProductCode")
        .unwrap_or("digicert-free-1-free")
        .to_owned();
    let csr = param(p, "Csr").map(str::to_owned);
    let names: Vec<String> = param(p, "Domain")
        .map(|d| {
            d.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if names.len() > 5 {
        return Err(SimError::invalid("Domain", "at most five domain names"));
    }
    // With a Csr, its CN is the certificate's domain (SDK docs).
    let domain = match &csr {
        Some(c) => csr_common_name(c)?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| SimError::missing("Domain"))?,
    };
    if domain.is_empty() {
        return Err(SimError::invalid("Csr", "the CSR has no CN"));
    }
    if let Some(v) = param(p, "ValidateType")
        && !matches!(v, "DNS" | "FILE")
    {
        return Err(SimError::invalid("ValidateType", "DNS or FILE"));
    }
    Ok(CreateRequest {
        product_code,
        csr,
        names,
        domain,
    })
}

impl World {
    /// The renew call's checks that depend on the kind and the plan: a kind CAS
    /// does not renew is refused; otherwise one unit of the product is spent.
    pub(super) fn renew_kind_check(&mut self, source: &Order, now_ms: i64) -> Result<(), SimError> {
        if let Some(why) = source.kind.refusal() {
            *self
                .plans
                .refused_renewals
                .entry(source.order_id)
                .or_default() += 1;
            // ASSUMPTION: the code is not documented.
            return Err(SimError::new(
                400,
                "OperationDenied.NotRenewable",
                format!("Order {}: {why}.", source.order_id),
            ));
        }
        self.plans.spend(&source.kind.product_code, now_ms)
    }

    pub(super) fn create_certificate(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let now = self.now_ms();
        let CreateRequest {
            product_code,
            csr,
            names,
            domain,
        } = create_request(p)?;
        self.plans.spend(&product_code, now)?;
        let kind = Kind::of(
            &domain,
            Some(&OrderSpec {
                domain: domain.clone(),
                expires_in: crate::scenario::HumanDuration(std::time::Duration::ZERO),
                sans: vec![],
                algorithm: "RSA".into(),
                issue: IssueOutcome::Ok,
                product_code: Some(product_code),
                cert_type: None,
                domain_type: (names.len() > 1).then(|| "MULTIPLE".into()),
                source_type: None,
            }),
        );
        let id = self.next_order_id;
        self.next_order_id += 1;
        self.orders.insert(
            id,
            Order {
                order_id: id,
                sans: names.into_iter().filter(|n| *n != domain).collect(),
                domain: domain.clone(),
                algorithm: "RSA".into(),
                issue: IssueOutcome::Ok,
                buy_date_ms: now,
                cert_start_ms: None,
                cert_end_ms: None,
                certificate_id: None,
                source_order_id: None,
                renewal: Some(Renewal {
                    csr,
                    polls: 0,
                    phase: Phase::Payed,
                    validated: false,
                    token: super::new_token(),
                    // This call is the application.
                    applied: true,
                }),
                issued: None,
                kind,
            },
        );
        *self.plans.create_calls.entry(domain).or_default() += 1;
        Ok(json!({ "OrderId": id }))
    }

    pub(super) fn describe_package_state(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let product_code = param(p, "ProductCode").unwrap_or("digicert-free-1-free");
        let (total, used) = self.plans.counts(product_code, self.now_ms());
        let issued = self
            .orders
            .values()
            .filter(|o| o.kind.product_code == product_code && o.issued.is_some())
            .filter(|o| o.renewal.is_some())
            .count();
        Ok(json!({
            "ProductCode": product_code,
            "TotalCount": total,
            "UsedCount": used,
            "IssuedCount": issued,
        }))
    }

    /// The renewal order an InstanceId names, while it is pending application.
    fn pending_by_instance(&mut self, p: &HashMap<String, String>) -> Result<i64, SimError> {
        let instance = required(p, "InstanceId")?;
        let id = self
            .orders
            .values()
            .filter(|_| self.plans.instance_ids)
            .find(|o| o.instance_id() == instance)
            .map(|o| o.order_id)
            // ASSUMPTION: the code is not documented.
            .ok_or_else(|| {
                SimError::new(
                    400,
                    "InvalidInstanceId.NotFound",
                    format!("The instance {instance} does not exist."),
                )
            })?;
        let pending = self.orders[&id]
            .renewal
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Payed && !r.applied);
        if !pending {
            // ASSUMPTION: the code is not documented.
            return Err(SimError::new(
                400,
                "InvalidStatus",
                format!("The instance {instance} is not pending application."),
            ));
        }
        Ok(id)
    }

    pub(super) fn update_instance(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let id = self.pending_by_instance(p)?;
        let method = param(p, "GenerateCsrMethod").unwrap_or("online");
        let csr = match (method, param(p, "Csr")) {
            ("upload", Some(c)) => {
                let cn = csr_common_name(c)?;
                if cn != self.orders[&id].domain {
                    return Err(SimError::invalid(
                        "Csr",
                        format!("the CN {cn:?} is not the instance's domain"),
                    ));
                }
                Some(c.to_owned())
            }
            ("upload", None) => return Err(SimError::missing("Csr")),
            ("online", _) => None,
            _ => return Err(SimError::invalid("GenerateCsrMethod", "online or upload")),
        };
        if let Some(v) = param(p, "ValidationMethod")
            && !matches!(v, "DNS" | "HTTP")
        {
            return Err(SimError::invalid("ValidationMethod", "DNS or HTTP"));
        }
        if let Some(r) = self.orders.get_mut(&id).and_then(|o| o.renewal.as_mut()) {
            r.csr = csr;
        }
        Ok(json!({}))
    }

    pub(super) fn apply_certificate(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let id = self.pending_by_instance(p)?;
        if let Some(r) = self.orders.get_mut(&id).and_then(|o| o.renewal.as_mut()) {
            r.applied = true;
        }
        *self.plans.applications.entry(id).or_default() += 1;
        Ok(json!({}))
    }
}
