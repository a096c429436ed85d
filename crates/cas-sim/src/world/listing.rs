//! ListUserCertificateOrder (orders and certificates, filtered and paged) and
//! GetUserCertificateDetail.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{DAY_MS, Order, SimError, World, bool_param, int_param, ms_to_date, param};

impl World {
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

    pub(super) fn list_orders(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let (page, size) = self.list_page(p)?;
        let order_type = param(p, "OrderType").unwrap_or("CPACK");
        let certs = lists_certificates(order_type)?;
        let status = status_filter(p)?;
        let keyword = param(p, "Keyword").map(str::to_ascii_lowercase);
        let now = self.now_ms();
        // Every simulated order comes from a resource plan; BUY and UPLOAD lists are empty.
        let source_matches = matches!(order_type, "CPACK" | "CERT");
        let matching: Vec<&Order> = self
            .orders
            .values()
            .filter(|_| source_matches)
            .filter(|o| is_listed(o, certs, status, keyword.as_deref(), now))
            .collect();
        // Instances listed here too (`v2.listed_in_orders`) come after the orders.
        let listed = self.instances_as_orders(order_type, status, keyword.as_deref(), now);
        let total = matching.len() + listed.len();
        let from = usize::try_from((page - 1) * size).unwrap_or(usize::MAX);
        let to = from
            .saturating_add(usize::try_from(size).unwrap_or(0))
            .min(total);
        let items: Vec<Value> = (from.min(to)..to)
            .map(|k| match matching.get(k) {
                Some(o) if certs => self.cert_json(o, now),
                Some(o) => self.order_json(o, now),
                None => listed[k - matching.len()].clone(),
            })
            .collect();
        Ok(json!({
            "TotalCount": total,
            "ShowSize": size,
            "CurrentPage": page,
            "CertificateOrderList": items,
        }))
    }

    /// The page asked for: CurrentPage and ShowSize, checked.
    fn list_page(&self, p: &HashMap<String, String>) -> Result<(i64, i64), SimError> {
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
        Ok((page, size))
    }

    pub(super) fn detail(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let cert_id = int_param(p, "CertId")?.ok_or_else(|| SimError::missing("CertId"))?;
        let filter = bool_param(p, "CertFilter")?;
        if let Some(answer) = self.instance_cert_detail(cert_id, filter) {
            return answer;
        }
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
}

/// Whether an OrderType lists certificates (CERT, UPLOAD) rather than orders.
fn lists_certificates(order_type: &str) -> Result<bool, SimError> {
    match order_type {
        "CPACK" | "BUY" => Ok(false),
        "CERT" | "UPLOAD" => Ok(true),
        other => Err(SimError::invalid(
            "OrderType",
            format!("unknown type {other:?}"),
        )),
    }
}

/// The Status filter, if any, checked against the statuses CAS knows.
fn status_filter(p: &HashMap<String, String>) -> Result<Option<&str>, SimError> {
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
    Ok(status)
}

/// Whether an order passes the list's filters: certificates need one, Status
/// (certificates default to the valid ones, orders to all), Keyword.
fn is_listed(
    o: &Order,
    certs: bool,
    status: Option<&str>,
    keyword: Option<&str>,
    now: i64,
) -> bool {
    if certs && !(o.certificate_id.is_some() && o.cert_end_ms.is_some()) {
        return false;
    }
    let st = o.status(now);
    let status_ok = match status {
        Some(s) => st == s,
        None => !certs || matches!(st, "ISSUED" | "WILLEXPIRED"),
    };
    status_ok
        && keyword.is_none_or(|k| {
            o.names().iter().any(|n| n.contains(k))
                || o.instance_id().contains(k)
                || o.order_id.to_string() == k
        })
}
