//! V2.0 instances as ListUserCertificateOrder shows them under the reading
//! `v2.listed_in_orders: true` (protocol review, open question 5: whether V2.0
//! certificates appear in the V1 listing is not documented), and the refusal of
//! V1 order calls on such an entry's OrderId, counted per instance.
//!
//! The entry looks like a renewable paid order on purpose: a V1 path that took it
//! for one would call RenewCertificateOrderForPackageRequest, which the announcement
//! of the V2.0 API says is not supported for these certificates.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::instances::Instance;
use super::{SimError, World, int_param, ms_to_date};

/// V1 actions that take an `OrderId`.
const V1_ORDER_ACTIONS: [&str; 2] = [
    "RenewCertificateOrderForPackageRequest",
    "DescribeCertificateState",
];

/// How the V1 listing would call the instance's state.
fn v1_status(i: &Instance, now: i64) -> Option<&'static str> {
    match i.status(now) {
        "refund" | "closed" => None,
        "inactive" => Some("PAYED"),
        "pending" => Some("CHECKING"),
        _ => Some(match i.certificate_status(now) {
            Some("willExpire") => "WILLEXPIRED",
            Some("issued") => "ISSUED",
            _ => "EXPIRED",
        }),
    }
}

impl World {
    /// The listed instances that pass the list's filters, in the V1 entry shape
    /// (`certs`: the certificate lists, CERT and UPLOAD).
    pub(super) fn instances_as_orders(
        &self,
        order_type: &str,
        status: Option<&str>,
        keyword: Option<&str>,
        now: i64,
    ) -> Vec<Value> {
        if !self.instances.forms.listed_in_orders || order_type == "UPLOAD" {
            return Vec::new();
        }
        let certs = order_type == "CERT";
        self.instances
            .map
            .values()
            .filter_map(|i| Some((i, v1_status(i, now)?)))
            .filter(|(i, st)| {
                let status_ok = match status {
                    Some(s) => s == *st,
                    None => !certs || matches!(*st, "ISSUED" | "WILLEXPIRED"),
                };
                status_ok
                    && (!certs || i.latest().is_some())
                    && keyword.is_none_or(|k| {
                        i.domain.contains(k)
                            || i.id.contains(k)
                            || i.listed_order_id.to_string() == k
                    })
            })
            .map(|(i, st)| listed_json(i, st, certs, now))
            .collect()
    }

    /// A V1 order call on an instance's listed OrderId: refused (V1.0 order
    /// operations are not supported for V2.0 certificates) and counted.
    pub(super) fn refuse_v1_on_instance(
        &mut self,
        action: &str,
        p: &HashMap<String, String>,
    ) -> Option<SimError> {
        if !self.instances.forms.listed_in_orders || !V1_ORDER_ACTIONS.contains(&action) {
            return None;
        }
        let order_id = int_param(p, "OrderId").ok().flatten()?;
        let id = self
            .instances
            .map
            .values()
            .find(|i| i.listed_order_id == order_id)?
            .id
            .clone();
        *self.instances.v1_order_calls.entry(id.clone()).or_default() += 1;
        // ASSUMED (**code invented**): the refusal is documented, its code is not.
        Some(SimError::new(
            400,
            "OperationDenied.V2Instance",
            format!(
                "Order {order_id} belongs to the SSL Certificate Management V2.0 instance {id}; V1.0 order operations are not supported for it."
            ),
        ))
    }
}

fn listed_json(i: &Instance, status: &str, certs: bool, now: i64) -> Value {
    let c = i.latest();
    let end = c.map(|c| c.end_ms);
    let wildcard = i.domain.starts_with("*.");
    if certs {
        return json!({
            "CertificateId": c.map(|c| c.cert_id),
            "InstanceId": i.id,
            "Name": c.map(|c| format!("cert-{}", c.cert_id)),
            "CommonName": i.domain,
            "Sans": i.domain,
            "StartDate": c.map(|c| ms_to_date(c.start_ms)),
            "EndDate": end.map(ms_to_date),
            "Expired": end.is_some_and(|e| e <= now),
            "Upload": false,
            "Issuer": "cas-renewd simulator intermediate CA",
            "Status": status,
        });
    }
    json!({
        "OrderId": i.listed_order_id,
        "InstanceId": i.id,
        "CertificateId": c.map(|c| c.cert_id),
        "Status": status,
        "ProductCode": if wildcard { "digicert-dv-w-starter" } else { "digicert-dv-1-starter" },
        "ProductName": "SSL Certificate Management V2.0 (simulated)",
        "Algorithm": i.ca_algorithm(),
        "CertType": "DV",
        "Domain": i.domain,
        "CommonName": i.domain,
        "DomainCount": 1,
        "WildDomainCount": i64::from(wildcard),
        "DomainType": if wildcard { "WILDCARD" } else { "ONE" },
        "RootBrand": "DigiCert",
        "SourceType": "buy",
        "TrusteeStatus": "unTrustee",
        "BuyDate": i.start_ms,
        "CertStartTime": c.map(|c| c.start_ms),
        "CertEndTime": end,
    })
}
