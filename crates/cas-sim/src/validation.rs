//! The simulator's readings of what the CAS and Alidns documents leave open about
//! domain validation, each behind a scenario switch, and Alibaba's habit of
//! sending `""` for a value it does not have.

use serde::Deserialize;
use serde_json::Value;

/// The host record CAS asks for in DNS validation.
pub const DNS_RECORD_HOST: &str = "_dnsauth";

/// How DescribeCertificateState writes `RecordDomain`; CAS documents only the
/// example `_dnsauth` as the "host record" (`issuance.record_domain`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordDomainForm {
    /// Relative to the order's domain: `_dnsauth` for `www.example.com`.
    #[default]
    RelativeToDomain,
    /// Relative to the DNS zone, Alibaba's "host record" convention:
    /// `_dnsauth.www` for `www.example.com` in zone `example.com`.
    RelativeToZone,
    /// The full name: `_dnsauth.www.example.com`.
    Fqdn,
}

/// A hostile or broken DNS validation answer (`issuance.hostile_record`); the
/// order then never validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostileRecord {
    /// `RecordType: NS` at the usual name, pointing at `ns1.attacker.net`.
    Ns,
    /// `RecordDomain: _dnsauth.<domain>.attacker.net`.
    OutsideDomain,
    /// `RecordDomain: evil.com.` (a full name, trailing dot).
    Absolute,
}

/// How answers are written (`responses`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responses {
    /// Every optional field the simulator has no value for is sent as `""`
    /// (as in Alibaba's documented samples: `"Domain": ""`, `"PartnerOrderId": ""`)
    /// instead of being left out or `null`.
    #[serde(default)]
    pub empty_strings: bool,
}

/// A record the account's DNS holds from the start (`dns.records`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRecord {
    pub zone: String,
    pub rr: String,
    #[serde(rename = "type", default = "default_type")]
    pub rtype: String,
    pub value: String,
}

fn default_type() -> String {
    "TXT".into()
}

/// Alidns behaviour (`dns`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsBehaviour {
    #[serde(default)]
    pub records: Vec<SeedRecord>,
    /// The first this-many AddDomainRecord calls answer `LastOperationNotFinished`
    /// without acting (Alidns still applying an earlier change to the zone).
    #[serde(default)]
    pub busy: u32,
}

/// `RecordDomain` for an order on `domain` in the given form; `zones` are the
/// account's DNS zones (the longest one hosting the name is its zone, else the
/// last two labels).
pub fn record_domain(form: RecordDomainForm, domain: &str, zones: &[String]) -> String {
    let base = domain.trim_start_matches("*.");
    match form {
        RecordDomainForm::RelativeToDomain => DNS_RECORD_HOST.to_owned(),
        RecordDomainForm::Fqdn => format!("{DNS_RECORD_HOST}.{base}"),
        RecordDomainForm::RelativeToZone => {
            let zone = zone_hosting(base, zones);
            match base.strip_suffix(&format!(".{zone}")) {
                Some(host) => format!("{DNS_RECORD_HOST}.{host}"),
                None => DNS_RECORD_HOST.to_owned(),
            }
        }
    }
}

/// The zone a name belongs to: the longest hosted zone it ends with, else its
/// registrable domain (the last two labels), as Alidns splits without `DomainName`.
pub fn zone_hosting(name: &str, zones: &[String]) -> String {
    zones
        .iter()
        .filter(|z| name == z.as_str() || name.ends_with(&format!(".{z}")))
        .max_by_key(|z| z.len())
        .cloned()
        .unwrap_or_else(|| registrable(name))
}

/// The last two labels.
pub fn registrable(name: &str) -> String {
    let labels: Vec<&str> = name.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// Rewrites a DNS validation answer the hostile way.
pub fn make_hostile(kind: HostileRecord, domain: &str, out: &mut Value) {
    let base = domain.trim_start_matches("*.");
    match kind {
        HostileRecord::Ns => {
            out["RecordType"] = Value::from("NS");
            out["RecordValue"] = Value::from("ns1.attacker.net");
        }
        HostileRecord::OutsideDomain => {
            out["RecordDomain"] = Value::from(format!("{DNS_RECORD_HOST}.{base}.attacker.net"));
        }
        HostileRecord::Absolute => out["RecordDomain"] = Value::from("evil.com."),
    }
}

const ORDER_FIELDS: &[&str] = &[
    "Algorithm",
    "AliyunOrderId",
    "BuyDate",
    "CertEndTime",
    "CertStartTime",
    "CertType",
    "CertificateId",
    "City",
    "CommonName",
    "Country",
    "Domain",
    "DomainCount",
    "DomainType",
    "EndDate",
    "Expired",
    "Fingerprint",
    "InstanceId",
    "Issuer",
    "Name",
    "OrderId",
    "OrgName",
    "PartnerOrderId",
    "ProductCode",
    "ProductName",
    "Province",
    "ResourceGroupId",
    "RootBrand",
    "Sans",
    "SerialNo",
    "Sha2",
    "SourceType",
    "StartDate",
    "Status",
    "TrusteeStatus",
    "Upload",
    "WildDomainCount",
];

const STATE_FIELDS: &[&str] = &[
    "ValidateType",
    "RecordDomain",
    "RecordType",
    "RecordValue",
    "Domain",
    "Uri",
    "Content",
    "Certificate",
    "PrivateKey",
    "CertId",
];

const DETAIL_FIELDS: &[&str] = &[
    "Name",
    "Cert",
    "Key",
    "Common",
    "Sans",
    "StartDate",
    "EndDate",
    "NotBefore",
    "NotAfter",
    "Expired",
    "BuyInAliyun",
    "OrderId",
    "InstanceId",
    "CertIdentifier",
    "Fingerprint",
    "Sha2",
    "SerialNo",
    "Issuer",
    "Algorithm",
    "OrgName",
    "Country",
    "Province",
    "City",
    "ResourceGroupId",
];

/// Optional fields of a V2.0 instance (ListInstances entry, GetInstanceDetail).
const INSTANCE_FIELDS: &[&str] = &[
    "CertificateDomain",
    "CertificateId",
    "CertIdentifier",
    "CertificateName",
    "CertificateNotBefore",
    "CertificateNotAfter",
    "CertificateRevokeTime",
    "CertificateStatus",
    "PendingResult",
];

fn fill(obj: &mut Value, fields: &[&str]) {
    if let Some(map) = obj.as_object_mut() {
        for f in fields {
            let v = map.entry(*f).or_insert(Value::Null);
            if v.is_null() {
                *v = Value::from("");
            }
        }
    }
}

/// Sends `""` for every optional field of `action`'s answer that is absent or null.
pub fn fill_empty(action: &str, out: &mut Value) {
    match action {
        "ListUserCertificateOrder" => {
            if let Some(list) = out
                .get_mut("CertificateOrderList")
                .and_then(Value::as_array_mut)
            {
                list.iter_mut().for_each(|o| fill(o, ORDER_FIELDS));
            }
        }
        "DescribeCertificateState" => fill(out, STATE_FIELDS),
        "GetUserCertificateDetail" => fill(out, DETAIL_FIELDS),
        "ListInstances" => {
            if let Some(list) = out.get_mut("InstanceList").and_then(Value::as_array_mut) {
                list.iter_mut().for_each(|i| fill(i, INSTANCE_FIELDS));
            }
        }
        "GetInstanceDetail" => {
            fill(out, INSTANCE_FIELDS);
            fill(out, &["Csr"]);
        }
        "GetTaskAttribute" => fill(out, &["TaskMessage"]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_domain_forms() {
        let zones = vec!["example.com".to_owned(), "sub.example.com".to_owned()];
        for (form, domain, want) in [
            (
                RecordDomainForm::RelativeToDomain,
                "www.example.com",
                "_dnsauth",
            ),
            (
                RecordDomainForm::RelativeToZone,
                "www.example.com",
                "_dnsauth.www",
            ),
            (RecordDomainForm::RelativeToZone, "example.com", "_dnsauth"),
            (
                RecordDomainForm::RelativeToZone,
                "*.example.com",
                "_dnsauth",
            ),
            (
                RecordDomainForm::RelativeToZone,
                "a.sub.example.com",
                "_dnsauth.a",
            ),
            (
                RecordDomainForm::Fqdn,
                "*.example.com",
                "_dnsauth.example.com",
            ),
        ] {
            assert_eq!(
                record_domain(form, domain, &zones),
                want,
                "{form:?} {domain}"
            );
        }
    }

    #[test]
    fn empty_strings_fill_only_missing_fields() {
        let mut v =
            serde_json::json!({ "Type": "certificate", "Certificate": "PEM", "CertId": null });
        fill_empty("DescribeCertificateState", &mut v);
        assert_eq!(v["PrivateKey"], "");
        assert_eq!(v["CertId"], "");
        assert_eq!(v["Certificate"], "PEM");
    }
}
