//! Doctor's API checks: each permission cas-renewd needs, proven by one harmless
//! read-only call (with the RAM policy statement to add when it is denied), the
//! permissions that cannot be proven without spending, and the inventory: each
//! configured certificate matched to an order, with what the next pass would do.

use std::sync::Arc;

use serde_json::Value;

use super::Check;
use crate::cas::api::{Cas, CertificateOrder, OrderFilter, OrderType, param};
use crate::cas::client::{ApiClient, ApiError, ClientSettings, Idempotence, Recorder};
use crate::cas::credentials::CredentialsProvider;
use crate::domain::ControlsEscaped;
use crate::renew::{Engine, NoObserver, PassOptions};
use crate::settings::{Config, ValidationMethod};

/// The documented gateway codes of a RAM denial (reference/cas-api.md §4.2).
const DENIED: [&str; 3] = ["Forbidden.RAM", "NoPermission", "Forbidden"];
/// Gateway codes that mean the AccessKey itself is not accepted.
const AUTH_FAILED: [&str; 6] = [
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidTimeStamp.Expired",
    "IllegalTimestamp",
];
/// The paid or changing calls that no read-only call can prove.
const UNPROVABLE_CAS: [&str; 4] = [
    "RenewCertificateOrderForPackageRequest",
    "CreateCertificateForPackageRequest",
    "UpdateInstance",
    "ApplyCertificate",
];
const UNPROVABLE_DNS: [&str; 2] = ["AddDomainRecord", "DeleteDomainRecord"];

/// The first and last characters of an AccessKey id: enough to tell which key is
/// used, not the whole id.
pub(super) fn key_hint(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "****".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}...{tail}")
}

/// The RAM policy statement that allows `action` (`yundun-cert` for CAS,
/// `alidns` for DNS).
pub fn ram_statement(service: &str, action: &str) -> String {
    format!(r#"{{"Effect": "Allow", "Action": ["{service}:{action}"], "Resource": "*"}}"#)
}

/// What one permission call proved.
fn judge<T>(service: &str, action: &str, what: &str, r: &Result<T, ApiError>) -> Check {
    let name = format!("permission {service}:{action}");
    match r {
        Ok(_) => Check::ok(name, format!("allowed ({what})")),
        Err(e) => match e.code() {
            Some(code) if DENIED.contains(&code) => Check::fail(
                name,
                format!(
                    "denied ({code}): add to the RAM policy of this AccessKey's user or role: {}",
                    ram_statement(service, action)
                ),
            ),
            Some(code) if AUTH_FAILED.contains(&code) => Check::fail(
                name,
                format!(
                    "the request was not authenticated: {e}; check the AccessKey and the clock"
                ),
            ),
            // The gateway checks permissions before the operation runs: an answer
            // of the operation itself (an unknown order, say) means it was allowed.
            Some(code) => Check::ok(
                name,
                format!("allowed (the operation answered {code}, {what})"),
            ),
            None => Check::warn(name, format!("not proven: {e}")),
        },
    }
}

/// The clients doctor asks with: one attempt more at most, so a broken setup
/// answers quickly; every answer goes to `recorder` when there is one.
fn clients(
    cfg: &Config,
    creds: Arc<CredentialsProvider>,
    recorder: Option<Recorder>,
) -> Result<(Cas, ApiClient), ApiError> {
    let attempts = cfg.api.max_attempts.min(2);
    let limiter = Arc::new(cfg.api.limiter());
    let client = |endpoint: &reqwest::Url, version| {
        let c = ApiClient::new(
            ClientSettings {
                endpoint: endpoint.clone(),
                version,
                timeout: cfg.api.timeout,
                max_attempts: attempts,
            },
            creds.clone(),
            limiter.clone(),
        )?
        // Doctor reports every failure as a check; its probes are meant to fail.
        .with_failures_reported_by_caller();
        Ok::<_, ApiError>(match &recorder {
            Some(r) => c.with_recorder(r.clone()),
            None => c,
        })
    };
    let cas = Cas::new(client(&cfg.api.endpoint, crate::cas::api::CAS_VERSION)?);
    let dns = client(&cfg.api.dns_endpoint, crate::cas::dns::DNS_VERSION)?;
    Ok((cas, dns))
}

/// Every API check, in order.
pub(super) async fn checks(
    cfg: &Config,
    creds: Arc<CredentialsProvider>,
    recorder: Option<Recorder>,
    out: &mut Vec<Check>,
) {
    let (cas, dns) = match clients(cfg, creds.clone(), recorder) {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                "permissions",
                format!("cannot set up the API client: {e}"),
            ));
            return;
        }
    };
    let listed = cas
        .list_all_orders(OrderFilter::default(), cfg.api.page_size)
        .await;
    out.push(judge(
        "yundun-cert",
        "ListUserCertificateOrder",
        &match &listed {
            Ok(o) => format!("{} order(s)", o.len()),
            Err(_) => String::new(),
        },
        &listed,
    ));
    let orders = listed.unwrap_or_default();
    cas_reads(&cas, &orders, out).await;
    let uses_dns = cfg
        .certificates
        .iter()
        .any(|c| c.validation.method == ValidationMethod::Dns);
    if uses_dns {
        dns_reads(cfg, &dns, out).await;
    }
    let mut unprovable: Vec<String> = UNPROVABLE_CAS
        .iter()
        .map(|a| format!("yundun-cert:{a}"))
        .collect();
    if uses_dns {
        unprovable.extend(UNPROVABLE_DNS.iter().map(|a| format!("alidns:{a}")));
    }
    out.push(Check::warn(
        "permissions not proven",
        format!(
            "{}: these spend quota or change the account, so doctor does not call them; make sure the RAM policy allows them",
            unprovable.join(", ")
        ),
    ));
    inventory(cfg, creds, &orders, out);
}

/// DescribeCertificateState, GetUserCertificateDetail, ListInstances and
/// DescribePackageState, each on something the account has.
async fn cas_reads(cas: &Cas, orders: &[CertificateOrder], out: &mut Vec<Check>) {
    let svc = "yundun-cert";
    match orders.iter().find_map(|o| o.order_id) {
        Some(id) => {
            let r = cas.describe_certificate_state(id).await;
            out.push(judge(
                svc,
                "DescribeCertificateState",
                &format!("order {id}"),
                &r,
            ));
        }
        None => out.push(Check::warn(
            format!("permission {svc}:DescribeCertificateState"),
            "not proven: the account lists no order to ask about",
        )),
    }
    // Certificate ids come with the certificate listing (OrderType CERT).
    let certs = OrderFilter {
        order_type: Some(OrderType::Cert),
        ..OrderFilter::default()
    };
    let cert_id = match cas.list_orders_page(&certs, 1, 1).await {
        Ok(r) => r
            .body
            .certificate_order_list
            .iter()
            .find_map(|o| o.certificate_id),
        Err(_) => None,
    };
    if let Some(cert_id) = orders.iter().find_map(|o| o.certificate_id).or(cert_id) {
        // CertFilter: only the certificate's fields, never a private key.
        let r = cas.get_user_certificate_detail(cert_id, true).await;
        out.push(judge(
            svc,
            "GetUserCertificateDetail",
            &format!("certificate {cert_id}"),
            &r,
        ));
    }
    let r = cas
        .client()
        .call::<Value>(
            "ListInstances",
            &[param("CurrentPage", 1), param("ShowSize", 1)],
            Idempotence::Idempotent,
        )
        .await;
    out.push(judge(svc, "ListInstances", "one page", &r));
    let code = orders
        .iter()
        .filter_map(|o| o.product_code.as_deref())
        .find(|c| !c.is_empty())
        .unwrap_or("digicert-free-1-free");
    let r = cas.describe_package_state(code).await;
    let what = match &r {
        Ok(s) => format!(
            "plan {}: {} of {} used",
            ControlsEscaped(code),
            s.body.used_count.unwrap_or(0),
            s.body.total_count.unwrap_or(0)
        ),
        Err(_) => String::new(),
    };
    out.push(judge(svc, "DescribePackageState", &what, &r));
}

/// The zones named in DescribeDomains' answer.
fn zone_names(v: &Value) -> Vec<String> {
    v["Domains"]["Domain"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["DomainName"].as_str())
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// The longest zone that `domain` is in or under.
fn zone_of<'a>(domain: &str, zones: &'a [String]) -> Option<&'a String> {
    let d = domain.trim_start_matches("*.").to_ascii_lowercase();
    zones
        .iter()
        .filter(|z| d == **z || d.ends_with(&format!(".{z}")))
        .max_by_key(|z| z.len())
}

/// DescribeDomains, then DescribeDomainRecords on each zone a DNS-validated
/// certificate uses.
async fn dns_reads(cfg: &Config, dns: &ApiClient, out: &mut Vec<Check>) {
    let svc = "alidns";
    let r = dns
        .call::<Value>(
            "DescribeDomains",
            &[param("PageNumber", 1), param("PageSize", 100)],
            Idempotence::Idempotent,
        )
        .await;
    let zones = r.as_ref().map(|v| zone_names(&v.body)).unwrap_or_default();
    out.push(judge(
        svc,
        "DescribeDomains",
        &format!("{} zone(s)", zones.len()),
        &r,
    ));
    let mut asked: Vec<&String> = Vec::new();
    for c in &cfg.certificates {
        if c.validation.method != ValidationMethod::Dns {
            continue;
        }
        let Some(zone) = zone_of(&c.domain, &zones) else {
            if r.is_ok() {
                out.push(Check::fail(
                    format!("dns zone ({})", c.name),
                    format!(
                        "no zone of {} in this account's Alidns; add the zone to Alidns, or validate this certificate by file",
                        c.domain
                    ),
                ));
            }
            continue;
        };
        if asked.contains(&zone) {
            continue;
        }
        asked.push(zone);
        let r = dns
            .call::<Value>(
                "DescribeDomainRecords",
                &[param("DomainName", zone), param("PageSize", 1)],
                Idempotence::Idempotent,
            )
            .await;
        out.push(judge(
            svc,
            "DescribeDomainRecords",
            &format!("zone {zone}"),
            &r,
        ));
    }
}

/// Each configured certificate matched to an order, with the next pass's plan.
fn inventory(
    cfg: &Config,
    creds: Arc<CredentialsProvider>,
    orders: &[CertificateOrder],
    out: &mut Vec<Check>,
) {
    let engine = match Engine::with_observer(cfg.clone(), creds, Arc::new(NoObserver)) {
        Ok(e) => e,
        Err(e) => {
            out.push(Check::fail("inventory", e.to_string()));
            return;
        }
    };
    let plans = match engine.plans(orders, &PassOptions::default()) {
        Ok(p) => p,
        Err(e) => {
            out.push(Check::fail("inventory", e.to_string()));
            return;
        }
    };
    for (c, p) in &plans.certs {
        let name = format!("inventory ({})", c.name);
        let mine: Vec<&CertificateOrder> = orders.iter().filter(|o| o.is_for(&c.domain)).collect();
        let newest = mine
            .iter()
            .max_by_key(|o| (o.not_after_ms().unwrap_or(0), o.order_id.unwrap_or(0)));
        let next = format!("next pass: {}: {}", p.action, p.reason);
        out.push(match newest {
            None => Check::fail(
                name,
                format!(
                    "no order in the account for {}; buy or apply for one, or fix the domain ({next})",
                    c.domain
                ),
            ),
            Some(o) => {
                let found = format!(
                    "order {} ({}, {} order(s) for {})",
                    o.order_id.unwrap_or(0),
                    o.status.map_or("no status", |s| s.as_str()),
                    mine.len(),
                    c.domain
                );
                if p.action == crate::renew::plan::Action::Blocked {
                    Check::warn(name, format!("{found}; {next}"))
                } else {
                    Check::ok(name, format!("{found}; {next}"))
                }
            }
        });
    }
    for b in &plans.blocked {
        out.push(Check::warn(
            format!("inventory ({})", b.name),
            b.reason.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_matched_longest_first() {
        let zones = vec!["example.com".to_owned(), "sub.example.com".to_owned()];
        assert_eq!(
            zone_of("www.sub.example.com", &zones).map(String::as_str),
            Some("sub.example.com")
        );
        assert_eq!(
            zone_of("*.example.com", &zones).map(String::as_str),
            Some("example.com")
        );
        assert_eq!(zone_of("example.org", &zones), None);
        assert_eq!(zone_of("badexample.com", &zones), None);
    }

    #[test]
    fn key_hint_shows_little() {
        assert_eq!(key_hint("LTAI5tAbCdEfGhIj"), "LTAI...hIj");
        assert_eq!(key_hint("short"), "****");
    }
}
